/**
 * Building blocks of the views (render-*.ts): elements, labels, the header, the token strip, cell
 * grids. Pure DOM: every string from a payload reaches the page through `textContent` or
 * `setAttribute` (never innerHTML), so token strings such as `<img src=x onerror=...>` stay text.
 * Interaction is wired with addEventListener on elements we create (no inline handlers). Every token
 * is drawn isolated with its bidi controls visible (bidi.ts): `tokenLabel`, `tokenNode`, `line`.
 */
import { RULES } from './rules';
import { isolate, isolatedText, visibleControls } from './bidi';
import { colourFor, maxAbs, textColourFor } from './colours';
import { LIMITS, Meta, Num } from './model';

export interface RenderOptions {
  /** Diverging colour map for signed scores ("RdBu", "PiYG", ...; "_r" reverses). */
  colourMap?: string;
  /** The document to create elements in (tests pass jsdom's). */
  document?: Document;
}

export const SVG_NS = 'http://www.w3.org/2000/svg';

export type Doc = Document;

export function el<K extends keyof HTMLElementTagNameMap>(
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

export function svg(doc: Doc, tag: string, attrs: Record<string, string | number> = {}): SVGElement {
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
  // Small values as plain decimals with 3 significant digits ("0.000123"), which read at a glance;
  // exponents only where a decimal would be too long to scan (below 1e-7, 1e5 and above).
  const text = abs !== 0 && (abs < 1e-7 || abs >= 1e5) ? value.toExponential(2)
    : abs !== 0 && abs < 1e-3 ? value.toFixed(2 - Math.floor(Math.log10(abs))) : value.toFixed(4);
  return signed && value >= 0 ? `+${text}` : text;
}

/** `text` with every `from` replaced by `to`. */
const replaceAll = (text: string, from: string, to: string) => text.split(from).join(to);

/**
 * Display label of a model token, by the token rules of display-rules.json (rules.ts): a leading
 * word-start mark ("Ġ", "▁") dropped and the others made spaces, a leading "##" dropped, newlines and
 * tabs as "\n", "\t", a label of whitespace alone as one blank mark (U+2423) per character; bidi marks, embeddings,
 * overrides and isolates as visible escapes ("⟨RLM⟩", bidi.ts). The one place a token becomes a label
 * (xattr_widgets.core.pretty_token is its Python twin).
 */
export function tokenLabel(token: unknown): string {
  const rules = RULES.tokens;
  let label = typeof token === 'string' ? token : String(token);
  for (const mark of rules.word_start_marks) {
    if (label.startsWith(mark) && Array.from(label).length > 1) {
      label = label.slice(mark.length);
    }
    label = replaceAll(label, mark, ' ');
  }
  const prefix = rules.subword_prefix;
  if (label.startsWith(prefix) && Array.from(label).length > Array.from(prefix).length) {
    label = label.slice(prefix.length);
  }
  for (const [from, to] of rules.escapes) {
    label = replaceAll(label, from, to);
  }
  if (label.trim() === '') {
    label = rules.blank.repeat(Math.max(1, Array.from(label).length));
  }
  return visibleControls(label);
}

/** A token (as the model holds it) inside a line of text: a `<bdi>` element, bidi controls visible. */
export function tokenNode(doc: Doc, token: unknown): HTMLElement {
  return isolate(el(doc, 'bdi', 'xattr-lab-tok', visibleControls(typeof token === 'string' ? token : String(token))));
}

/** A piece of a line: plain text, or `{ token }` drawn by `tokenNode`. */
export type Part = string | { token: unknown };

/** Fill `node` with a line of text whose tokens are isolated elements (textContent reads as the plain line). */
export function line(doc: Doc, node: HTMLElement, parts: Part[]): HTMLElement {
  node.replaceChildren(...parts.map(part => (typeof part === 'string' ? doc.createTextNode(part) : tokenNode(doc, part.token))));
  return node;
}

/** A token in a tooltip (a title): plain text, bidi controls visible, isolated by FSI ... PDI. */
export const tokenTitle = isolatedText;

/** `text` cut to `max` characters with an ellipsis (SVG labels; the full text goes in a title). */
export function shorten(text: string, max = RULES.tokens.short_label): string {
  const chars = Array.from(text);
  return chars.length > max ? chars.slice(0, max - 1).join('') + '\u2026' : text;
}

/** An SVG text label: shortened, with the full string as its tooltip. */
export function svgLabel(doc: Doc, full: string, attrs: Record<string, string | number>): SVGElement {
  const label = isolate(svg(doc, 'text', attrs));
  label.textContent = shorten(full);
  const title = svg(doc, 'title');
  title.textContent = full;
  label.appendChild(title);
  return label;
}

/** "N more hidden" notes (and what the payload says it left out). */
export function hiddenNote(doc: Doc, text: string): HTMLElement {
  const note = el(doc, 'div', 'xattr-lab-hidden', text);
  note.setAttribute('role', 'note');
  return note;
}

export const count = (n: number) => n.toLocaleString('en-US');

export function header(doc: Doc, meta: Meta, title: string): HTMLElement {
  const head = el(doc, 'div', 'xattr-lab-header');
  head.appendChild(el(doc, 'span', 'xattr-lab-title', title));
  const bits: Part[][] = [];
  if (meta.model) {
    bits.push(['model ', { token: meta.model }]);
  }
  if (meta.method) {
    bits.push(['method ', { token: meta.method }]);
  }
  if (meta.target_label) {
    bits.push(['target ', { token: meta.target_label }]);
  }
  if (bits.length) {
    head.appendChild(line(doc, el(doc, 'span', 'xattr-lab-meta'), bits.flatMap((bit, i) => (i ? [' \u00b7 ', ...bit] : bit))));
  }
  const top = [...(meta.prediction ?? [])]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([name, p]): Part[] => [{ token: name }, ` ${p.toFixed(3)}`]);
  if (top.length) {
    head.appendChild(line(doc, el(doc, 'span', 'xattr-lab-prediction'), ['prediction: ', ...top.flatMap((t, i) => (i ? [', ', ...t] : t))]));
  }
  const warning = badge(doc, meta.options);
  if (warning) {
    head.appendChild(warning);
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
 * value on hover (title and the readout line), click toggles a token's selection. At most
 * LIMITS.tokens tokens are drawn; a note says how many more there are.
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
  const shown = tokens.slice(0, LIMITS.tokens);
  const bound = maxAbs(scores.slice(0, LIMITS.tokens));
  shown.forEach((token, index) => {
    const value = scores[index] ?? null;
    const span = isolate(el(doc, 'span', 'xattr-lab-token', tokenLabel(token)));
    const background = colourFor(value, -bound, bound, palette);
    span.style.backgroundColor = background;
    span.style.color = textColourFor(background);
    span.dataset.index = String(index);
    const rest = `  score ${fmt(value, true)}${extra ? '  ' + extra(index) : ''}`;
    span.title = tokenTitle(token) + rest;
    span.addEventListener('mouseenter', () => {
      line(doc, readout, [`#${index} `, { token }, rest]);
    });
    span.addEventListener('click', () => {
      const selected = !span.classList.contains('xattr-lab-selected');
      selectToken(strip, selected ? index : -1);
      line(doc, readout, selected ? [`selected #${index} `, { token }, rest] : []);
      onClick?.(index, selected);
    });
    strip.appendChild(span);
  });
  if (tokens.length > shown.length) {
    strip.appendChild(hiddenNote(doc, `${count(tokens.length - shown.length)} more tokens hidden`));
  }
  return strip;
}

/** Mark token `index` of a strip as selected (-1: none), without firing its handlers. */
export function selectToken(strip: HTMLElement, index: number): void {
  strip.querySelectorAll('.xattr-lab-token.xattr-lab-selected').forEach(other => other.classList.remove('xattr-lab-selected'));
  strip.querySelector(`.xattr-lab-token[data-index="${index}"]`)?.classList.add('xattr-lab-selected');
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

export function badge(doc: Doc, options: unknown): HTMLElement | null {
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

/**
 * An (rows x cols) grid of coloured cells (at most LIMITS.layers x LIMITS.heads; a note says what
 * is hidden); `onPick(r, c)` on click.
 */
export function cellGrid(
  doc: Doc,
  values: Num[][],
  colour: (v: Num) => string,
  describe: (r: number, c: number) => string,
  onPick: (r: number, c: number, cell: HTMLElement) => void,
  rowLabel = (r: number) => `L${r}`,
  colLabel = (c: number) => `H${c}`
): HTMLElement {
  const box = el(doc, 'div', 'xattr-lab-grid-box');
  const table = el(doc, 'table', 'xattr-lab-grid');
  const shownRows = values.slice(0, LIMITS.layers);
  const allCols = Math.max(0, ...shownRows.map(row => row.length));
  const cols = Math.min(allCols, LIMITS.heads);
  const head = el(doc, 'tr');
  head.appendChild(el(doc, 'th'));
  for (let c = 0; c < cols; c++) {
    head.appendChild(el(doc, 'th', undefined, colLabel(c)));
  }
  table.appendChild(head);
  shownRows.forEach((row, r) => {
    const tr = el(doc, 'tr');
    tr.appendChild(el(doc, 'th', undefined, rowLabel(r)));
    for (let c = 0; c < cols; c++) {
      const value = row[c] ?? null;
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
  box.appendChild(table);
  const hidden = [values.length > shownRows.length ? `${count(values.length - shownRows.length)} more layers` : '',
    allCols > cols ? `${count(allCols - cols)} more heads` : ''].filter(Boolean);
  if (hidden.length) {
    box.appendChild(hiddenNote(doc, `${hidden.join(' and ')} hidden`));
  }
  return box;
}

/** The notes of a model's meta (what the payload left out), one per line. */
export function notes(doc: Doc, meta: Meta): HTMLElement[] {
  return meta.notes.map(text => hiddenNote(doc, text));
}
