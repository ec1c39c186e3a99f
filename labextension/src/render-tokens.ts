/** The token attribution view: a strip of tokens coloured by score. */
import { AttributionModel } from './model';
import { Doc, el, fmt, header, notes, tokenStrip } from './render-common';

export interface TokensView {
  root: HTMLElement;
  strip: HTMLElement;
}

/** `onToken(i, selected)`: a token was clicked. */
export function attributionView(
  doc: Doc, p: AttributionModel, palette: readonly string[], onToken?: (index: number, selected: boolean) => void
): TokensView {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-attribution');
  root.appendChild(header(doc, p.meta, 'Token attribution'));
  const readout = el(doc, 'div', 'xattr-lab-readout', 'Hover a token for its score; click to select it.');
  const strip = tokenStrip(doc, p.tokens, p.scores, palette, readout, i => `raw ${fmt(p.raw[i], true)}`, onToken);
  root.appendChild(strip);
  notes(doc, p.meta).forEach(note => root.appendChild(note));
  root.appendChild(readout);
  return { root, strip };
}
