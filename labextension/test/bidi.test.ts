/**
 * Issue 27, item 2: right-to-left tokens are drawn honestly. Every token element is isolated
 * (unicode-bidi: isolate, dir="auto", or a <bdi>), and bidi marks, embeddings, overrides and isolates
 * show as visible escapes ("⟨RLM⟩"), the same ones the Python views show (kernel_ext/data/bidi-escapes.json,
 * fixtures/bidi-labels.json written by tests/widgets/test_payload.py).
 */
import { readFileSync } from 'fs';
import { resolve } from 'path';
import { describe, expect, it } from 'vitest';

import { BIDI_ESCAPES, isolatedText, visibleControls } from '../src/bidi';
import { resultHtml } from '../src/exporting';
import { renderResult, tokenLabel } from '../src/render';

const TABLE = JSON.parse(readFileSync(resolve(__dirname, '../../kernel_ext/data/bidi-escapes.json'), 'utf8'));
const CROSS = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/bidi-labels.json'), 'utf8'));
const FIXTURES = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/payloads.json'), 'utf8'));

const HEBREW = '\u200f\u05de\u05e6\u05d5\u05d9\u05df'; // RLM + "excellent"
const ARABIC = '\u061c\u0631\u0627\u0626\u0639\u0627'; // ALM + "wonderful"
const HOSTILE = '\u202eevil\u202c'; // an override that would reverse what follows
const TOKENS = ['[CLS]', HEBREW, 'film', ARABIC, HOSTILE, '\u05d4\u05e1\u05e8\u05d8', '[SEP]'];
/** Every bidi control except the FSI ... PDI pairs the renderer puts around tokens in tooltips. */
const RAW = /[\u061c\u200e\u200f\u202a-\u202e\u2066\u2067]/;

function attribution(tokens = TOKENS) {
  return {
    schema: 'xattr.v1', kind: 'attribution', tokens, scores: tokens.map((_, i) => (i % 3) - 1), raw: null,
    method: 'ig', target_label: HOSTILE, prediction: { [HEBREW]: 0.6, [HOSTILE]: 0.4 }, model: 'm', options: {}
  };
}

function flow(tokens = TOKENS) {
  const n = tokens.length;
  const layer = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i + j) % 3 / 10));
  return { ...FIXTURES.v1.flow, tokens, attributions: tokens.map(() => 0.1), edge_flow: [layer, layer], node_flow: null };
}

function heads(tokens = TOKENS) {
  const n = tokens.length;
  const map = Array.from({ length: n }, (_, q) => Array.from({ length: n }, (_, k) => (q === k ? 0.5 : 0.5 / (n - 1))));
  return { ...FIXTURES.v1.heads, tokens, attentions: [[map, map], [map, map]] };
}

function mount(node: HTMLElement): HTMLElement {
  document.body.replaceChildren(node);
  return node;
}

/** The element is isolated: a <bdi>, or unicode-bidi: isolate (inline style, as the views set it). */
function isolated(node: Element): boolean {
  return node.localName === 'bdi' || (node as HTMLElement).style.getPropertyValue('unicode-bidi') === 'isolate';
}

describe('the escape table', () => {
  it('mirrors kernel_ext/data/bidi-escapes.json', () => {
    expect(BIDI_ESCAPES.map(([code, label]) => [`U+${code.toString(16).toUpperCase().padStart(4, '0')}`, label]))
      .toEqual(TABLE.escapes.map((row: { code: string; label: string }) => [row.code, row.label]));
  });

  it('gives what the Python labels give (fixtures/bidi-labels.json)', () => {
    expect(CROSS.cases.length).toBeGreaterThan(10);
    for (const { token, visible, label } of CROSS.cases) {
      expect(visibleControls(token)).toBe(visible);
      // the TS label keeps a word-start space where Python drops it; the escapes are the same
      expect(tokenLabel(token).trimStart()).toBe(label.trimStart().replace(/^##/, ''));
    }
  });

  it('isolates plain text in FSI ... PDI with the controls inside made visible', () => {
    expect(isolatedText(HOSTILE)).toBe('\u2068\u27e8RLO\u27e9evil\u27e8PDF\u27e9\u2069');
    expect(isolatedText('\u2068a\u2069')).toBe('\u2068\u27e8FSI\u27e9a\u27e8PDI\u27e9\u2069');
  });
});

describe('right-to-left tokens in every view', () => {
  it('the token strip: each token isolated, its marks visible, the header too', () => {
    const view = mount(renderResult(attribution()));
    const spans = [...view.querySelectorAll<HTMLElement>('.xattr-lab-token')];
    expect(spans.map(s => s.textContent)).toEqual(['[CLS]', '\u27e8RLM\u27e9\u05de\u05e6\u05d5\u05d9\u05df', 'film',
      '\u27e8ALM\u27e9\u0631\u0627\u0626\u0639\u0627', '\u27e8RLO\u27e9evil\u27e8PDF\u27e9', '\u05d4\u05e1\u05e8\u05d8', '[SEP]']);
    for (const span of spans) {
      expect(isolated(span)).toBe(true);
      expect(span.getAttribute('dir')).toBe('auto');
    }
    expect(spans[4].title).toBe('\u2068\u27e8RLO\u27e9evil\u27e8PDF\u27e9\u2069  score +0.0000  raw +0.0000');
    const meta = view.querySelector('.xattr-lab-meta')!;
    expect(meta.textContent).toBe('model m \u00b7 method ig \u00b7 target \u27e8RLO\u27e9evil\u27e8PDF\u27e9');
    expect([...meta.querySelectorAll('bdi')].map(b => b.textContent)).toEqual(['m', 'ig', '\u27e8RLO\u27e9evil\u27e8PDF\u27e9']);
    expect(view.querySelectorAll('.xattr-lab-prediction bdi').length).toBe(2);
    spans[4].dispatchEvent(new MouseEvent('mouseenter'));
    const readout = view.querySelector('.xattr-lab-readout')!;
    expect(readout.textContent).toBe('#4 \u27e8RLO\u27e9evil\u27e8PDF\u27e9  score +0.0000  raw +0.0000');
    expect(isolated(readout.querySelector('bdi')!)).toBe(true);
    expect(RAW.test(view.textContent!)).toBe(false);
  });

  it('the flow graph and the attention matrix: labels isolated, no raw control anywhere', () => {
    for (const view of [mount(renderResult(heads())), mount(renderResult(flow()))]) {
      view.querySelector<HTMLElement>('td.xattr-lab-cell')?.click(); // a head: its matrix with token labels
      view.querySelector<SVGElement>('circle[data-layer="2"][data-index="4"]')?.dispatchEvent(new MouseEvent('click'));
      const labels = [...view.querySelectorAll('text.xattr-lab-node-label, text.xattr-lab-matrix-label')];
      expect(labels.length).toBeGreaterThanOrEqual(2 * TOKENS.length);
      labels.forEach(label => expect(isolated(label)).toBe(true));
      expect(labels.map(l => l.firstChild!.textContent)).toContain('\u27e8RLO\u27e9evil\u27e8PDF\u27e9');
      expect(RAW.test(view.textContent!)).toBe(false);
      // our own isolates in tooltips come in pairs
      expect((view.textContent!.match(/\u2068/g) ?? []).length).toBe((view.textContent!.match(/\u2069/g) ?? []).length);
    }
    const readout = document.querySelector('.xattr-lab-readout')!;
    expect(readout.textContent).toContain('token #4 \u27e8RLO\u27e9evil\u27e8PDF\u27e9: throughput');
  });

  it('v2 payloads and a saved Explorer the same way', () => {
    const p = structuredClone(FIXTURES.v2.explorer);
    p.text = `a ${HOSTILE} ${HEBREW}`;
    p.views.strip.tokens = p.views.strip.tokens.map((t: string, i: number) => (i === 2 ? HOSTILE : t));
    const view = mount(renderResult(p));
    const text = view.querySelector<HTMLElement>('.xattr-lab-explorer-text')!;
    expect(text.textContent).toBe('a \u27e8RLO\u27e9evil\u27e8PDF\u27e9 \u27e8RLM\u27e9\u05de\u05e6\u05d5\u05d9\u05df');
    expect(isolated(text) && text.getAttribute('dir') === 'auto').toBe(true);
    const strip = view.querySelectorAll<HTMLElement>('.xattr-lab-attribution .xattr-lab-token');
    expect(strip[2].textContent).toBe('\u27e8RLO\u27e9evil\u27e8PDF\u27e9');
    expect(isolated(strip[2])).toBe(true);
  });

  it('the HTML export keeps the isolation and the escapes', () => {
    const html = resultHtml(attribution());
    const parsed = new DOMParser().parseFromString(html, 'text/html');
    const spans = [...parsed.querySelectorAll<HTMLElement>('.xattr-lab-token')];
    expect(spans.length).toBe(TOKENS.length);
    spans.forEach(span => expect(isolated(span) && span.getAttribute('dir') === 'auto').toBe(true));
    expect(spans[4].textContent).toBe('\u27e8RLO\u27e9evil\u27e8PDF\u27e9');
    expect(RAW.test(parsed.body.textContent!)).toBe(false);
  });
});
