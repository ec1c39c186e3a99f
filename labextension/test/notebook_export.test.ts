import { describe, expect, it } from 'vitest';

import { ExportCell, PLAYER_TAG, notebookHtml, scriptJson } from '../src/exporting';

const PLAYER = '<script data-xattr-player="1">if(!window.xattrLabPlayer){window.xattrLabPlayer={version:1}}</script>';
const payload = {
  schema: 'xattr.v1', kind: 'attribution', model_id: 'm1',
  tokens: ['</script><script>alert(1)</script>', '$$\\href{javascript:alert(1)}{x}$$'], scores: [1, -1]
};
const item = `<div class="xattr-lab-player"><script type="application/json" class="xattr-lab-payload">${scriptJson(payload)}</script></div>${PLAYER}<script>mount()</script>`;

function markdown(html: string): Node {
  const div = document.createElement('div');
  div.innerHTML = html;
  return div;
}

function cells(trusted: boolean): ExportCell[] {
  const bundle = { 'application/vnd.xattr.v1+json': payload, 'text/html': item, 'text/plain': 'Attribution(...)' };
  return [
    { type: 'markdown', source: '# t', rendered: markdown('<h1>T</h1><a href=" java\tscript:alert(3)">x</a><img src=x onerror="alert(4)">') },
    {
      type: 'code', source: 'x = "<b>"',
      outputs: [
        { data: bundle, trusted }, { data: bundle, trusted },
        { data: { 'text/html': '<script>alert(5)</script>', 'text/plain': '<evil>' }, trusted: true },
        { data: {}, trusted: true, text: 'stream <text>' }
      ]
    }
  ];
}

describe('notebookHtml', () => {
  it('inlines the player once and writes each xattr output as an inert payload block', () => {
    const html = notebookHtml(cells(true), { title: 'nb' });
    expect(html.match(/data-xattr-player=/g)!.length).toBe(1);
    expect(html.match(/class="xattr-lab-payload"/g)!.length).toBe(2);
    expect(html).not.toContain('"model_id"');
    const block = /class="xattr-lab-payload">([^<]*)<\/script>/.exec(html)![1];
    expect(JSON.parse(block).tokens).toEqual(payload.tokens);
    for (const bad of ['alert(1)</script>', 'alert(5)', 'alert(3)', 'onerror', '<evil>', '<b>']) {
      expect(html).not.toContain(bad);
    }
    expect(html).toContain('stream &lt;text&gt;');
    expect(PLAYER_TAG.test(html)).toBe(true);
  });

  it('draws statically (and says so) when no trusted output carries the player', () => {
    const html = notebookHtml(cells(false));
    expect(html).not.toContain('data-xattr-player');
    expect(html).toContain('Static drawing');
    expect(html.match(/class="xattr-lab-token/g)!.length).toBe(4);
    expect(html).not.toContain('alert(1)</script>');
  });
});
