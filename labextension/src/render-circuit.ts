/** The circuit view: node scores per head, the strongest head pairs, the SAE codes of a clicked head. */
import { visibleControls } from './bidi';
import { SEQUENTIAL, colourFor, extent } from './colours';
import { CircuitModel, LIMITS, Num } from './model';
import { Doc, cellGrid, count, el, fmt, header, hiddenNote, notes } from './render-common';

export function circuitView(doc: Doc, p: CircuitModel): HTMLElement {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-circuit');
  const [nPos, nNeg] = p.prompts;
  root.appendChild(header(doc, p.meta, `SAE circuit: node scores (${nPos} positive, ${nNeg} negative prompts)`));
  const H = p.heads;
  const [, hi] = extent(p.nodeScores.slice(0, LIMITS.layers).flatMap(row => row.slice(0, LIMITS.heads)));
  const detail = el(doc, 'div', 'xattr-lab-detail', 'Click a head for its SAE codes in positives vs negatives.');
  const grid = cellGrid(
    doc,
    p.nodeScores,
    v => colourFor(v, 0, hi, SEQUENTIAL),
    (l, h) => `layer ${l}, head ${h}: node score ${fmt(p.nodeScores[l]?.[h])}`,
    (l, h) => {
      const flat = l * H + h;
      detail.replaceChildren();
      detail.appendChild(el(doc, 'div', 'xattr-lab-detail-title', `Head ${l}.${h}: node score ${fmt(p.nodeScores[l]?.[h])}`));
      const unique = p.unique(flat);
      const listed = unique.slice(0, LIMITS.entries);
      detail.appendChild(el(doc, 'div', 'xattr-lab-codes-unique',
        `codes only in positives: ${listed.length ? listed.join(', ') : 'none'}` +
        (unique.length > listed.length ? ` (${count(unique.length - listed.length)} more hidden)` : '')));
      const table = el(doc, 'table', 'xattr-lab-code-table');
      const head = el(doc, 'tr');
      ['example', 'positive code', 'negative code'].forEach(t => head.appendChild(el(doc, 'th', undefined, t)));
      table.appendChild(head);
      const rows = Math.max(p.examples[0], p.examples[1]);
      const code = (v: Num) => (v === null ? '' : String(Math.round(v)));
      const special = new Set(listed);
      for (let r = 0; r < Math.min(rows, LIMITS.codeRows); r++) {
        const tr = el(doc, 'tr');
        tr.appendChild(el(doc, 'td', undefined, String(r)));
        const pos = p.code(true, r, flat);
        const posCell = el(doc, 'td', undefined, code(pos));
        if (pos !== null && special.has(Math.round(pos))) {
          posCell.classList.add('xattr-lab-unique');
        }
        tr.appendChild(posCell);
        tr.appendChild(el(doc, 'td', undefined, code(p.code(false, r, flat))));
        table.appendChild(tr);
      }
      detail.appendChild(table);
      if (rows > LIMITS.codeRows) {
        detail.appendChild(hiddenNote(doc, `${count(rows - LIMITS.codeRows)} more examples hidden`));
      }
    }
  );
  root.appendChild(grid);
  const name = (i: number) => `${Math.floor(i / H)}.${i % H}`;
  const top = p.pairs.slice(0, 8);
  root.appendChild(el(doc, 'div', 'xattr-lab-caption xattr-lab-edges-list',
    top.length ? `Top edges: ${top.map(([a, b, v]) => `${name(a)}–${name(b)} ${fmt(v)}`).join(', ')}` : 'No edges.'));
  const hidden = p.hiddenPairs + (p.pairs.length - top.length);
  if (hidden) {
    root.appendChild(hiddenNote(doc, `${count(hidden)} weaker edges hidden`));
  }
  if (p.metrics.length) {
    root.appendChild(el(doc, 'div', 'xattr-lab-caption',
      visibleControls(`Metrics: ${p.metrics.map(([k, v]) => `${k} ${typeof v === 'number' ? fmt(v) : v}`).join(', ')}`)));
  }
  notes(doc, p.meta).forEach(note => root.appendChild(note));
  root.appendChild(detail);
  return root;
}
