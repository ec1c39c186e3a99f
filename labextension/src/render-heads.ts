/** The head grid (entropy per head) and the attention matrix of a clicked head. */
import { SEQUENTIAL, colourFor, extent } from './colours';
import { Cell, HeadsModel, LIMITS } from './model';
import { visibleControls } from './bidi';
import { Doc, cellGrid, count, el, fmt, header, hiddenNote, notes, svg, svgLabel, tokenLabel, tokenTitle } from './render-common';

/**
 * The stored cells of one head's attention map as an SVG heat map (queries as rows, keys as
 * columns; cells not stored are background). `query` >= 0 outlines that query's row.
 */
export function attentionMatrix(doc: Doc, cells: Cell[], tokens: string[], query = -1): SVGElement {
  const n = Math.min(tokens.length, LIMITS.tokens);
  const cell = Math.max(2, Math.min(18, Math.floor(360 / Math.max(n, 1))));
  const labels = n <= 48;
  const pad = labels ? 90 : 4;
  const size = pad + n * cell + 4;
  const out = svg(doc, 'svg', { class: 'xattr-lab-matrix', width: size, height: size, viewBox: `0 0 ${size} ${size}` });
  out.appendChild(svg(doc, 'rect', { x: pad, y: pad, width: n * cell, height: n * cell, fill: SEQUENTIAL[0], class: 'xattr-lab-matrix-bg' }));
  const [, hi] = extent(cells.map(c => c.w));
  for (const { q, k, w } of cells) {
    if (q >= n || k >= n) {
      continue;
    }
    const rect = svg(doc, 'rect', {
      x: pad + k * cell, y: pad + q * cell, width: cell, height: cell,
      fill: colourFor(w, 0, hi, SEQUENTIAL), class: 'xattr-lab-matrix-cell'
    });
    const title = svg(doc, 'title');
    title.textContent = `${tokenTitle(tokens[q] ?? q)} -> ${tokenTitle(tokens[k] ?? k)}: ${fmt(w)}`;
    rect.appendChild(title);
    out.appendChild(rect);
  }
  if (query >= 0 && query < n) {
    out.appendChild(svg(doc, 'rect', {
      x: pad, y: pad + query * cell, width: n * cell, height: cell, fill: 'none', stroke: '#000', class: 'xattr-lab-matrix-query'
    }));
  }
  if (labels) {
    tokens.slice(0, n).forEach((token, q) => {
      const text = tokenLabel(token);
      out.appendChild(svgLabel(doc, text, {
        x: pad - 4, y: pad + q * cell + cell * 0.75, 'text-anchor': 'end', class: 'xattr-lab-matrix-label'
      }));
      out.appendChild(svgLabel(doc, text, {
        x: 0, y: 0, 'text-anchor': 'start', class: 'xattr-lab-matrix-label',
        transform: `translate(${pad + q * cell + cell * 0.75}, ${pad - 4}) rotate(-90)`
      }));
    });
  }
  return out;
}

export interface HeadsView {
  root: HTMLElement;
  /** Outline query `index` in the shown matrix (-1: none), as a linked token strip asks. */
  showToken(index: number): void;
}

export function headsView(doc: Doc, p: HeadsModel): HeadsView {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-heads');
  root.appendChild(header(doc, p.meta,
    `Head statistics${p.texts > 1 ? ` (mean over ${p.texts} texts)` : ''}: attention entropy (nats)`));
  const [lo, hi] = extent(p.entropy.slice(0, LIMITS.layers).flatMap(row => row.slice(0, LIMITS.heads)));
  const detail = el(doc, 'div', 'xattr-lab-detail', 'Click a head for its attention matrix.');
  const pattern = (l: number, h: number) => {
    const rows = Array.isArray(p.patterns) ? p.patterns : [];
    const row = Array.isArray(rows[l]) ? rows[l] : [];
    return typeof row[h] === 'string' ? visibleControls(row[h] as string) : '';
  };
  let head: [number, number] | null = null;
  let token = -1;
  const draw = () => {
    if (!head) {
      return;
    }
    const [l, h] = head;
    detail.replaceChildren();
    detail.appendChild(el(doc, 'div', 'xattr-lab-detail-title',
      `Layer ${l}, head ${h}: entropy ${fmt(p.entropy[l]?.[h])}${pattern(l, h) ? `, ${pattern(l, h)}` : ''}`));
    if (!p.matrix) {
      detail.appendChild(el(doc, 'div', 'xattr-lab-note',
        'This result holds no attention maps (run with the live kernel for the matrix).'));
      return;
    }
    const { cells, hidden } = p.matrix(l, h);
    detail.appendChild(attentionMatrix(doc, cells, p.tokens, token));
    if (hidden) {
      detail.appendChild(hiddenNote(doc, `${count(hidden)} smaller weights hidden`));
    }
    if (p.tokens.length > LIMITS.tokens) {
      detail.appendChild(hiddenNote(doc, `${count(p.tokens.length - LIMITS.tokens)} more tokens hidden`));
    }
    if (p.mapNote) {
      detail.appendChild(el(doc, 'div', 'xattr-lab-caption', p.mapNote));
    }
  };
  root.appendChild(cellGrid(
    doc,
    p.entropy,
    v => colourFor(v, lo, hi, SEQUENTIAL),
    (l, h) => `layer ${l}, head ${h}: entropy ${fmt(p.entropy[l]?.[h])}${pattern(l, h) ? `, pattern ${pattern(l, h)}` : ''}`,
    (l, h) => {
      head = [l, h];
      draw();
    }
  ));
  const cone = p.cone.slice(0, LIMITS.layers + 1);
  if (cone.length) {
    root.appendChild(el(doc, 'div', 'xattr-lab-caption',
      `Cone index per layer${p.coneNormalised ? ' (normalised)' : ''}: ` + cone.map((v, l) => `L${l} ${fmt(v)}`).join(', ')));
  }
  notes(doc, p.meta).forEach(note => root.appendChild(note));
  root.appendChild(detail);
  return {
    root,
    showToken: index => {
      token = index;
      draw();
    }
  };
}
