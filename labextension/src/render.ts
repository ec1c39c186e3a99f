/**
 * Draw an xattr result from its JSON, in the browser, with no kernel.
 *
 * Pure DOM: every string from the payload reaches the page through `textContent` or
 * `setAttribute` (never innerHTML), so token strings such as `<img src=x onerror=...>` stay text.
 * Interaction is wired with addEventListener on elements we create (no inline handlers).
 */
import {
  AttributionPayload,
  CircuitPayload,
  FlowPayload,
  HeadsPayload,
  Num,
  XattrPayload,
  checkPayload
} from './payload';
import { SEQUENTIAL, colourFor, diverging, extent, maxAbs, textColourFor } from './colours';

export interface RenderOptions {
  /** Diverging colour map for signed scores ("RdBu", "PiYG", ...; "_r" reverses). */
  colourMap?: string;
  /** The document to create elements in (tests pass jsdom's). */
  document?: Document;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Flow graphs draw at most this many edges (the strongest), so long inputs stay responsive. */
export const MAX_FLOW_EDGES = 800;

type Doc = Document;

function el<K extends keyof HTMLElementTagNameMap>(
  doc: Doc,
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = doc.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function svg(doc: Doc, tag: string, attrs: Record<string, string | number> = {}): SVGElement {
  const node = doc.createElementNS(SVG_NS, tag) as SVGElement;
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, String(value));
  }
  return node;
}

/** A number for people: 4 significant decimals, "n/a" for null/NaN. */
export function fmt(value: Num | undefined, signed = false): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return 'n/a';
  }
  const abs = Math.abs(value);
  const text = abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? value.toExponential(2) : value.toFixed(4);
  return signed && value >= 0 ? `+${text}` : text;
}

/** Display label of a model token: word-start markers ("Ġ", "▁") become a space, "##" is dropped. */
export function tokenLabel(token: unknown): string {
  const text = typeof token === 'string' ? token : String(token);
  return text.replace(/^[\u0120\u2581]/, ' ').replace(/^##/, '').replace(/\u010a/g, '\\n');
}

/** `text` cut to `max` characters with an ellipsis (SVG labels; the full text goes in a title). */
export function shorten(text: string, max = 16): string {
  const chars = Array.from(text);
  return chars.length > max ? chars.slice(0, max - 1).join('') + '\u2026' : text;
}

/** An SVG text label: shortened, with the full string as its tooltip. */
function svgLabel(doc: Doc, full: string, attrs: Record<string, string | number>): SVGElement {
  const label = svg(doc, 'text', attrs);
  label.textContent = shorten(full);
  const title = svg(doc, 'title');
  title.textContent = full;
  label.appendChild(title);
  return label;
}

function finite(values: unknown): Num[] {
  return Array.isArray(values) ? values.map(v => (typeof v === 'number' && Number.isFinite(v) ? v : null)) : [];
}

function header(doc: Doc, payload: XattrPayload, title: string): HTMLElement {
  const head = el(doc, 'div', 'xattr-lab-header');
  head.appendChild(el(doc, 'span', 'xattr-lab-title', title));
  const bits: string[] = [];
  if (typeof payload.model === 'string' && payload.model) {
    bits.push(`model ${payload.model}`);
  }
  if (typeof payload.method === 'string' && payload.method) {
    bits.push(`method ${payload.method}`);
  }
  const label = payload.target_label;
  if (typeof label === 'string' && label) {
    bits.push(`target ${label}`);
  }
  if (bits.length) {
    head.appendChild(el(doc, 'span', 'xattr-lab-meta', bits.join(' · ')));
  }
  const prediction = payload.prediction;
  if (prediction && typeof prediction === 'object') {
    const top = Object.entries(prediction as Record<string, unknown>)
      .filter((e): e is [string, number] => typeof e[1] === 'number')
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([name, p]) => `${name} ${p.toFixed(3)}`);
    if (top.length) {
      head.appendChild(el(doc, 'span', 'xattr-lab-prediction', `prediction: ${top.join(', ')}`));
    }
  }
  return head;
}

/** A message box (unknown schema, malformed payload, ...). */
export function renderMessage(message: string, options: RenderOptions = {}): HTMLElement {
  const doc = options.document ?? document;
  const box = el(doc, 'div', 'xattr-lab-view xattr-lab-message', message);
  box.setAttribute('role', 'alert');
  return box;
}

/**
 * Token strip: one span per token coloured by `scores` (diverging, symmetric around 0), the exact
 * value on hover (title and the readout line), click toggles a token's selection.
 */
export function tokenStrip(
  doc: Doc,
  tokens: string[],
  scores: Num[],
  palette: readonly string[],
  readout: HTMLElement,
  extra?: (index: number) => string,
  onClick?: (index: number, selected: boolean) => void
): HTMLElement {
  const strip = el(doc, 'div', 'xattr-lab-strip');
  const bound = maxAbs(scores);
  tokens.forEach((token, index) => {
    const value = scores[index] ?? null;
    const span = el(doc, 'span', 'xattr-lab-token', tokenLabel(token));
    const background = colourFor(value, -bound, bound, palette);
    span.style.backgroundColor = background;
    span.style.color = textColourFor(background);
    span.dataset.index = String(index);
    const detail = `${String(token)}  score ${fmt(value, true)}${extra ? '  ' + extra(index) : ''}`;
    span.title = detail;
    span.addEventListener('mouseenter', () => {
      readout.textContent = `#${index} ${detail}`;
    });
    span.addEventListener('click', () => {
      const selected = !span.classList.contains('xattr-lab-selected');
      strip.querySelectorAll('.xattr-lab-token.xattr-lab-selected').forEach(other => other.classList.remove('xattr-lab-selected'));
      if (selected) {
        span.classList.add('xattr-lab-selected');
        readout.textContent = `selected #${index} ${detail}`;
      } else {
        readout.textContent = '';
      }
      onClick?.(index, selected);
    });
    strip.appendChild(span);
  });
  return strip;
}

/**
 * "not converged: completeness error 54%" when a gradient result says `options.converged === false`
 * (its `options.relative_completeness_error` is |sum of scores - output change| / |output change|);
 * null otherwise. Same text as the Python views.
 */
export function convergenceBadge(options: unknown): string | null {
  const o = options && typeof options === 'object' ? (options as Record<string, unknown>) : {};
  if (o.converged !== false) {
    return null;
  }
  const error = o.relative_completeness_error;
  if (typeof error !== 'number' || !Number.isFinite(error)) {
    return 'not converged';
  }
  const shown = error >= 0.01
    ? `${Math.round(100 * error).toLocaleString('en-US')}%`
    : `${Number((100 * error).toPrecision(2))}%`;
  return `not converged: completeness error ${shown}`;
}

function badge(doc: Doc, options: unknown): HTMLElement | null {
  const text = convergenceBadge(options);
  if (text === null) {
    return null;
  }
  const box = el(doc, 'span', 'xattr-lab-badge xattr-lab-not-converged', text);
  box.setAttribute('role', 'status');
  box.title = "The scores do not add up to the output change; rerun with steps='auto' or more steps (SIG: steps='exact').";
  Object.assign(box.style, { background: '#b2182b', color: '#ffffff', fontWeight: 'bold', padding: '1px 6px', borderRadius: '3px' });
  return box;
}

function renderAttribution(doc: Doc, p: AttributionPayload, palette: readonly string[]): HTMLElement {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-attribution');
  const head = header(doc, p, 'Token attribution');
  const warning = badge(doc, p.options);
  if (warning) {
    head.appendChild(warning);
  }
  root.appendChild(head);
  const readout = el(doc, 'div', 'xattr-lab-readout', 'Hover a token for its score; click to select it.');
  const scores = finite(p.scores);
  const raw = finite(p.raw ?? p.scores);
  root.appendChild(tokenStrip(doc, p.tokens, scores, palette, readout, i => `raw ${fmt(raw[i], true)}`));
  root.appendChild(readout);
  return root;
}

interface Edge {
  layer: number; // edge from (layer, from) down to (layer - 1, to)
  from: number;
  to: number;
  flow: number;
  line?: SVGElement;
}

/** The strongest edges of a flow (at most `limit`, each at least 1% of the strongest). */
export function topEdges(edgeFlow: Num[][][], limit = MAX_FLOW_EDGES): Edge[] {
  const edges: Edge[] = [];
  edgeFlow.forEach((matrix, l) =>
    (matrix ?? []).forEach((row, i) =>
      (row ?? []).forEach((flow, j) => {
        if (typeof flow === 'number' && Number.isFinite(flow) && flow > 0) {
          edges.push({ layer: l + 1, from: i, to: j, flow });
        }
      })
    )
  );
  edges.sort((a, b) => b.flow - a.flow);
  const strongest = edges.length ? edges[0].flow : 0;
  return edges.filter(e => e.flow >= strongest * 0.01).slice(0, limit);
}

/** Throughput of each node (L+1, n): the payload's node_flow, or sums of edge flows. */
export function nodeThroughput(p: FlowPayload): number[][] {
  const L = p.edge_flow.length;
  const n = p.tokens.length;
  if (Array.isArray(p.node_flow) && p.node_flow.length === L + 1) {
    return p.node_flow.map(row => finite(row).map(v => v ?? 0));
  }
  const out = Array.from({ length: L + 1 }, () => new Array<number>(n).fill(0));
  p.edge_flow.forEach((matrix, l) =>
    (matrix ?? []).forEach((row, i) =>
      (row ?? []).forEach((flow, j) => {
        if (typeof flow === 'number' && Number.isFinite(flow)) {
          out[l][j] += flow; // inflow from above (= outflow under conservation)
          if (l + 1 === L) {
            out[L][i] += flow; // the top layer has no inflow: count its outflow
          }
        }
      })
    )
  );
  return out;
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

function renderFlow(doc: Doc, p: FlowPayload, palette: readonly string[]): HTMLElement {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-flow');
  root.appendChild(header(doc, p, `Attention flow (${p.info ?? 'gaf'}), value ${fmt(p.value)}`));
  const L = p.edge_flow.length;
  const n = p.tokens.length;
  const rowH = 18;
  const labelW = 110;
  const colW = Math.max(28, Math.min(90, 600 / Math.max(L, 1)));
  const width = labelW * 2 + colW * L;
  const height = rowH * n + 24;
  const x = (layer: number) => labelW + layer * colW;
  const y = (index: number) => 16 + index * rowH + rowH / 2;
  const graph = svg(doc, 'svg', { class: 'xattr-lab-flow-graph', width, height, viewBox: `0 0 ${width} ${height}` });
  const readout = el(doc, 'div', 'xattr-lab-readout', 'Click a node or a token to highlight the paths that carry its flow.');

  for (let layer = 0; layer <= L; layer++) {
    const caption = svg(doc, 'text', { x: x(layer), y: 10, class: 'xattr-lab-layer-label', 'text-anchor': 'middle' });
    caption.textContent = layer === 0 ? 'in' : `L${layer}`;
    graph.appendChild(caption);
  }
  const edges = topEdges(p.edge_flow);
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
    title.textContent = `L${e.layer} ${String(p.tokens[e.from])} -> L${e.layer - 1} ${String(p.tokens[e.to])}: ${fmt(e.flow)}`;
    line.appendChild(title);
    e.line = line;
    edgeGroup.appendChild(line);
  }
  graph.appendChild(edgeGroup);

  const throughput = nodeThroughput(p);
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
      return;
    }
    selected = key;
    graph.classList.add('xattr-lab-has-selection');
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
      .sort((a, b) => (throughput[0][b] ?? 0) - (throughput[0][a] ?? 0))
      .slice(0, 8)
      .map(j => `${tokenLabel(p.tokens[j])} (${fmt(throughput[0][j])})`);
    readout.textContent =
      `Layer ${layer}, token #${index} ${String(p.tokens[index])}: throughput ${fmt(throughput[layer]?.[index])}; ` +
      `${on.size} edges on its paths` + (layer > 0 && inputs.length ? `; reaches inputs ${inputs.join(', ')}` : '');
  };

  const nodeGroup = svg(doc, 'g', { class: 'xattr-lab-nodes' });
  for (let layer = 0; layer <= L; layer++) {
    for (let index = 0; index < n; index++) {
      const value = throughput[layer]?.[index] ?? 0;
      const node = svg(doc, 'circle', {
        cx: x(layer), cy: y(index), r: (2 + 5 * Math.sqrt(Math.max(0, value) / peak)).toFixed(2),
        class: 'xattr-lab-node', 'data-layer': layer, 'data-index': index
      });
      const title = svg(doc, 'title');
      title.textContent = `L${layer} #${index} ${String(p.tokens[index])}: throughput ${fmt(value)}`;
      node.appendChild(title);
      node.addEventListener('click', () => select(layer, index));
      nodes.set(`${layer}:${index}`, node);
      nodeGroup.appendChild(node);
    }
  }
  graph.appendChild(nodeGroup);
  p.tokens.forEach((token, index) => {
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
  const attributions = finite(p.attributions);
  root.appendChild(el(doc, 'div', 'xattr-lab-caption', 'Flow reaching each input token:'));
  root.appendChild(tokenStrip(doc, p.tokens, attributions, palette, readout, undefined, index => select(0, index)));
  root.appendChild(readout);
  return root;
}

/** An (rows x cols) grid of coloured cells; `onPick(r, c)` on click. Returns the table. */
function cellGrid(
  doc: Doc,
  values: Num[][],
  colour: (v: Num) => string,
  describe: (r: number, c: number) => string,
  onPick: (r: number, c: number, cell: HTMLElement) => void,
  rowLabel = (r: number) => `L${r}`,
  colLabel = (c: number) => `H${c}`
): HTMLTableElement {
  const table = el(doc, 'table', 'xattr-lab-grid');
  const cols = Math.max(0, ...values.map(row => (row ?? []).length));
  const head = el(doc, 'tr');
  head.appendChild(el(doc, 'th'));
  for (let c = 0; c < cols; c++) {
    head.appendChild(el(doc, 'th', undefined, colLabel(c)));
  }
  table.appendChild(head);
  values.forEach((row, r) => {
    const tr = el(doc, 'tr');
    tr.appendChild(el(doc, 'th', undefined, rowLabel(r)));
    for (let c = 0; c < cols; c++) {
      const value = row?.[c] ?? null;
      const td = el(doc, 'td', 'xattr-lab-cell');
      const background = colour(value);
      td.style.backgroundColor = background;
      td.style.color = textColourFor(background);
      td.dataset.layer = String(r);
      td.dataset.head = String(c);
      td.title = describe(r, c);
      td.textContent = value === null ? '' : value.toFixed(value !== 0 && Math.abs(value) < 10 ? 2 : 0);
      td.addEventListener('click', () => {
        table.querySelectorAll('.xattr-lab-cell.xattr-lab-selected').forEach(other => other.classList.remove('xattr-lab-selected'));
        td.classList.add('xattr-lab-selected');
        onPick(r, c, td);
      });
      tr.appendChild(td);
    }
    table.appendChild(tr);
  });
  return table;
}

/** The attention matrix of one head as an SVG heat map (queries as rows, keys as columns). */
export function attentionMatrix(doc: Doc, matrix: Num[][], tokens: string[]): SVGElement {
  const n = matrix.length;
  const cell = Math.max(4, Math.min(18, Math.floor(360 / Math.max(n, 1))));
  const labels = n <= 48;
  const pad = labels ? 90 : 4;
  const size = pad + n * cell + 4;
  const out = svg(doc, 'svg', { class: 'xattr-lab-matrix', width: size, height: size, viewBox: `0 0 ${size} ${size}` });
  const [, hi] = extent(matrix.flat());
  matrix.forEach((row, q) => {
    (row ?? []).forEach((value, k) => {
      const rect = svg(doc, 'rect', {
        x: pad + k * cell, y: pad + q * cell, width: cell, height: cell,
        fill: colourFor(value, 0, hi, SEQUENTIAL), class: 'xattr-lab-matrix-cell'
      });
      const title = svg(doc, 'title');
      title.textContent = `${String(tokens[q] ?? q)} -> ${String(tokens[k] ?? k)}: ${fmt(value)}`;
      rect.appendChild(title);
      out.appendChild(rect);
    });
    if (labels) {
      const text = tokenLabel(tokens[q] ?? q);
      out.appendChild(svgLabel(doc, text, {
        x: pad - 4, y: pad + q * cell + cell * 0.75, 'text-anchor': 'end', class: 'xattr-lab-matrix-label'
      }));
      out.appendChild(svgLabel(doc, text, {
        x: 0, y: 0, 'text-anchor': 'start', class: 'xattr-lab-matrix-label',
        transform: `translate(${pad + q * cell + cell * 0.75}, ${pad - 4}) rotate(-90)`
      }));
    }
  });
  return out;
}

function renderHeads(doc: Doc, p: HeadsPayload): HTMLElement {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-heads');
  const texts = Array.isArray(p.texts) ? p.texts.length : 0;
  root.appendChild(header(doc, p, `Head statistics${texts > 1 ? ` (mean over ${texts} texts)` : ''}: attention entropy (nats)`));
  const [lo, hi] = extent(p.entropy.flat());
  const detail = el(doc, 'div', 'xattr-lab-detail', 'Click a head for its attention matrix.');
  const pattern = (l: number, h: number) => {
    const name = p.patterns?.[l]?.[h];
    return typeof name === 'string' ? name : '';
  };
  const grid = cellGrid(
    doc,
    p.entropy,
    v => colourFor(v, lo, hi, SEQUENTIAL),
    (l, h) => `layer ${l}, head ${h}: entropy ${fmt(p.entropy[l]?.[h])}${pattern(l, h) ? `, pattern ${pattern(l, h)}` : ''}`,
    (l, h) => {
      detail.replaceChildren();
      detail.appendChild(el(doc, 'div', 'xattr-lab-detail-title',
        `Layer ${l}, head ${h}: entropy ${fmt(p.entropy[l]?.[h])}${pattern(l, h) ? `, ${pattern(l, h)}` : ''}`));
      const matrix = p.attentions?.[l]?.[h];
      if (Array.isArray(matrix) && matrix.length) {
        detail.appendChild(attentionMatrix(doc, matrix, p.tokens));
      } else {
        detail.appendChild(el(doc, 'div', 'xattr-lab-note',
          'This result holds no attention maps (run with the live kernel for the matrix).'));
      }
    }
  );
  root.appendChild(grid);
  const cone = finite(p.cone_index_normalised ?? p.cone_index);
  if (cone.length) {
    root.appendChild(el(doc, 'div', 'xattr-lab-caption',
      `Cone index per layer${p.cone_index_normalised ? ' (normalised)' : ''}: ` + cone.map((v, l) => `L${l} ${fmt(v)}`).join(', ')));
  }
  root.appendChild(detail);
  return root;
}

function renderCircuit(doc: Doc, p: CircuitPayload): HTMLElement {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-circuit');
  const nPos = p.positive?.length ?? p.codes_positive.length;
  const nNeg = p.negative?.length ?? p.codes_negative.length;
  root.appendChild(header(doc, p, `SAE circuit: node scores (${nPos} positive, ${nNeg} negative prompts)`));
  const H = p.n_heads || Math.max(1, ...p.node_scores.map(row => (row ?? []).length));
  const [, hi] = extent(p.node_scores.flat());
  const detail = el(doc, 'div', 'xattr-lab-detail', 'Click a head for its SAE codes in positives vs negatives.');
  const grid = cellGrid(
    doc,
    p.node_scores,
    v => colourFor(v, 0, hi, SEQUENTIAL),
    (l, h) => `layer ${l}, head ${h}: node score ${fmt(p.node_scores[l]?.[h])}`,
    (l, h) => {
      const flat = l * H + h;
      detail.replaceChildren();
      detail.appendChild(el(doc, 'div', 'xattr-lab-detail-title', `Head ${l}.${h}: node score ${fmt(p.node_scores[l]?.[h])}`));
      const unique = p.unique_codes?.[String(flat)] ?? [];
      detail.appendChild(el(doc, 'div', 'xattr-lab-codes-unique',
        `codes only in positives: ${unique.length ? unique.join(', ') : 'none'}`));
      const table = el(doc, 'table', 'xattr-lab-code-table');
      const head = el(doc, 'tr');
      ['example', 'positive code', 'negative code'].forEach(t => head.appendChild(el(doc, 'th', undefined, t)));
      table.appendChild(head);
      const rows = Math.max(p.codes_positive.length, p.codes_negative.length);
      const code = (v: Num | undefined) => (v === null || v === undefined ? '' : String(Math.round(v)));
      for (let r = 0; r < rows; r++) {
        const tr = el(doc, 'tr');
        tr.appendChild(el(doc, 'td', undefined, String(r)));
        const pos = p.codes_positive[r]?.[flat];
        const neg = p.codes_negative[r]?.[flat];
        const posCell = el(doc, 'td', undefined, code(pos));
        if (pos !== null && pos !== undefined && unique.includes(Math.round(pos))) {
          posCell.classList.add('xattr-lab-unique');
        }
        tr.appendChild(posCell);
        tr.appendChild(el(doc, 'td', undefined, code(neg)));
        table.appendChild(tr);
      }
      detail.appendChild(table);
    }
  );
  root.appendChild(grid);
  // The strongest edges between heads (upper triangle of the symmetric edge_scores).
  const pairs: Array<[number, number, number]> = [];
  p.edge_scores.forEach((row, a) =>
    (row ?? []).forEach((v, b) => {
      if (b > a && typeof v === 'number' && Number.isFinite(v) && v > 0) {
        pairs.push([a, b, v]);
      }
    })
  );
  pairs.sort((u, v) => v[2] - u[2]);
  const name = (i: number) => `${Math.floor(i / H)}.${i % H}`;
  root.appendChild(el(doc, 'div', 'xattr-lab-caption xattr-lab-edges-list',
    pairs.length ? `Top edges: ${pairs.slice(0, 8).map(([a, b, v]) => `${name(a)}–${name(b)} ${fmt(v)}`).join(', ')}` : 'No edges.'));
  const metrics = Object.entries(p.metrics ?? {});
  if (metrics.length) {
    root.appendChild(el(doc, 'div', 'xattr-lab-caption',
      `Metrics: ${metrics.map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : String(v)}`).join(', ')}`));
  }
  root.appendChild(detail);
  return root;
}

/** Render a payload (any kind), or a clear message when it cannot be drawn. */
export function renderResult(data: unknown, options: RenderOptions = {}): HTMLElement {
  const doc = options.document ?? document;
  const checked = checkPayload(data);
  if (!checked.ok) {
    return renderMessage(checked.message, { document: doc });
  }
  const palette = diverging(options.colourMap);
  const payload = checked.payload;
  let view: HTMLElement;
  switch (payload.kind) {
    case 'attribution':
      view = renderAttribution(doc, payload, palette);
      break;
    case 'flow':
      view = renderFlow(doc, payload, palette);
      break;
    case 'heads':
      view = renderHeads(doc, payload);
      break;
    case 'circuit':
      view = renderCircuit(doc, payload);
      break;
  }
  view.dataset.kind = payload.kind;
  return view;
}
