/**
 * The saved circuit graph of a patching circuit (render-graph.ts, read-patching.ts), drawn from
 * payloads written by tests/widgets/test_circuit_graph_view.py (fixtures/patching.json): the graph, the
 * size slider and its faithfulness readout, per-prompt effects of a clicked head or edge, the linked
 * head grid, escaping, and a visible message naming the field for every broken payload.
 */
import fc from 'fast-check';
import { readFileSync } from 'fs';
import { resolve } from 'path';
import { describe, expect, it } from 'vitest';

import { readPayload } from '../src/payload';
import { renderResult } from '../src/render';
import { faithfulnessAt } from '../src/render-graph';
import { install } from '../src/player';

const FIXTURES = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/patching.json'), 'utf8'));
const fixture = (name: string) => structuredClone(FIXTURES[name]);
const L = 3;
const H = 2;
const P = 4;

function mount(node: HTMLElement): HTMLElement {
  document.body.replaceChildren(node);
  return node;
}

function slide(view: HTMLElement, value: number): void {
  const slider = view.querySelector<HTMLInputElement>('input.xattr-lab-circuit-size')!;
  slider.value = String(value);
  slider.dispatchEvent(new Event('input'));
}

const shownEdges = (view: HTMLElement) =>
  [...view.querySelectorAll('g.xattr-lab-graph-edge')].filter(g => g.getAttribute('display') !== 'none');

describe('the saved circuit graph', () => {
  it('draws heads by layer, a logits node and edges by score', () => {
    const view = mount(renderResult(fixture('eap')));
    expect(view.dataset.kind).toBe('patching-circuit');
    expect(view.querySelector('.xattr-lab-title')!.textContent).toBe('Patching circuit: 3 layers \u00d7 2 heads, 4 prompt pairs');
    expect(view.querySelectorAll('circle.xattr-lab-graph-node').length).toBe(L * H);
    expect(view.querySelectorAll('rect.xattr-lab-graph-logits').length).toBe(1);
    const strongest = view.querySelector('g.xattr-lab-graph-edge[data-rank="0"]')!;
    expect([strongest.getAttribute('data-sender'), strongest.getAttribute('data-receiver')]).toEqual(['0', '2']);
    const second = view.querySelector('g.xattr-lab-graph-edge[data-rank="1"]')!;
    expect(second.getAttribute('data-receiver')).toBe(String(L * H)); // -> logits
    const [a, b] = [strongest, second].map(g => g.querySelector('line')!);
    expect(a.getAttribute('stroke')).not.toBe(b.getAttribute('stroke')); // +5 and -4: the sign shows
    expect(Number(a.getAttribute('stroke-width'))).toBeGreaterThan(Number(b.getAttribute('stroke-width')));
    expect(view.textContent).toContain('metric logit difference');
  });

  it('the slider sizes the circuit and reads out the saved faithfulness', () => {
    const view = mount(renderResult(fixture('eap')));
    const readout = view.querySelector('.xattr-lab-faithfulness')!;
    expect(readout.textContent).toBe('circuit: top 4 edges \u00b7 faithfulness 0.8000 \u00b7 CPR 0.7100 \u00b7 CMD 0.1200');
    expect(shownEdges(view).length).toBe(4);
    slide(view, 1); // sizes [1, 2, 4, 8]: index 1 is 2 edges
    expect(readout.textContent).toContain('top 2 edges \u00b7 faithfulness 0.5000');
    expect(shownEdges(view).length).toBe(2);
    const opaque = [...view.querySelectorAll('circle.xattr-lab-graph-node')].filter(c => c.getAttribute('opacity') === '1');
    expect(opaque.map(c => `${c.getAttribute('data-layer')}.${c.getAttribute('data-head')}`).sort()).toEqual(['0.0', '0.1', '1.0']);
  });

  it('says "not computed" without a faithfulness curve, and sizes atp circuits by nodes', () => {
    const view = mount(renderResult(fixture('not-computed')));
    expect(view.querySelector('.xattr-lab-faithfulness')!.textContent).toBe('circuit: top 10 edges \u00b7 faithfulness: not computed');
    slide(view, 3);
    expect(shownEdges(view).length).toBe(3);
    const atp = mount(renderResult(fixture('atp')));
    expect(atp.querySelectorAll('g.xattr-lab-graph-edge').length).toBe(0);
    slide(atp, 2);
    expect(atp.querySelector('.xattr-lab-faithfulness')!.textContent).toContain('top 2 nodes');
    const opaque = [...atp.querySelectorAll('circle.xattr-lab-graph-node')].filter(c => c.getAttribute('opacity') === '1');
    expect(opaque.map(c => `${c.getAttribute('data-layer')}.${c.getAttribute('data-head')}`)).toEqual(['2.0', '2.1']);
  });

  it('an edge circuit sized by nodes draws the edges among its heads and the logits', () => {
    const view = mount(renderResult(fixture('eap-nodes')));
    slide(view, 2); // sizes [1, 2, 3]: 3 heads
    const opaque = new Set([...view.querySelectorAll('circle.xattr-lab-graph-node')]
      .map((c, i) => (c.getAttribute('opacity') === '1' ? i : -1)).filter(i => i >= 0));
    expect(opaque.size).toBe(3);
    const shown = shownEdges(view).map(g => [Number(g.getAttribute('data-sender')), Number(g.getAttribute('data-receiver'))]);
    expect(shown.length).toBeGreaterThan(0);
    for (const [a, b] of shown) {
      expect(opaque.has(a) && (opaque.has(b) || b === L * H)).toBe(true);
    }
    expect(view.querySelector('.xattr-lab-faithfulness')!.textContent).toContain('top 3 nodes \u00b7 faithfulness 0.9000');
  });

  it('a clicked head lists its effect per prompt (prompts as text) and is picked in the grid too', () => {
    const view = mount(renderResult(fixture('eap')));
    view.querySelector<SVGElement>('circle.xattr-lab-graph-node[data-layer="1"][data-head="0"]')!.dispatchEvent(new MouseEvent('click'));
    const rows = [...view.querySelectorAll('.xattr-lab-effects tr.xattr-lab-prompt-row')];
    expect(rows.length).toBe(P);
    expect(rows[0].children[1].textContent).toBe('<img src=x onerror=alert(1)>');
    expect(view.querySelectorAll('img, script').length).toBe(0);
    expect(rows[3].children[2].textContent).toBe('\u27e8RLO\u27e9evil'); // bidi control shown, not obeyed
    expect(view.querySelector('td.xattr-lab-cell.xattr-lab-selected')!.getAttribute('data-layer')).toBe('1');
    // and a head picked in the grid is picked in the graph
    view.querySelector<HTMLElement>('td.xattr-lab-cell[data-layer="2"][data-head="1"]')!.click();
    expect(view.querySelector('circle.xattr-lab-graph-node.xattr-lab-selected')!.getAttribute('data-layer')).toBe('2');
    expect(view.querySelector('.xattr-lab-effects .xattr-lab-detail-title')!.textContent).toContain('head 2.1');
  });

  it('a clicked edge lists its saved per-prompt effects, or says they were not saved', () => {
    const view = mount(renderResult(fixture('eap')));
    view.querySelector('g.xattr-lab-graph-edge[data-rank="1"]')!.dispatchEvent(new MouseEvent('click'));
    const effects = [...view.querySelectorAll('.xattr-lab-effects td.xattr-lab-effect')].map(td => td.textContent);
    expect(effects).toEqual(['-4.0000', '-3.0000', '-5.0000', '-4.0000']);
    expect(view.querySelector('.xattr-lab-detail-title')!.textContent).toContain('edge 0.1 -> logits');
    const opacity = (rank: number) => view.querySelector(`g.xattr-lab-graph-edge[data-rank="${rank}"] line`)!.getAttribute('stroke-opacity');
    expect([opacity(1), opacity(0)]).toEqual(['1', '0.3']); // the picked edge stands out
    view.querySelector('g.xattr-lab-graph-edge[data-rank="2"]')!.dispatchEvent(new MouseEvent('click'));
    expect(view.querySelector('.xattr-lab-detail')!.textContent).toContain('saved for the top 2 edges only');
  });

  it('says how many edges were left out when the payload is capped', () => {
    const view = mount(renderResult(fixture('capped')));
    expect(view.querySelectorAll('g.xattr-lab-graph-edge').length).toBe(3);
    const total = FIXTURES.capped.edges.total as number;
    expect(view.textContent).toContain(`${total - 3} weaker edges are not drawn`);
  });

  it('faithfulnessAt picks the largest saved size not above k', () => {
    const f = { sizes: [1, 2, 4, 8], values: [0.1, 0.5, 0.8, 0.95], cpr: null, cmd: null };
    expect(faithfulnessAt(f, 7)).toEqual([4, 0.8]);
    expect(faithfulnessAt(f, 0)).toEqual([1, 0.1]);
    expect(faithfulnessAt(null, 3)).toBeNull();
  });

  it('the player draws it from a page with no kernel', () => {
    const scope: { xattrLabPlayer?: ReturnType<typeof install> } = {};
    const player = install(scope);
    const host = document.createElement('div');
    const script = document.createElement('script');
    script.type = 'application/json';
    script.className = 'xattr-lab-payload';
    script.textContent = JSON.stringify(fixture('eap'));
    host.appendChild(script);
    document.body.replaceChildren(host);
    expect(player.mountAll(document)).toBe(1);
    expect(host.querySelectorAll('circle.xattr-lab-graph-node').length).toBe(L * H);
  });
});

const BROKEN: Array<[string, (p: Record<string, any>) => unknown, RegExp]> = [
  ['no edges', p => { delete p.edges; return p; }, /missing edges/],
  ['no prompt_node_scores', p => { delete p.prompt_node_scores; return p; }, /missing prompt_node_scores/],
  ['node scores of the wrong shape', p => ({ ...p, n_layers: 4 }), /node_scores is \(3, 2\), not \(n_layers, n_heads\) = \(4, 2\)/],
  ['edge sender out of range', p => { p.edges.shape = [6, 7]; p.edges.sender = p.edges.receiver; p.edges.sender.data = 'Bwc='; p.edges.sender.shape = [2]; return p; }, /edges\.sender|edges: sender, receiver and score differ/],
  ['edges of a bad shape', p => { p.edges.shape = [5, 5]; return p; }, /edges\.shape must be \[0, 0\] or \[6, 7\]/],
  ['edge data damaged', p => { p.edges.score.data = 'AAAA'; return p; }, /edges\.score/],
  ['per-prompt edge rows not matching', p => { p.prompt_edges.scores.shape = [1, 4]; return p; }, /prompt_edges\.scores/],
  ['faithfulness curve shorter than its sizes', p => { p.faithfulness.faithfulness = [0.1]; return p; }, /faithfulness\.faithfulness must be 4 numbers/],
  ['prompts not strings', p => ({ ...p, positive: [1, 2] }), /positive must be a list of strings/]
];

describe('broken patching payloads give a visible message naming the field', () => {
  for (const [what, damage, message] of BROKEN) {
    it(what, () => {
      const read = readPayload(damage(fixture('eap')));
      expect(read.ok).toBe(false);
      const view = renderResult(damage(fixture('eap')));
      expect(view.classList.contains('xattr-lab-message')).toBe(true);
      expect(view.getAttribute('role')).toBe('alert');
      expect(view.textContent).toMatch(message);
    });
  }
});

describe('fuzzed patching payloads', () => {
  const safe = (view: HTMLElement) => {
    document.body.replaceChildren(view);
    view.querySelectorAll<SVGElement>('circle.xattr-lab-graph-node, g.xattr-lab-graph-edge').forEach((n, i) => i < 30 && n.dispatchEvent(new MouseEvent('click')));
    // within the view: the player test above put its stylesheet in the document's head
    expect(view.querySelectorAll('script, img, iframe, object, embed, a, foreignObject, use, style, link').length).toBe(0);
    for (const node of [view, ...view.querySelectorAll('*')]) {
      for (const a of node.attributes) {
        expect(a.name.startsWith('on') || ['href', 'src', 'xlink:href', 'srcdoc'].includes(a.name)).toBe(false);
      }
    }
  };

  it('one field replaced by anything draws a view or a message, never throws', () => {
    fc.assert(fc.property(fc.constantFrom('eap', 'atp', 'capped'), fc.anything({ maxDepth: 3 }), fc.nat(), (name, value, pick) => {
      const p = fixture(name);
      const keys = Object.keys(p);
      p[keys[pick % keys.length]] = value;
      safe(renderResult(p));
    }), { numRuns: 80 });
  }, 120_000);

  it('hostile prompts and metric names stay text', () => {
    const hostile = fc.array(fc.oneof(fc.constant('<img src=x onerror=alert(1)>'), fc.constant('"><svg onload=alert(4)>'), fc.string()),
      { minLength: P, maxLength: P });
    fc.assert(fc.property(hostile, hostile, (pos, neg) => {
      const p = { ...fixture('eap'), positive: pos, negative: neg, metric: pos[0], model: neg[0] };
      const view = renderResult(p);
      expect(view.classList.contains('xattr-lab-message')).toBe(false);
      safe(view);
    }), { numRuns: 40 });
  }, 120_000);
});
