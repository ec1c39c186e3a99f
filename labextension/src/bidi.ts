/**
 * Right-to-left text, displayed honestly. Tokens may hold Unicode bidi formatting characters
 * (marks, embeddings, overrides, isolates: ordinary in Hebrew, Arabic and Persian text). Every token
 * is drawn isolated, and those characters are shown as visible escapes ("⟨RLM⟩", "⟨RLO⟩", ...), so
 * no token can reorder its neighbours. The table mirrors kernel_ext/data/bidi-escapes.json, which
 * the Python views read (xattr_lab.widgets.core.visible_controls); a vitest test compares the two.
 */

/** [code point, visible escape] of each bidi formatting character (kernel_ext/data/bidi-escapes.json). */
export const BIDI_ESCAPES: ReadonlyArray<readonly [number, string]> = [
  [0x200e, '\u27e8LRM\u27e9'],
  [0x200f, '\u27e8RLM\u27e9'],
  [0x061c, '\u27e8ALM\u27e9'],
  [0x202a, '\u27e8LRE\u27e9'],
  [0x202b, '\u27e8RLE\u27e9'],
  [0x202c, '\u27e8PDF\u27e9'],
  [0x202d, '\u27e8LRO\u27e9'],
  [0x202e, '\u27e8RLO\u27e9'],
  [0x2066, '\u27e8LRI\u27e9'],
  [0x2067, '\u27e8RLI\u27e9'],
  [0x2068, '\u27e8FSI\u27e9'],
  [0x2069, '\u27e8PDI\u27e9']
];

const TABLE = new Map(BIDI_ESCAPES.map(([code, label]) => [String.fromCharCode(code), label]));
const CONTROLS = new RegExp(`[${BIDI_ESCAPES.map(([code]) => `\\u${code.toString(16).padStart(4, '0')}`).join('')}]`, 'g');

/** `text` with every bidi formatting character replaced by its visible escape; the rest kept. */
export function visibleControls(text: string): string {
  return text.replace(CONTROLS, c => TABLE.get(c) ?? c);
}

/**
 * `text` (a token, a label) for a plain-text line (a tooltip, a readout): bidi controls visible, and
 * wrapped in FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE, the plain-text form of `<bdi>`, so a
 * right-to-left token keeps its place among the words and numbers around it.
 */
export function isolatedText(text: unknown): string {
  return `\u2068${visibleControls(typeof text === 'string' ? text : String(text))}\u2069`;
}

/**
 * Isolate an element that draws one token: `unicode-bidi: isolate` (HTML and SVG) and, for HTML,
 * `dir="auto"` (the token's own first strong character sets its direction). Returns the element.
 */
export function isolate<T extends Element>(node: T): T {
  (node as unknown as ElementCSSInlineStyle).style?.setProperty('unicode-bidi', 'isolate');
  if (node.namespaceURI === 'http://www.w3.org/1999/xhtml') {
    node.setAttribute('dir', 'auto');
  }
  return node;
}
