/**
 * Fuzzing the renderer (fast-check): malformed and hostile payloads, v1 and v2, must draw a view or
 * a message, never throw, never create script-capable markup, and stay bounded in size and time.
 */
import fc from 'fast-check';
import { readFileSync } from 'fs';
import { resolve } from 'path';
import { describe, expect, it } from 'vitest';

import { visibleControls } from '../src/bidi';
import { renderResult } from '../src/render';

const FIXTURES = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/payloads.json'), 'utf8'));
const KINDS = ['attribution', 'flow', 'heads', 'circuit'];
const XSS = [
  '<img src=x onerror=alert(1)>', '$$\\href{javascript:alert(1)}{x}$$', '</script><script>alert(2)</script>',
  'javascript:alert(3)', '"><svg onload=alert(4)>', '<a href="javascript:alert(5)">x</a>', '\u2028\u2029\u0000',
  '{{constructor.constructor("alert(6)")()}}', '__proto__', 'constructor'
];
/** Yield to the event loop between runs (the test worker keeps talking to vitest meanwhile). */
const tick = () => new Promise(resolve => setTimeout(resolve, 0));

/** Most elements one view may build (every cap in src/model.ts LIMITS together, with margin). */
const MAX_ELEMENTS = 60_000;

function assertSafe(view: HTMLElement): void {
  expect(view).toBeInstanceOf(HTMLElement);
  document.body.replaceChildren(view);
  // click whatever can be clicked, as a user would
  view.querySelectorAll<HTMLElement>('td.xattr-lab-cell, .xattr-lab-token').forEach((c, i) => i < 40 && c.click());
  view.querySelectorAll<SVGElement>('circle.xattr-lab-node').forEach((n, i) => i < 40 && n.dispatchEvent(new MouseEvent('click')));
  const all = [...document.querySelectorAll('*')];
  expect(all.length).toBeLessThanOrEqual(MAX_ELEMENTS);
  expect(document.querySelectorAll('script, img, iframe, object, embed, a, foreignObject, use, style, link').length).toBe(0);
  for (const node of all) {
    for (const a of node.attributes) {
      expect(a.name.startsWith('on')).toBe(false);
      expect(['href', 'src', 'xlink:href', 'action', 'formaction', 'srcdoc'].includes(a.name)).toBe(false);
    }
  }
}

/** A valid payload with one field replaced by an arbitrary value (or the payload itself arbitrary). */
const mutated = fc.tuple(
  fc.constantFrom('v1', 'v2'), fc.constantFrom(...KINDS, 'explorer'), fc.anything({ maxDepth: 4, withNullPrototype: true }), fc.nat()
).map(([version, kind, value, pick]) => {
  const base = structuredClone(FIXTURES[version][kind] ?? FIXTURES.v2.explorer);
  const keys = Object.keys(base);
  base[keys[pick % keys.length]] = value;
  return base;
});

const hostileStrings = fc.array(fc.oneof(fc.constantFrom(...XSS), fc.string(), fc.string({ unit: 'grapheme', maxLength: 30 })), { maxLength: 60 });

describe('fuzzed payloads', () => {
  it('any JSON value draws a view or a message', async () => {
    await fc.assert(fc.asyncProperty(fc.anything({ maxDepth: 5 }), async value => {
      await tick();
      assertSafe(renderResult(value));
    }), { numRuns: 60 });
  }, 120_000);

  it('valid payloads with one field replaced stay safe', async () => {
    await fc.assert(fc.asyncProperty(mutated, async payload => {
      await tick();
      assertSafe(renderResult(payload));
    }), { numRuns: 100 });
  }, 120_000);

  it('hostile tokens and labels stay text, in every kind and version', async () => {
    await fc.assert(fc.asyncProperty(hostileStrings, fc.constantFrom(...KINDS), fc.constantFrom('v1', 'v2'), async (tokens, kind, version) => {
      await tick();
      const p = structuredClone(FIXTURES[version][kind]);
      if (p.tokens) {
        p.tokens = p.tokens.map((t: string, i: number) => tokens[i] ?? t); // same length: still valid
      }
      p.model = tokens[0] ?? XSS[0];
      p.target_label = tokens[1] ?? XSS[1];
      p.prediction = Object.fromEntries(tokens.slice(0, 5).map((t, i) => [t, i / 10]));
      p.metrics = Object.fromEntries(tokens.slice(0, 5).map(t => [t, t]));
      const view = renderResult(p);
      assertSafe(view);
      expect(view.classList.contains('xattr-lab-message')).toBe(false);
      for (const t of p.tokens ?? []) {
        expect(view.textContent!.includes(visibleControls(t.replace(/^\u0120/, ' ')).slice(0, 5)) || t.length === 0 || /[\u0120\u2581#\u010a]/.test(t)).toBe(true);
      }
    }), { numRuns: 60 });
  }, 120_000);
});

describe('hostile shapes', () => {
  /** The view and the CPU milliseconds it took to build (CPU time: the test machine may be shared). */
  const timed = (payload: unknown) => {
    const started = process.cpuUsage();
    const view = renderResult(payload);
    const used = process.cpuUsage(started);
    assertSafe(view);
    return { view, ms: (used.user + used.system) / 1000 };
  };

  it('a 10^6-edge v1 flow draws capped, within a second', () => {
    const n = 1000;
    const row = Array.from({ length: n }, (_, j) => ((j * 7919) % 1000) / 1000);
    const p = { ...FIXTURES.v1.flow, tokens: Array.from({ length: n }, (_, i) => `t${i}`), attributions: row, node_flow: null,
      edge_flow: [Array.from({ length: n }, () => row)] };
    const { view, ms } = timed(p);
    const drawn = view.querySelectorAll('line.xattr-lab-edge').length;
    expect(drawn).toBeGreaterThan(0);
    expect(drawn).toBeLessThanOrEqual(800);
    expect(view.querySelector('.xattr-lab-hidden')!.textContent).toMatch(/^[\d,]+ weaker edges, 744 tokens with the least flow/);
    expect(ms).toBeLessThan(1000);
  }, 60_000);

  it('a 10^6-edge v2 flow draws capped, within a second', () => {
    const m = 1_000_000;
    const n = 1000;
    const pack = (dtype: string, values: ArrayLike<number>, Type: Uint16ArrayConstructor | Float32ArrayConstructor) => ({
      dtype, shape: [values.length], scale: 1, precision: { abs: 0, rel: 0 },
      data: Buffer.from(new Type(Array.from(values)).buffer).toString('base64')
    });
    const index = Array.from({ length: m }, (_, i) => i % n);
    const p = {
      ...FIXTURES.v2.flow, tokens: Array.from({ length: n }, (_, i) => `t${i}`), n_layers: 1, node_flow: null,
      attributions: pack('float32', new Float32Array(n).fill(0.1), Float32Array),
      edges: { layer: pack('uint16', new Uint16Array(m).fill(1), Uint16Array), from: pack('uint16', index, Uint16Array),
        to: pack('uint16', index.map(i => (i * 31) % n), Uint16Array), flow: pack('float32', Float32Array.from(index, i => 1 + i), Float32Array),
        total: m, hidden: 0 }
    };
    const { view, ms } = timed(p);
    expect(view.querySelectorAll('line.xattr-lab-edge').length).toBeLessThanOrEqual(800);
    expect(ms).toBeLessThan(1000);
  }, 60_000);

  it('a 10^8-element payload is refused with a message, at once', () => {
    const row = new Array(10_000).fill(0.5);
    // 10,000 tokens: (1, 1, 10^4, 10^4) is the right shape, so only the scan cap can refuse it
    const v1 = { ...FIXTURES.v1.heads, tokens: new Array(10_000).fill('x'), attentions: [[Array.from({ length: 10_000 }, () => row)]] };
    const v2 = structuredClone(FIXTURES.v2.heads);
    v2.entropy = { ...v2.entropy, shape: [10_000, 10_000] };
    for (const p of [v1, v2]) {
      const { view, ms } = timed(p);
      expect(view.classList.contains('xattr-lab-message')).toBe(true);
      expect(view.textContent).toMatch(/too (large|many)/);
      expect(ms).toBeLessThan(1000);
    }
  }, 60_000);

  it('the 1.8 KB payload that built 42,000 elements now builds a capped view', () => {
    const n = 3000;
    const p = { schema: 'xattr.v1', kind: 'heads', tokens: new Array(n).fill('x'), cone_index: [],
      entropy: Array.from({ length: 200 }, () => new Array(200).fill(1)) };
    const { view } = timed(p);
    expect(view.querySelectorAll('td.xattr-lab-cell').length).toBe(96 * 64);
    expect(view.textContent).toContain('104 more layers and 136 more heads hidden');
  }, 60_000);

  it('wrong shapes and deep nesting give a message or a view, never an exception', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) {
      deep = [deep];
    }
    const cases = [
      { ...FIXTURES.v1.flow, edge_flow: [[['a', null, NaN]], 5, { x: 1 }] },
      { ...FIXTURES.v1.flow, tokens: [1, 2, 3] },
      { ...FIXTURES.v1.heads, attentions: deep, options: deep, metrics: { a: deep } },
      { ...FIXTURES.v1.circuit, node_scores: deep, metrics: { deep } },
      { ...FIXTURES.v2.heads, attentions: { ...FIXTURES.v2.heads.attentions, shape: [2, 2, 6, 7] } },
      { ...FIXTURES.v2.circuit, pairs: { ...FIXTURES.v2.circuit.pairs, a: FIXTURES.v2.flow.edges.flow } },
      { ...FIXTURES.v2.explorer, views: { strip: FIXTURES.v1.attribution } },
      { ...FIXTURES.v2.attribution, scores: { ...FIXTURES.v2.attribution.scores, dtype: 'float64' } },
      { ...FIXTURES.v2.attribution, scores: { ...FIXTURES.v2.attribution.scores, scale: -1 } }
    ];
    for (const p of cases) {
      const { view } = timed(p);
      expect(view.classList.contains('xattr-lab-message') || view.classList.contains('xattr-lab-view')).toBe(true);
    }
    expect(renderResult(cases[1]).textContent).toContain('tokens must be a list of strings');
  }, 60_000);
});
