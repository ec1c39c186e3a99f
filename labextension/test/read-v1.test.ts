/**
 * Issue 27, item 3: old saved outputs (application/vnd.xattr.v1+json) are checked like v2 ones. A
 * wrong shape gives the visible error v2 gives (a role="alert" message naming the field), and a flow
 * with thousands of layers draws capped with an "N more layers" note, in v1 and v2 alike.
 */
import { readFileSync } from 'fs';
import { resolve } from 'path';
import { describe, expect, it } from 'vitest';

import { readPayload } from '../src/payload';
import { LIMITS, renderResult } from '../src/render';

// Written by tests/widgets/test_payload.py (renderer_fixtures): the same results as v1 and as v2.
const FIXTURES = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/payloads.json'), 'utf8'));
const v1 = (kind: string) => structuredClone(FIXTURES.v1[kind]);
const v2 = (kind: string) => structuredClone(FIXTURES.v2[kind]);
const N = FIXTURES.v1.flow.tokens.length; // 6 tokens, 2 layers, 2 heads

/** The message a payload gets, or null when it draws. */
function refusal(payload: unknown): string | null {
  const read = readPayload(payload);
  return read.ok ? null : read.message;
}

const square = (n: number, value = 0.1) => Array.from({ length: n }, () => new Array(n).fill(value));

/** [what is wrong, the broken v1 payload, what the message must say] */
const BROKEN: Array<[string, () => Record<string, unknown>, RegExp]> = [
  ['edge_flow of numbers', () => ({ ...v1('flow'), edge_flow: [1, 2, 3] }),
    /edge_flow must be \(L, 6, 6\) lists of numbers for 6 tokens: edge_flow\[0\] is a number, not a list/],
  ['edge_flow, a layer short of rows', () => ({ ...v1('flow'), edge_flow: [square(N), square(N).slice(1)] }),
    /edge_flow\[1\] holds 5 rows, not 6/],
  ['edge_flow, a ragged row', () => { const p = v1('flow'); p.edge_flow[0][3] = [0.1, 0.2]; return p; },
    /edge_flow\[0\]\[3\] holds 2 numbers, not 6/],
  ['edge_flow, a string for a number', () => { const p = v1('flow'); p.edge_flow[1][2][4] = '0.5'; return p; },
    /edge_flow\[1\]\[2\]\[4\] is a string, not a number/],
  ['edge_flow for other tokens', () => ({ ...v1('flow'), edge_flow: [square(N + 1)] }), /edge_flow\[0\] holds 7 rows, not 6/],
  ['edge_flow an object', () => ({ ...v1('flow'), edge_flow: { 0: 1 } }), /missing edge_flow|edge_flow must be/],
  ['node_flow of the wrong shape', () => ({ ...v1('flow'), node_flow: square(N) }), /node_flow must be \(3, 6\).*node_flow holds 6 entries, not 3/],
  ['attributions not one per token', () => ({ ...v1('flow'), attributions: [1, 2] }), /attributions must be \(6\).*holds 2 entries, not 6/],
  ['ragged head entropies', () => ({ ...v1('heads'), entropy: [[1, 2], [3]] }), /entropy must be \(L, H\) lists of numbers: entropy\[1\] holds 1 entry, not 2/],
  ['entropies of strings', () => ({ ...v1('heads'), entropy: [['a', 'b'], ['c', 'd']] }), /entropy\[0\]\[0\] is a string, not a number/],
  ['attention maps not (L, H, n, n)', () => { const p = v1('heads'); p.attentions[1][0] = square(N + 1); return p; },
    /attentions must be \(L, H, 6, 6\).*attentions\[1\]\[0\] holds 7 entries, not 6/],
  ['attention maps, one head short', () => { const p = v1('heads'); p.attentions[1].pop(); return p; }, /attentions\[1\] holds 1 entry, not 2/],
  ['cone index of objects', () => ({ ...v1('heads'), cone_index_normalised: [{}, {}] }), /cone_index_normalised\[0\] is an object, not a number/],
  ['scores not one per token', () => ({ ...v1('attribution'), scores: [0.5] }), /scores must be \(6\).*holds 1 entry, not 6/],
  ['raw of the wrong type', () => ({ ...v1('attribution'), raw: 'x' }), /raw must be \(6\).*raw is a string, not a list/],
  ['ragged node scores', () => ({ ...v1('circuit'), node_scores: [[1, 2], [3, 4, 5]] }), /node_scores\[1\] holds 3 entries, not 2/],
  ['edge scores not square', () => ({ ...v1('circuit'), edge_scores: [[1, 2, 3, 4]] }), /edge_scores must be \(L·H, L·H\).*edge_scores\[0\] holds 4 entries, not 1/],
  ['ragged codes', () => { const p = v1('circuit'); p.codes_negative[1] = [1]; return p; }, /codes_negative\[1\] holds 1 entry, not 4/]
];

describe('v1 payloads are checked like v2', () => {
  it('the fixtures (what Result.to_dict() writes) still draw, every kind', () => {
    for (const kind of ['attribution', 'flow', 'heads', 'circuit']) {
      expect(refusal(v1(kind)), kind).toBeNull();
    }
    const p = v1('flow');
    p.edge_flow[0][1][2] = null; // NaN/inf are saved as null: still a number's place
    p.node_flow = Array.from({ length: 3 }, () => new Array(N).fill(1));
    expect(refusal(p)).toBeNull();
  });

  it.each(BROKEN)('%s: a visible error naming the field', (_what, make, says) => {
    const view = renderResult(make());
    expect(view.classList.contains('xattr-lab-message')).toBe(true);
    expect(view.getAttribute('role')).toBe('alert');
    expect(view.textContent).toMatch(/^This xattr-lab "(flow|heads|attribution|circuit)" result (cannot be drawn|is incomplete)/);
    expect(view.textContent).toMatch(says);
    expect(view.querySelectorAll('svg, table, .xattr-lab-token').length).toBe(0); // nothing drawn silently
  });

  it('gives the message v2 gives for the same fault', () => {
    const a = v1('flow');
    a.node_flow = square(N);
    const b = v2('flow');
    b.node_flow = { ...b.attributions, shape: [2, 3] };
    const messages = [a, b].map(p => renderResult(p).textContent!);
    for (const text of messages) {
      expect(text).toMatch(/^This xattr-lab "flow" result cannot be drawn: node_flow must be \(3, 6\)/);
    }
  });
});

describe('a flow of thousands of layers draws capped, with a note', () => {
  const layers = 3000;
  const hidden = `${(layers - LIMITS.layers).toLocaleString('en-US')} more layers (above L${LIMITS.layers})`;
  const check = (view: HTMLElement) => {
    expect(view.classList.contains('xattr-lab-flow')).toBe(true);
    expect(view.querySelectorAll('text.xattr-lab-layer-label').length).toBe(LIMITS.layers + 1);
    const drawn = [...view.querySelectorAll('circle.xattr-lab-node')].map(c => Number(c.getAttribute('data-layer')));
    expect(Math.max(...drawn)).toBe(LIMITS.layers);
    expect(Number(view.querySelector('svg')!.getAttribute('width'))).toBeLessThan(2 * 110 + 90 * (LIMITS.layers + 1));
    expect(view.querySelector('.xattr-lab-hidden')!.textContent).toContain(hidden);
  };

  it('v1', () => {
    check(renderResult({ ...v1('flow'), node_flow: null, edge_flow: Array.from({ length: layers }, () => square(N)) }));
  });

  it('v2', () => {
    check(renderResult({ ...v2('flow'), node_flow: null, n_layers: layers }));
  });

  it('a flow within the cap has no such note', () => {
    const view = renderResult(v1('flow'));
    expect(view.querySelectorAll('text.xattr-lab-layer-label').length).toBe(3);
    expect(view.textContent).not.toContain('more layers');
  });
});
