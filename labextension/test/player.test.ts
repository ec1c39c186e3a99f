import { describe, expect, it } from 'vitest';

import { PAYLOAD_SELECTOR, PLAYER_VERSION, install, mountAll } from '../src/player';

/** The markup the Python side writes (widgets/player.py): payload block + fallback. */
function item(json: string): HTMLElement {
  const box = document.createElement('div');
  box.className = 'xattr-lab-player';
  box.innerHTML = `<script type="application/json" class="xattr-lab-payload"></script><pre class="xattr-lab-fallback">fallback</pre>`;
  box.querySelector('script')!.textContent = json;
  document.body.appendChild(box);
  return box;
}

const attribution = (tokens: string[]) =>
  JSON.stringify({ schema: 'xattr.v1', kind: 'attribution', tokens, scores: tokens.map((_, i) => i - 1) });

describe('player', () => {
  it('draws each payload block once, replacing the fallback', () => {
    document.body.replaceChildren();
    const box = item(attribution(['a', 'b', 'c']));
    expect(mountAll(document)).toBe(1);
    expect(mountAll(document)).toBe(0);
    expect(box.querySelectorAll('.xattr-lab-token').length).toBe(3);
    expect(box.querySelector('.xattr-lab-fallback')).toBeNull();
    expect(box.querySelector('.xattr-lab-player-view')!.classList.contains('tex2jax_ignore')).toBe(true);
    expect(document.querySelectorAll('style#xattr-lab-player-style').length).toBe(1);
  });

  it('keeps hostile tokens as text and answers clicks from the data', () => {
    document.body.replaceChildren();
    const hostile = ['<img src=x onerror=alert(1)>', '$$\\href{javascript:alert(1)}{x}$$', '</script><script>alert(2)</script>'];
    const box = item(attribution(hostile));
    mountAll(document);
    expect(box.querySelector('img')).toBeNull();
    expect(box.querySelector('a')).toBeNull();
    expect(box.querySelectorAll('script').length).toBe(1); // only the payload block
    const tokens = box.querySelectorAll<HTMLElement>('.xattr-lab-token');
    expect(Array.from(tokens, t => t.textContent)).toEqual(hostile);
    tokens[1].click();
    expect(box.querySelector('.xattr-lab-readout')!.textContent).toContain('selected #1');
  });

  it('shows a message for damaged or wrong data', () => {
    document.body.replaceChildren();
    const damaged = item('{"schema": "xattr.v1", "kind": ');
    const wrong = item(JSON.stringify({ schema: 'xattr.v1', kind: 'nope' }));
    expect(mountAll(document)).toBe(2);
    expect(damaged.querySelector('.xattr-lab-message')!.textContent).toContain('not JSON');
    expect(wrong.querySelector('.xattr-lab-message')).not.toBeNull();
  });

  it('installs one global per page; a newer version replaces an older one', () => {
    const scope: { xattrLabPlayer?: any } = {};
    const first = install(scope);
    expect(install(scope)).toBe(first);
    expect(first.version).toBe(PLAYER_VERSION);
    const old = { version: 0, mountAll: () => 0, mount: () => null };
    scope.xattrLabPlayer = old;
    expect(install(scope)).not.toBe(old);
    expect(PAYLOAD_SELECTOR).toContain('application/json');
  });
});
