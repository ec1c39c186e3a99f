import { describe, expect, it } from 'vitest';

import { DIVERGING, colourFor, diverging } from '../src/colours';
import { BASE_EXPORT_CSS, payloadJson, resultHtml } from '../src/exporting';
import { explainCode, pythonString, settingsCode } from '../src/kernelcode';
import { checkPayload } from '../src/payload';
import { MAX_FLOW_EDGES, convergenceBadge, fmt, nodeThroughput, pathsThrough, renderResult, shorten, topEdges } from '../src/render';

const HOSTILE = ['<img src=x onerror=alert(1)>', '</script><script>alert(2)</script>', '"\'&amp;'];

function attribution(tokens = ['[CLS]', 'great', 'film', '[SEP]'], scores = [0, 0.9, -0.3, 0.05]) {
  return {
    schema: 'xattr.v1', kind: 'attribution', tokens, scores, raw: scores.map(s => s * 2),
    method: 'sig', target: 1, target_label: 'POSITIVE', prediction: { POSITIVE: 0.93, NEGATIVE: 0.07 },
    text: tokens.join(' '), model: 'tiny-bert', options: {}, model_id: null
  };
}

// Two layers, three tokens; flow enters from the top token 0 only.
function flow(tokens = ['a', 'b', 'c']) {
  const edge_flow = [
    // layer 1 -> layer 0: edge_flow[0][i][j]
    [[0.5, 0.3, 0], [0, 0, 0], [0, 0, 0]],
    // layer 2 -> layer 1
    [[0.5, 0, 0.3], [0, 0, 0], [0, 0, 0]]
  ];
  return {
    schema: 'xattr.v1', kind: 'flow', tokens, attributions: [0.5, 0.3, 0], edge_flow, value: 0.8,
    node_flow: null, capacities: null, info: 'agf', sources: [0], mu: 0, target: 1,
    target_label: 'POSITIVE', prediction: {}, method: 'gaf', options: {}, text: '', model: 'tiny', model_id: 'abc'
  };
}

function heads(withMaps = true) {
  const tokens = ['[CLS]', HOSTILE[0], '[SEP]'];
  const maps = [0, 1].map(l => [0, 1].map(h => tokens.map((_, q) => tokens.map((_, k) => (q === k ? 0.5 : 0.25) + l * 0 + h * 0))));
  return {
    schema: 'xattr.v1', kind: 'heads', tokens, entropy: [[0.1, 0.9], [0.5, null]], cone_index: [1, 2, 3],
    cone_index_normalised: [0.33, 0.66, 1], patterns: [['diagonal', 'broad'], ['previous', 'unknown']],
    attentions: withMaps ? maps : null, texts: ['x'], model: 'tiny', options: {}, model_id: null
  };
}

function circuit() {
  return {
    schema: 'xattr.v1', kind: 'circuit', n_layers: 2, n_heads: 2,
    node_scores: [[0, 3], [1, 0]], edge_scores: [[0, 1, 0, 0], [1, 0, 2, 0], [0, 2, 0, 0], [0, 0, 0, 0]],
    codes_positive: [[1, 7, 2, 0], [1, 8, 2, 0]], codes_negative: [[1, 5, 2, 0], [1, 5, 3, 0]],
    unique_codes: { '1': [7, 8], '2': [] }, positive: ['p1', 'p2'], negative: ['n1', 'n2'],
    truth: null, metrics: { roc_auc: 0.75 }, model: 'tiny', options: {}, model_id: null
  };
}

function mount(node: HTMLElement): HTMLElement {
  document.body.replaceChildren(node);
  return node;
}

describe('payload checks', () => {
  it('accepts every known kind', () => {
    for (const p of [attribution(), flow(), heads(), circuit()]) {
      expect(checkPayload(p).ok).toBe(true);
    }
  });

  it('names the unknown schema version and the one it reads', () => {
    const out = renderResult({ ...attribution(), schema: 'xattr.v99' });
    expect(out.classList.contains('xattr-lab-message')).toBe(true);
    expect(out.textContent).toContain('"xattr.v99"');
    expect(out.textContent).toContain('"xattr.v2" and "xattr.v1"');
    expect(renderResult({ kind: 'flow' }).textContent).toContain('no schema version');
  });

  it('rejects unknown kinds and incomplete payloads with a message', () => {
    expect(renderResult({ schema: 'xattr.v1', kind: 'evaluation' }).textContent).toContain('"evaluation"');
    const incomplete = renderResult({ schema: 'xattr.v1', kind: 'flow', tokens: [] });
    expect(incomplete.textContent).toContain('missing attributions, edge_flow');
    expect(renderResult(null).classList.contains('xattr-lab-message')).toBe(true);
  });
});

describe('colours', () => {
  it('quantises like xattr_lab.widgets.core.colour_for', () => {
    const rdbu = DIVERGING.RdBu;
    expect(colourFor(0, -1, 1, rdbu)).toBe('#f7f7f7'); // floor(0.5 * 11) = 5
    expect(colourFor(1, -1, 1, rdbu)).toBe('#67001f'); // clipped to the last class
    expect(colourFor(-1, -1, 1, rdbu)).toBe('#053061');
    expect(colourFor(null, -1, 1, rdbu)).toBe('#d9d9d9');
    expect(colourFor(3, 2, 2, rdbu)).toBe(rdbu[5]);
    expect(diverging('RdBu_r')[0]).toBe('#67001f');
    expect(diverging('nonsense')).toBe(rdbu);
  });
});

describe('attribution view', () => {
  it('colours tokens by score, shows values on hover and selects on click', () => {
    const view = mount(renderResult(attribution()));
    const tokens = view.querySelectorAll<HTMLElement>('.xattr-lab-token');
    expect(tokens.length).toBe(4);
    expect(tokens[1].style.backgroundColor).toBe('rgb(103, 0, 31)'); // +0.9 = max -> darkest red
    expect(tokens[0].style.backgroundColor).toBe('rgb(247, 247, 247)'); // 0 -> white
    expect(tokens[2].title).toContain('-0.3000');
    tokens[2].dispatchEvent(new MouseEvent('mouseenter'));
    const readout = view.querySelector('.xattr-lab-readout')!;
    expect(readout.textContent).toContain('film');
    expect(readout.textContent).toContain('score -0.3000');
    expect(readout.textContent).toContain('raw -0.6000');
    tokens[1].click();
    expect(tokens[1].classList.contains('xattr-lab-selected')).toBe(true);
    tokens[2].click();
    expect(tokens[1].classList.contains('xattr-lab-selected')).toBe(false);
    expect(tokens[2].classList.contains('xattr-lab-selected')).toBe(true);
    expect(view.querySelector('.xattr-lab-prediction')!.textContent).toBe('prediction: POSITIVE 0.930, NEGATIVE 0.070');
  });
});

describe('convergence badge', () => {
  it('shows the completeness error of a result that did not converge', () => {
    const options = { converged: false, relative_completeness_error: 0.5412, convergence_tol: 0.05 };
    const view = mount(renderResult({ ...attribution(), method: 'ig', options }));
    const badge = view.querySelector<HTMLElement>('.xattr-lab-not-converged');
    expect(badge).not.toBeNull();
    expect(badge!.textContent).toBe('not converged: completeness error 54%');
    expect(badge!.closest('.xattr-lab-header')).not.toBeNull();
    expect(badge!.style.backgroundColor).toBe('rgb(178, 24, 43)');
    expect(convergenceBadge({ converged: false, relative_completeness_error: 1012.7 })).toBe(
      'not converged: completeness error 101,270%');
    expect(convergenceBadge({ converged: false, relative_completeness_error: null })).toBe('not converged');
    const saved = resultHtml({ ...attribution(), options });  // "save as HTML" draws the same view
    expect(saved).toContain('not converged: completeness error 54%');
  });

  it('stays away when the result converged or says nothing', () => {
    for (const options of [{ converged: true, relative_completeness_error: 0.01 }, {}, null, 'x']) {
      const view = mount(renderResult({ ...attribution(), options }));
      expect(view.querySelector('.xattr-lab-not-converged')).toBeNull();
      expect(view.textContent).not.toContain('not converged');
    }
    expect(convergenceBadge({ converged: 'false', relative_completeness_error: 3 })).toBeNull();
  });

  it('keeps hostile text out of the markup', () => {
    const options = { converged: false, relative_completeness_error: HOSTILE[0] };
    const view = mount(renderResult({ ...attribution(), model: HOSTILE[1], options }));
    expect(view.querySelector('img')).toBeNull();
    expect(view.querySelector('script')).toBeNull();
    expect(view.querySelector('.xattr-lab-not-converged')!.textContent).toBe('not converged');
  });
});

describe('flow view', () => {
  it('keeps the strongest edges and their endpoints', () => {
    const edges = topEdges(flow().edge_flow);
    expect(edges.map(e => [e.layer, e.from, e.to, e.flow])).toEqual([
      [1, 0, 0, 0.5], [2, 0, 0, 0.5], [1, 0, 1, 0.3], [2, 0, 2, 0.3]
    ]);
    const many = Array.from({ length: 1 }, () => Array.from({ length: 40 }, () => Array.from({ length: 40 }, () => 1)));
    expect(topEdges(many).length).toBe(MAX_FLOW_EDGES);
  });

  it('computes throughput from edges when node_flow is missing', () => {
    expect(nodeThroughput(flow() as never)).toEqual([[0.5, 0.3, 0], [0.5, 0, 0.3], [0.8, 0, 0]]);
  });

  it('follows paths up and down from a node', () => {
    const edges = topEdges(flow().edge_flow);
    const through = (l: number, i: number) => [...pathsThrough(edges, l, i)].map(e => `${e.layer}:${e.from}>${e.to}`).sort();
    // input token b (layer 0, #1) is fed by (1,0), which is fed by (2,0)
    expect(through(0, 1)).toEqual(['1:0>1', '2:0>0']);
    // node (1,2) carries 0.3 from the top and passes nothing down
    expect(through(1, 2)).toEqual(['2:0>2']);
    expect(through(2, 0)).toEqual(['1:0>0', '1:0>1', '2:0>0', '2:0>2']);
  });

  it('highlights the paths of a clicked node and clears on a second click', () => {
    const view = mount(renderResult(flow()));
    const graph = view.querySelector('svg.xattr-lab-flow-graph')!;
    expect(view.querySelectorAll('line.xattr-lab-edge').length).toBe(4);
    expect(view.querySelectorAll('circle.xattr-lab-node').length).toBe(9);
    const node = view.querySelector<SVGElement>('circle[data-layer="0"][data-index="1"]')!;
    node.dispatchEvent(new MouseEvent('click'));
    expect(graph.classList.contains('xattr-lab-has-selection')).toBe(true);
    expect(view.querySelectorAll('line.xattr-lab-hl').length).toBe(2);
    expect(view.querySelector('.xattr-lab-readout')!.textContent).toContain('Layer 0, token #1 b');
    node.dispatchEvent(new MouseEvent('click'));
    expect(graph.classList.contains('xattr-lab-has-selection')).toBe(false);
    expect(view.querySelectorAll('line.xattr-lab-hl').length).toBe(0);
    // clicking an input token in the strip selects the same node
    view.querySelectorAll<HTMLElement>('.xattr-lab-strip .xattr-lab-token')[1].click();
    expect(view.querySelectorAll('line.xattr-lab-hl').length).toBe(2);
  });
});

describe('head grid', () => {
  it('colours cells by entropy and shows the matrix of a clicked head', () => {
    const view = mount(renderResult(heads()));
    const cells = view.querySelectorAll<HTMLElement>('td.xattr-lab-cell');
    expect(cells.length).toBe(4);
    expect(cells[3].style.backgroundColor).toBe('rgb(217, 217, 217)'); // null entropy -> grey
    expect(cells[1].title).toContain('pattern broad');
    cells[1].click();
    const detail = view.querySelector('.xattr-lab-detail')!;
    expect(detail.textContent).toContain('Layer 0, head 1');
    expect(detail.querySelectorAll('rect.xattr-lab-matrix-cell').length).toBe(9);
    expect(view.querySelector('.xattr-lab-caption')!.textContent).toContain('L2 1.0000');
  });

  it('says when no attention maps were stored', () => {
    const view = mount(renderResult(heads(false)));
    view.querySelector<HTMLElement>('td.xattr-lab-cell')!.click();
    expect(view.querySelector('.xattr-lab-note')!.textContent).toContain('no attention maps');
  });
});

describe('circuit view', () => {
  it('shows node scores, top edges and the codes of a clicked head', () => {
    const view = mount(renderResult(circuit()));
    expect(view.querySelector('.xattr-lab-edges-list')!.textContent).toContain('0.1–1.0 2.0000');
    view.querySelectorAll<HTMLElement>('td.xattr-lab-cell')[1].click(); // layer 0, head 1 -> flat 1
    const detail = view.querySelector('.xattr-lab-detail')!;
    expect(detail.textContent).toContain('Head 0.1: node score 3.0000');
    expect(detail.querySelector('.xattr-lab-codes-unique')!.textContent).toBe('codes only in positives: 7, 8');
    const rows = [...detail.querySelectorAll('.xattr-lab-code-table tr')].slice(1).map(r => [...r.children].map(c => c.textContent));
    expect(rows).toEqual([['0', '7', '5'], ['1', '8', '5']]);
    expect(detail.querySelectorAll('td.xattr-lab-unique').length).toBe(2);
    expect(view.textContent).toContain('roc_auc 0.7500');
  });
});

describe('hostile strings', () => {
  const payloads = () => [
    attribution(['[CLS]', ...HOSTILE, '[SEP]'], [0, 1, -1, 0.5, 0]),
    { ...flow([HOSTILE[0], HOSTILE[1], HOSTILE[2]]), model: HOSTILE[1] },
    heads(),
    { ...circuit(), metrics: { [HOSTILE[0]]: 1 }, model: HOSTILE[0] }
  ];

  it('stay text in every view: no element is created from them', () => {
    for (const payload of payloads()) {
      const view = mount(renderResult(payload));
      view.querySelectorAll<HTMLElement>('td.xattr-lab-cell').forEach(cell => cell.click());
      view.querySelectorAll<SVGElement>('circle.xattr-lab-node').forEach(n => n.dispatchEvent(new MouseEvent('click')));
      expect(document.querySelectorAll('img, script, iframe, object').length).toBe(0);
      const attributes = [...document.querySelectorAll('*')].flatMap(n => [...n.attributes].map(a => a.name));
      expect(attributes.filter(name => name.startsWith('on'))).toEqual([]);
      expect(view.textContent).toContain(payload.kind === 'attribution' || payload.kind === 'flow' ? HOSTILE[0] : '');
    }
  });

  it('stay text in the HTML export', () => {
    for (const payload of payloads()) {
      const html = resultHtml(payload);
      const parsed = new DOMParser().parseFromString(html, 'text/html');
      expect(parsed.querySelectorAll('img, script, iframe').length).toBe(0);
      expect(html).not.toContain('<img');
      expect(html).not.toContain('<script');
      expect(html).not.toContain('</script');
      expect(parsed.querySelector('.xattr-lab-view')).not.toBeNull();
    }
    const parsed = new DOMParser().parseFromString(resultHtml(payloads()[0]), 'text/html');
    const titles = [...parsed.querySelectorAll<HTMLElement>('.xattr-lab-token')].map(t => t.title);
    expect(titles[1]).toContain(HOSTILE[0]); // escaped on the way out, exact on the way back in
    expect(parsed.querySelectorAll('.xattr-lab-token')[2].textContent).toBe(HOSTILE[1]);
    expect(resultHtml(attribution())).toContain(BASE_EXPORT_CSS.slice(0, 20));
  });
});

describe('kernel code', () => {
  it('embeds the selection as a JSON string literal in a cell-magic body', () => {
    const text = 'He said "hi" {__import__("os").system("x")} $HOME \\ \n next\u2028line\u0085end';
    const code = explainCode(text);
    const literal = code.split('\n')[2].match(/run_cell_magic\("xattr", "explain", (.*)\)$/)![1];
    expect(literal).toBe(pythonString(text));
    expect(JSON.parse(literal)).toBe(text);
    expect(literal).not.toContain('\n');
    expect(code.split('\n').length).toBe(3);
  });

  it('sends the settings as JSON', () => {
    const code = settingsCode({ model: 'smollm2-135m', method: 'sig', colour_map: 'PiYG' });
    expect(code).toContain('xattr_lab.magic.DEFAULTS.update(values)');
    const literal = code.match(/loads\((.*)\)\)$/m)![1];
    expect(JSON.parse(JSON.parse(literal))).toEqual({ model: 'smollm2-135m', method: 'sig', colour_map: 'PiYG' });
  });

  it('exports JSON without the session-bound model id', () => {
    const out = JSON.parse(payloadJson(flow()));
    expect(out.model_id).toBeUndefined();
    expect(out.edge_flow).toEqual(flow().edge_flow);
  });

  it('shortens long labels by characters, not UTF-16 units', () => {
    expect(shorten('short')).toBe('short');
    expect(shorten('🤖'.repeat(20), 5)).toBe('🤖🤖🤖🤖\u2026');
  });

  it('formats numbers', () => {
    expect(fmt(null)).toBe('n/a');
    expect(fmt(0.5, true)).toBe('+0.5000');
    expect(fmt(1e-5)).toBe('0.0000100');
    expect(fmt(-0.000123456)).toBe('-0.000123');
    expect(fmt(0.00062)).toBe('0.000620');
    expect(fmt(2e-9)).toBe('2.00e-9');
    expect(fmt(123456)).toBe('1.23e+5');
  });
});
