/**
 * The circuit graph of a patching circuit (AtP, EAP, EAP-IG), drawn from its saved payload as the
 * live view (widgets/views/circuit_graph.py) draws it: heads as nodes by layer plus a
 * logits node, edges by |score| (width) and sign (colour), a circuit-size slider reading out the
 * saved faithfulness, a click on a head or an edge listing its effect on each prompt pair, and a
 * head grid of the node scores linked with the graph (a head picked in one is picked in the other).
 * Pure DOM: prompts reach the page as textContent only; handlers via addEventListener.
 */
import { isolate, visibleControls } from './bidi';
import { colourFor, maxAbs } from './colours';
import { LIMITS, Num, PatchingModel } from './model';
import { Doc, cellGrid, count, el, fmt, header, hiddenNote, line, notes, shorten, svg } from './render-common';

/** (size, faithfulness) of the largest saved size <= k (the smallest size when k is below all); null if none. */
export function faithfulnessAt(f: PatchingModel['faithfulness'], k: number): [number, Num] | null {
  if (!f || !f.sizes.length) {
    return null;
  }
  let best = -1;
  f.sizes.forEach((s, i) => {
    if (s <= k && (best < 0 || s > f.sizes[best])) {
      best = i;
    }
  });
  if (best < 0) {
    best = f.sizes.indexOf(Math.min(...f.sizes));
  }
  return [f.sizes[best], f.values[best]];
}

/** The readout under the slider: the same words as the live view's. */
export function faithfulnessText(p: PatchingModel, k: number): string {
  const head = `circuit: top ${k} ${p.unit}`;
  const at = faithfulnessAt(p.faithfulness, k);
  if (!at) {
    return `${head} \u00b7 faithfulness: not computed`;
  }
  const where = at[0] === k ? '' : ` (at ${at[0]} ${p.unit}, the nearest computed size below)`;
  const f = p.faithfulness!;
  const extra = (f.cpr !== null ? ` \u00b7 CPR ${fmt(f.cpr)}` : '') + (f.cmd !== null ? ` \u00b7 CMD ${fmt(f.cmd)}` : '');
  return `${head} \u00b7 faithfulness ${fmt(at[1])}${where}${extra}`;
}

const name = (flat: number, L: number, H: number) => (flat === L * H ? 'logits' : `${Math.floor(flat / H)}.${flat % H}`);

/** Flat indices of the heads ranked by |node score| (strongest first). */
function rankedNodes(p: PatchingModel): number[] {
  const flat = p.nodeScores.flatMap(r => r.map(v => (v === null ? -1 : Math.abs(v))));
  return flat.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(x => x[1]);
}

/** A table of one head's or edge's effect on each prompt pair (prompt text as text). */
function effectsTable(doc: Doc, p: PatchingModel, title: string, effects: Num[], palette: readonly string[]): HTMLElement {
  const box = el(doc, 'div', 'xattr-lab-effects');
  const finite = effects.filter((v): v is number => v !== null);
  const mean = finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
  box.appendChild(el(doc, 'div', 'xattr-lab-detail-title', `${title} \u00b7 mean ${fmt(mean)}${p.metric ? ' ' + visibleControls(p.metric) : ''}`));
  const table = el(doc, 'table', 'xattr-lab-effects-table');
  const head = el(doc, 'tr');
  ['#', 'clean prompt', 'corrupted prompt', 'effect', ''].forEach(t => head.appendChild(el(doc, 'th', undefined, t)));
  table.appendChild(head);
  const peak = maxAbs(effects) || 1;
  const prompt = (text: string | undefined) => {
    const td = isolate(el(doc, 'td', 'xattr-lab-prompt', shorten(visibleControls(text ?? ''), 48)));
    td.title = visibleControls(text ?? '');
    return td;
  };
  effects.slice(0, LIMITS.promptRows).forEach((v, i) => {
    const tr = el(doc, 'tr', 'xattr-lab-prompt-row');
    tr.appendChild(el(doc, 'td', undefined, String(i)));
    tr.appendChild(prompt(p.positive[i]));
    tr.appendChild(prompt(p.negative[i]));
    tr.appendChild(el(doc, 'td', 'xattr-lab-effect', fmt(v)));
    const bar = el(doc, 'div', 'xattr-lab-effect-bar');
    Object.assign(bar.style, { width: `${v === null ? 0 : Math.round((80 * Math.abs(v)) / peak)}px`, height: '10px',
      background: colourFor(v, -peak, peak, palette) });
    const cell = el(doc, 'td');
    cell.appendChild(bar);
    tr.appendChild(cell);
    table.appendChild(tr);
  });
  box.appendChild(table);
  if (effects.length > LIMITS.promptRows) {
    box.appendChild(hiddenNote(doc, `${count(effects.length - LIMITS.promptRows)} more prompt pairs hidden`));
  }
  return box;
}

export function patchingView(doc: Doc, p: PatchingModel, palette: readonly string[]): HTMLElement {
  const L = p.layers;
  const H = p.heads;
  const P = p.promptNode(0, 0).length;
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-patching');
  const plural = (n: number, word: string) => `${count(n)} ${word}${n === 1 ? '' : 's'}`;
  root.appendChild(header(doc, p.meta, `Patching circuit: ${plural(L, 'layer')} \u00d7 ${plural(H, 'head')}, ${plural(P, 'prompt pair')}`));
  if (p.metric) {
    root.appendChild(line(doc, el(doc, 'div', 'xattr-lab-caption'), ['metric ', { token: p.metric }]));
  }
  const maxSize = Math.max(1, Math.min(LIMITS.graphEdges, p.unit === 'edges' ? p.edges.length : L * H));
  const sizes = (p.faithfulness?.sizes ?? []).filter(s => s >= 1 && s <= maxSize);
  const unique = [...new Set(sizes)].sort((a, b) => a - b);
  const slider = el(doc, 'input', 'xattr-lab-circuit-size');
  slider.type = 'range';
  slider.min = unique.length ? '0' : '1';
  slider.max = String(unique.length ? unique.length - 1 : maxSize);
  slider.value = String(unique.length ? Math.floor(unique.length / 2) : Math.min(10, maxSize));
  slider.setAttribute('aria-label', `circuit size (top ${p.unit})`);
  const sizeOf = () => (unique.length ? unique[Number(slider.value)] : Number(slider.value));
  const controls = el(doc, 'label', 'xattr-lab-controls', `top ${p.unit} `);
  controls.appendChild(slider);
  const sizeLabel = el(doc, 'span', 'xattr-lab-size');
  controls.appendChild(sizeLabel);
  root.appendChild(controls);
  const readout = el(doc, 'div', 'xattr-lab-faithfulness');
  readout.setAttribute('role', 'status');
  root.appendChild(readout);

  // the graph
  const colW = 60;
  const rowH = 28;
  const left = 48;
  const top = 16;
  const width = left + 30 + (L + 1) * colW;
  const height = top + 36 + Math.max(H, 1) * rowH;
  const X = (l: number) => left + 20 + l * colW;
  const Y = (h: number) => top + h * rowH;
  const at = (flat: number): [number, number] => (flat === L * H ? [X(L), Y((H - 1) / 2)] : [X(Math.floor(flat / H)), Y(flat % H)]);
  const graph = svg(doc, 'svg', { class: 'xattr-lab-graph', width, height, viewBox: `0 0 ${width} ${height}` });
  (graph as unknown as HTMLElement).style.maxWidth = '100%';
  (graph as unknown as HTMLElement).style.height = 'auto';
  const peak = maxAbs(p.edges.map(e => e.score)) || 1;
  const edgeGroups = p.edges.map((e, rank) => {
    const [x1, y1] = at(e.sender);
    const [x2, y2] = at(e.receiver);
    const g = svg(doc, 'g', { class: 'xattr-lab-graph-edge', 'data-sender': e.sender, 'data-receiver': e.receiver, 'data-rank': rank });
    const w = 0.8 + (6 * Math.abs(e.score)) / peak;
    g.appendChild(svg(doc, 'line', { x1, y1, x2, y2, stroke: colourFor(e.score, -peak, peak, palette), 'stroke-width': w, 'stroke-opacity': 0.8 }));
    g.appendChild(svg(doc, 'line', { x1, y1, x2, y2, stroke: 'transparent', 'stroke-width': Math.max(8, w), class: 'xattr-lab-hit' }));
    const title = svg(doc, 'title');
    title.textContent = `edge ${name(e.sender, L, H)} -> ${name(e.receiver, L, H)}: ${fmt(e.score)}`;
    g.appendChild(title);
    g.addEventListener('click', () => selectEdge(rank));
    graph.appendChild(g);
    return g;
  });
  const nodePeak = maxAbs(p.nodeScores.flat()) || 1;
  const circles: SVGElement[] = [];
  for (let l = 0; l < L; l++) {
    const label = svg(doc, 'text', { x: X(l), y: height - 8, 'text-anchor': 'middle', 'font-size': 11 });
    label.textContent = String(l);
    graph.appendChild(label);
    for (let h = 0; h < H; h++) {
      const v = p.nodeScores[l]?.[h] ?? null;
      const c = svg(doc, 'circle', { cx: X(l), cy: Y(h), r: 7, fill: colourFor(v, -nodePeak, nodePeak, palette),
        stroke: '#333', class: 'xattr-lab-graph-node', 'data-layer': l, 'data-head': h });
      const title = svg(doc, 'title');
      title.textContent = `head ${l}.${h}: node score ${fmt(v)}`;
      c.appendChild(title);
      c.addEventListener('click', () => selectHead(l, h));
      graph.appendChild(c);
      circles.push(c);
    }
  }
  for (let h = 0; h < H; h++) {
    const label = svg(doc, 'text', { x: 4, y: Y(h) + 4, 'font-size': 11 });
    label.textContent = `H${h}`;
    graph.appendChild(label);
  }
  const [lx, ly] = at(L * H);
  graph.appendChild(svg(doc, 'rect', { x: lx - 9, y: ly - 9, width: 18, height: 18, fill: '#444', class: 'xattr-lab-graph-logits' }));
  const logits = svg(doc, 'text', { x: X(L), y: height - 8, 'text-anchor': 'middle', 'font-size': 11 });
  logits.textContent = 'logits';
  graph.appendChild(logits);
  const box = el(doc, 'div', 'xattr-lab-graph-box');
  Object.assign(box.style, { maxWidth: '100%', overflowX: 'auto' });
  box.appendChild(graph);
  root.appendChild(box);
  if (!p.edges.length && p.unit === 'edges') {
    root.appendChild(hiddenNote(doc, 'No edges saved.'));
  }
  const detail = el(doc, 'div', 'xattr-lab-detail', 'Click a head or an edge for its patching effect on each prompt pair.');
  root.appendChild(detail);

  // the linked head grid
  const grid = cellGrid(doc, p.nodeScores, v => colourFor(v, -nodePeak, nodePeak, palette),
    (l, h) => `layer ${l}, head ${h}: node score ${fmt(p.nodeScores[l]?.[h])}`, (l, h) => selectHead(l, h));
  root.appendChild(grid);
  notes(doc, p.meta).forEach(note => root.appendChild(note));

  const ranked = rankedNodes(p);
  function resize(): void {
    const k = sizeOf();
    sizeLabel.textContent = ` ${k}`;
    readout.textContent = faithfulnessText(p, k);
    const inCircuit = new Set<number>(p.unit === 'nodes' ? ranked.slice(0, k)
      : p.edges.slice(0, k).flatMap(e => [e.sender, e.receiver]));
    // unit "edges": the top k; unit "nodes": every edge between circuit heads and the logits
    const ends = new Set(inCircuit).add(L * H);
    edgeGroups.forEach((g, rank) => {
      const e = p.edges[rank];
      const shown = p.unit === 'edges' ? rank < k : ends.has(e.sender) && ends.has(e.receiver);
      g.setAttribute('display', shown ? 'inline' : 'none');
    });
    circles.forEach((c, i) => c.setAttribute('opacity', inCircuit.has(i) ? '1' : '0.35'));
  }
  function mark(l: number, h: number, edge = -1): void {
    root.querySelectorAll('.xattr-lab-selected').forEach(node => node.classList.remove('xattr-lab-selected'));
    edgeGroups.forEach((g, rank) => g.firstElementChild?.setAttribute('stroke-opacity', edge < 0 ? '0.8' : rank === edge ? '1' : '0.3'));
    circles.forEach(c => c.setAttribute('stroke-width', '1'));
    if (l >= 0) {
      circles[l * H + h]?.setAttribute('stroke-width', '3');
      circles[l * H + h]?.classList.add('xattr-lab-selected');
      grid.querySelector(`td.xattr-lab-cell[data-layer="${l}"][data-head="${h}"]`)?.classList.add('xattr-lab-selected');
    }
  }
  function selectHead(l: number, h: number): void {
    mark(l, h);
    detail.replaceChildren(effectsTable(doc, p, `head ${l}.${h}`, p.promptNode(l, h), palette));
  }
  function selectEdge(rank: number): void {
    const e = p.edges[rank];
    mark(-1, -1, rank);
    edgeGroups[rank].classList.add('xattr-lab-selected');
    const title = `edge ${name(e.sender, L, H)} -> ${name(e.receiver, L, H)}`;
    const effects = p.promptEdge(e.sender, e.receiver);
    detail.replaceChildren(effects ? effectsTable(doc, p, title, effects, palette)
      : el(doc, 'div', 'xattr-lab-detail-title', `${title}: per-prompt effects are saved for the top ${p.storedEdges} edges only`));
  }
  slider.addEventListener('input', resize);
  resize();
  return root;
}
