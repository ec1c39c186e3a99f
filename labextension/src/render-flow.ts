/** The flow view: the layered graph of the strongest edges; clicking a node highlights its paths. */
import { maxAbs } from './colours';
import { Edge, FlowModel, LIMITS, Num } from './model';
import { edgesV1, throughputFromEdges } from './read-v1';
import {
  Doc, Part, count, el, fmt, header, hiddenNote, line, notes, selectToken, svg, svgLabel, tokenLabel, tokenStrip, tokenTitle
} from './render-common';

/** Flow graphs draw at most this many edges (the strongest), so long inputs stay responsive. */
export const MAX_FLOW_EDGES = LIMITS.edges;

/** The strongest edges of a v1 edge_flow (at most `limit`, each at least 1% of the strongest). */
export function topEdges(edgeFlow: Num[][][], limit = MAX_FLOW_EDGES): Edge[] {
  const all = edgesV1(edgeFlow.map(m => (m ?? []).map(row => (row ?? []).map(v => (typeof v === 'number' && Number.isFinite(v) ? v : null)))));
  all.sort((a, b) => b.flow - a.flow);
  const peak = all.length ? all[0].flow : 0;
  return all.filter(e => e.flow >= peak * 0.01).slice(0, limit);
}

/** Throughput of each node (L+1, n) of a v1 payload: its node_flow, or sums of edge flows. */
export function nodeThroughput(p: { edge_flow: Num[][][]; tokens: unknown[]; node_flow?: Num[][] | null }): number[][] {
  const L = p.edge_flow.length;
  if (Array.isArray(p.node_flow) && p.node_flow.length === L + 1) {
    return p.node_flow.map(row => row.map(v => (typeof v === 'number' && Number.isFinite(v) ? v : 0)));
  }
  return throughputFromEdges(topEdges(p.edge_flow, Infinity), L, p.tokens.length);
}

/**
 * Edges on paths through node (layer, index) among `edges`: everything its flow reaches below,
 * and everything that feeds it from above.
 */
export function pathsThrough(edges: Edge[], layer: number, index: number): Set<Edge> {
  const down = new Map<string, Edge[]>();
  const up = new Map<string, Edge[]>();
  for (const e of edges) {
    const a = `${e.layer}:${e.from}`;
    const b = `${e.layer - 1}:${e.to}`;
    (down.get(a) ?? down.set(a, []).get(a)!).push(e);
    (up.get(b) ?? up.set(b, []).get(b)!).push(e);
  }
  const found = new Set<Edge>();
  const walk = (start: string, next: Map<string, Edge[]>, towards: (e: Edge) => string) => {
    const stack = [start];
    const seen = new Set(stack);
    while (stack.length) {
      for (const e of next.get(stack.pop()!) ?? []) {
        found.add(e);
        const key = towards(e);
        if (!seen.has(key)) {
          seen.add(key);
          stack.push(key);
        }
      }
    }
  };
  walk(`${layer}:${index}`, down, e => `${e.layer - 1}:${e.to}`);
  walk(`${layer}:${index}`, up, e => `${e.layer}:${e.from}`);
  return found;
}

/** Token positions drawn as graph rows: all, or the LIMITS.flowTokens carrying the most flow (in order). */
export function keptTokens(p: FlowModel): number[] {
  const n = p.tokens.length;
  const all = Array.from({ length: n }, (_, i) => i);
  if (n <= LIMITS.flowTokens) {
    return all;
  }
  const carried = (i: number) => (p.nodeFlow[0]?.[i] ?? 0) + (p.nodeFlow[p.layers]?.[i] ?? 0);
  return all.sort((a, b) => carried(b) - carried(a)).slice(0, LIMITS.flowTokens).sort((a, b) => a - b);
}

export interface FlowView {
  root: HTMLElement;
  /** Select node (layer, index) as a click would (again: clear). */
  select(layer: number, index: number): void;
  /** Select input token `index` (-1: clear any selection), as a linked strip asks. */
  setInput(index: number): void;
}

/** `onInput(j)`: an input token (layer 0) was selected (-1: cleared). */
export function flowView(doc: Doc, p: FlowModel, palette: readonly string[], onInput?: (index: number) => void): FlowView {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-flow');
  root.appendChild(header(doc, p.meta, `Attention flow (${p.info}), value ${fmt(p.value)}`));
  // layers 0..L drawn, at most LIMITS.layers of them above the inputs (a note says how many more)
  const L = Math.min(p.layers, LIMITS.layers);
  const throughput = p.nodeFlow;
  const kept = keptTokens(p);
  const row = new Map(kept.map((index, r) => [index, r]));
  const n = kept.length;
  const peakEdge = p.edges.length ? p.edges[0].flow : 0;
  const edges = p.edges.filter(e => e.flow >= peakEdge * 0.01 && e.layer <= L && row.has(e.from) && row.has(e.to));
  const rowH = 18;
  const labelW = 110;
  const colW = Math.max(28, Math.min(90, 600 / Math.max(L, 1)));
  const width = labelW * 2 + colW * L;
  const height = rowH * n + 24;
  const x = (layer: number) => labelW + layer * colW;
  const y = (index: number) => 16 + row.get(index)! * rowH + rowH / 2;
  const graph = svg(doc, 'svg', { class: 'xattr-lab-flow-graph', width, height, viewBox: `0 0 ${width} ${height}` });
  const readout = el(doc, 'div', 'xattr-lab-readout', 'Click a node or a token to highlight the paths that carry its flow.');

  for (let layer = 0; layer <= L; layer++) {
    const caption = svg(doc, 'text', { x: x(layer), y: 10, class: 'xattr-lab-layer-label', 'text-anchor': 'middle' });
    caption.textContent = layer === 0 ? 'in' : `L${layer}`;
    graph.appendChild(caption);
  }
  const strongest = edges.length ? edges[0].flow : 1;
  const edgeGroup = svg(doc, 'g', { class: 'xattr-lab-edges' });
  for (const e of edges) {
    const w = e.flow / strongest;
    const line = svg(doc, 'line', {
      x1: x(e.layer), y1: y(e.from), x2: x(e.layer - 1), y2: y(e.to),
      'stroke-width': (0.5 + 3.5 * w).toFixed(2),
      'stroke-opacity': (0.2 + 0.6 * w).toFixed(2),
      class: 'xattr-lab-edge'
    });
    const title = svg(doc, 'title');
    title.textContent = `L${e.layer} ${tokenTitle(p.tokens[e.from])} -> L${e.layer - 1} ${tokenTitle(p.tokens[e.to])}: ${fmt(e.flow)}`;
    line.appendChild(title);
    e.line = line;
    edgeGroup.appendChild(line);
  }
  graph.appendChild(edgeGroup);

  const peak = Math.max(1e-12, ...throughput.map(row => maxAbs(row)));
  const nodes = new Map<string, SVGElement>();
  let selected: string | null = null;
  const select = (layer: number, index: number) => {
    const key = `${layer}:${index}`;
    edges.forEach(e => e.line!.classList.remove('xattr-lab-hl'));
    nodes.forEach(node => node.classList.remove('xattr-lab-hl'));
    if (selected === key) {
      selected = null;
      graph.classList.remove('xattr-lab-has-selection');
      readout.textContent = '';
      selectToken(strip, -1);
      return;
    }
    selected = key;
    graph.classList.add('xattr-lab-has-selection');
    selectToken(strip, layer === 0 ? index : -1);
    const on = pathsThrough(edges, layer, index);
    const reached = new Set<number>();
    nodes.get(key)?.classList.add('xattr-lab-hl');
    on.forEach(e => {
      e.line!.classList.add('xattr-lab-hl');
      nodes.get(`${e.layer}:${e.from}`)?.classList.add('xattr-lab-hl');
      nodes.get(`${e.layer - 1}:${e.to}`)?.classList.add('xattr-lab-hl');
      if (e.layer - 1 === 0) {
        reached.add(e.to);
      }
    });
    const inputs = [...reached]
      .sort((a, b) => (throughput[0]?.[b] ?? 0) - (throughput[0]?.[a] ?? 0))
      .slice(0, 8)
      .map((j): Part[] => [{ token: tokenLabel(p.tokens[j]) }, ` (${fmt(throughput[0]?.[j])})`]);
    line(doc, readout, [
      `Layer ${layer}, token #${index} `, { token: p.tokens[index] },
      `: throughput ${fmt(throughput[layer]?.[index])}; ${on.size} edges on its paths`,
      ...(layer > 0 && inputs.length ? ['; reaches inputs ', ...inputs.flatMap((t, i) => (i ? [', ', ...t] : t))] : [])
    ]);
  };

  // every node when they fit; else the inputs, the top layer and the nodes on drawn edges
  const wanted = new Set<string>();
  const all = (L + 1) * n <= LIMITS.nodes;
  for (const index of kept) {
    wanted.add(`0:${index}`);
    wanted.add(`${L}:${index}`);
  }
  edges.forEach(e => wanted.add(`${e.layer}:${e.from}`).add(`${e.layer - 1}:${e.to}`));
  const nodeGroup = svg(doc, 'g', { class: 'xattr-lab-nodes' });
  for (let layer = 0; layer <= L; layer++) {
    for (const index of kept) {
      if (!all && !wanted.has(`${layer}:${index}`)) {
        continue;
      }
      const value = throughput[layer]?.[index] ?? 0;
      const node = svg(doc, 'circle', {
        cx: x(layer), cy: y(index), r: (2 + 5 * Math.sqrt(Math.max(0, value) / peak)).toFixed(2),
        class: 'xattr-lab-node', 'data-layer': layer, 'data-index': index
      });
      const title = svg(doc, 'title');
      title.textContent = `L${layer} #${index} ${tokenTitle(p.tokens[index])}: throughput ${fmt(value)}`;
      node.appendChild(title);
      node.addEventListener('click', () => {
        select(layer, index);
        if (layer === 0) {
          onInput?.(selected === null ? -1 : index);
        }
      });
      nodes.set(`${layer}:${index}`, node);
      nodeGroup.appendChild(node);
    }
  }
  graph.appendChild(nodeGroup);
  kept.forEach(index => {
    const token = p.tokens[index];
    for (const [layer, anchor, dx] of [[0, 'end', -8], [L, 'start', 8]] as const) {
      const label = svgLabel(doc, tokenLabel(token), {
        x: x(layer) + dx, y: y(index) + 4, 'text-anchor': anchor, class: 'xattr-lab-node-label'
      });
      label.addEventListener('click', () => select(layer, index));
      graph.appendChild(label);
    }
  });
  const scroller = el(doc, 'div', 'xattr-lab-scroll');
  scroller.appendChild(graph);
  root.appendChild(scroller);
  const above = p.edges.filter(e => e.layer > L).length; // in the layers not drawn
  const hidden = p.hiddenEdges + (p.edges.length - edges.length - above);
  const parts = [p.layers > L ? `${count(p.layers - L)} more layers (above L${L})` : '',
    hidden ? `${count(hidden)} weaker edges` : '', p.tokens.length > n ? `${count(p.tokens.length - n)} tokens with the least flow` : '',
    all ? '' : `${count((L + 1) * n - nodes.size)} nodes off the drawn edges`].filter(Boolean);
  if (parts.length) {
    root.appendChild(hiddenNote(doc, `${parts.join(', ')} hidden`));
  }
  notes(doc, p.meta).forEach(note => root.appendChild(note));
  root.appendChild(el(doc, 'div', 'xattr-lab-caption', 'Flow reaching each input token:'));
  const strip = tokenStrip(doc, p.tokens, p.attributions, palette, readout, undefined, index => {
    select(0, index);
    onInput?.(selected === null ? -1 : index);
  });
  root.appendChild(strip);
  root.appendChild(readout);
  const setInput = (index: number) => {
    if (index < 0 && selected !== null) {
      const [layer, at] = selected.split(':').map(Number);
      select(layer, at);
    } else if (index >= 0 && selected !== `0:${index}`) {
      select(0, index);
    }
  };
  return { root, select, setInput };
}
