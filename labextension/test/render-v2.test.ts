import { readFileSync } from 'fs';
import { resolve } from 'path';
import { describe, expect, it } from 'vitest';

import { ITEMSIZE, base64Bytes, decodePacked, halfToFloat } from '../src/arrays';
import { KINDS_V2, MIME_TYPE_V2, MIME_TYPES, REQUIRED_V2, readPayload, xattrPayload } from '../src/payload';
import { renderResult } from '../src/render';

// Written by tests/widgets/test_payload.py (renderer_fixtures): the same results as v1 and as v2.
const FIXTURES = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/payloads.json'), 'utf8'));
const SCHEMA = JSON.parse(readFileSync(resolve(__dirname, '../../kernel_ext/data/payload-v2.schema.json'), 'utf8'));
const v1 = (kind: string) => structuredClone(FIXTURES.v1[kind]);
// Written by tests/widgets/test_circuit_graph_view.py (patching_fixtures): the "patching-circuit" kind.
const PATCHING = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/patching.json'), 'utf8'));
const v2 = (kind: string) => structuredClone(kind === 'patching-circuit' ? PATCHING.eap : FIXTURES.v2[kind]);

function mount(node: HTMLElement): HTMLElement {
  document.body.replaceChildren(node);
  return node;
}

describe('the v2 reader mirrors kernel_ext/data/payload-v2.schema.json', () => {
  it('has the same kinds, required fields and dtypes', () => {
    expect([...KINDS_V2]).toEqual(SCHEMA.properties.kind.enum);
    for (const kind of KINDS_V2) {
      expect(REQUIRED_V2[kind].sort()).toEqual(SCHEMA.$defs[kind].required.filter((f: string) => f !== 'kind').sort());
    }
    expect(Object.keys(ITEMSIZE).sort()).toEqual([...SCHEMA.$defs.array.properties.dtype.enum].sort());
    expect(MIME_TYPES).toContain(MIME_TYPE_V2);
    expect(xattrPayload({ [MIME_TYPE_V2]: 1, 'application/vnd.xattr.v1+json': 2 })).toBe(1);
  });

  it('reads every kind the writer writes', () => {
    for (const kind of KINDS_V2) {
      const read = readPayload(v2(kind));
      expect(read.ok, JSON.stringify(read)).toBe(true);
    }
  });

  it('decodes half floats and base64 without exceptions', () => {
    expect([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00].map(halfToFloat)).toEqual([1, -2, 65504, 2 ** -24, Infinity, -Infinity]);
    expect(halfToFloat(0x7e00)).toBeNaN();
    expect(Array.from(base64Bytes('AAEC/w==')!)).toEqual([0, 1, 2, 255]);
    expect(base64Bytes('AA=')).toBeNull();
    expect(base64Bytes('<img>AA=')).toBeNull();
    const bad = decodePacked({ dtype: 'float16', shape: [10000, 10000], data: 'AAAA', scale: 1 }, 'x', 2);
    expect(bad.ok).toBe(false);
    expect(decodePacked({ dtype: 'float16', shape: [3], data: 'AAAA', scale: 1 }, 'x', 1).ok).toBe(false);
  });
});

describe('v2 views draw what v1 draws', () => {
  it('attribution: same tokens, scores within float16 precision', () => {
    const a = mount(renderResult(v1('attribution')));
    const tokensV1 = [...a.querySelectorAll('.xattr-lab-token')].map(t => t.textContent);
    const b = mount(renderResult(v2('attribution')));
    expect([...b.querySelectorAll('.xattr-lab-token')].map(t => t.textContent)).toEqual(tokensV1);
    expect(b.querySelector('.xattr-lab-prediction')!.textContent).toBe('prediction: POSITIVE 0.750, NEGATIVE 0.250');
    const scores = FIXTURES.v1.attribution.scores as number[];
    const shown = [...b.querySelectorAll<HTMLElement>('.xattr-lab-token')].map(t => Number(/score ([-+0-9.e]+)/.exec(t.title)![1]));
    shown.forEach((s, i) => expect(Math.abs(s - scores[i])).toBeLessThan(1e-3 * Math.abs(scores[i]) + 1e-4));
  });

  it('flow: the same edges and nodes, and clicks highlight the same paths', () => {
    const views = [renderResult(v1('flow')), renderResult(v2('flow'))];
    const counts = views.map(v => [v.querySelectorAll('line.xattr-lab-edge').length, v.querySelectorAll('circle.xattr-lab-node').length]);
    expect(counts[0]).toEqual(counts[1]);
    expect(counts[0][1]).toBe(3 * 6);
    const lit = views.map(view => {
      mount(view);
      view.querySelector<SVGElement>('circle[data-layer="2"][data-index="1"]')!.dispatchEvent(new MouseEvent('click'));
      return view.querySelectorAll('line.xattr-lab-hl').length;
    });
    expect(lit[0]).toBeGreaterThan(0);
    expect(lit[1]).toBe(lit[0]);
  });

  it('heads: a clicked head shows its stored weights and what was kept', () => {
    const view = mount(renderResult(v2('heads')));
    view.querySelectorAll<HTMLElement>('td.xattr-lab-cell')[3].click();
    const detail = view.querySelector('.xattr-lab-detail')!;
    expect(detail.textContent).toContain('Layer 1, head 1');
    expect(detail.querySelectorAll('rect.xattr-lab-matrix-cell').length).toBe(36);
    expect(detail.textContent).toContain('100.0% of the attention on average');
  });

  it('circuit: codes of a clicked head and the top edges', () => {
    const a = mount(renderResult(v1('circuit')));
    const edgesV1 = a.querySelector('.xattr-lab-edges-list')!.textContent;
    const view = mount(renderResult(v2('circuit')));
    expect(view.querySelector('.xattr-lab-edges-list')!.textContent!.split(',').length).toBe(edgesV1!.split(',').length);
    view.querySelectorAll<HTMLElement>('td.xattr-lab-cell')[1].click();
    const rows = [...view.querySelectorAll('.xattr-lab-code-table tr')].slice(1).map(r => [...r.children].map(c => c.textContent));
    expect(rows).toEqual([['0', '7', '5'], ['1', '8', '5']]);
    expect(view.querySelector('.xattr-lab-codes-unique')!.textContent).toBe('codes only in positives: 7, 8');
    expect(view.textContent).toContain('node_roc_auc 0.7500');
  });
});

describe('a saved explorer', () => {
  it('keeps every linked view and links them with no kernel', () => {
    const view = mount(renderResult(v2('explorer')));
    expect(view.dataset.kind).toBe('explorer');
    expect(view.querySelectorAll('.xattr-lab-attribution, .xattr-lab-flow, .xattr-lab-heads').length).toBe(3);
    view.querySelectorAll<HTMLElement>('td.xattr-lab-cell')[0].click(); // a head: its matrix
    const strip = view.querySelector('.xattr-lab-attribution .xattr-lab-strip')!;
    strip.querySelectorAll<HTMLElement>('.xattr-lab-token')[3].click(); // a token in the strip ...
    expect(view.querySelectorAll('.xattr-lab-flow line.xattr-lab-hl').length).toBeGreaterThan(0); // ... its flow paths
    expect(view.querySelector('.xattr-lab-flow circle[data-layer="0"][data-index="3"]')!.classList.contains('xattr-lab-hl')).toBe(true);
    expect(view.querySelector('rect.xattr-lab-matrix-query')!.getAttribute('y')).toBe(String(90 + 3 * 18)); // ... its matrix row
    strip.querySelectorAll<HTMLElement>('.xattr-lab-token')[3].click(); // again: cleared everywhere
    expect(view.querySelectorAll('.xattr-lab-flow line.xattr-lab-hl').length).toBe(0);
    expect(view.querySelector('rect.xattr-lab-matrix-query')).toBeNull();
    // an input node of the flow selects the token in the strip
    view.querySelector<SVGElement>('.xattr-lab-flow circle[data-layer="0"][data-index="2"]')!.dispatchEvent(new MouseEvent('click'));
    expect(strip.querySelector('.xattr-lab-selected')!.getAttribute('data-index')).toBe('2');
  });

  it('says what is wrong with a broken view instead of drawing', () => {
    const p = v2('explorer');
    p.views.flow.edges.layer.data = 'AAAA';
    const out = renderResult(p);
    expect(out.classList.contains('xattr-lab-message')).toBe(true);
    expect(out.textContent).toContain('edges.layer: data does not hold');
  });
});
