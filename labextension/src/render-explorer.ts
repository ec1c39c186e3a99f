/**
 * A saved Explorer: its token strip, flow and head grid, linked as in the kernel. Clicking a token
 * in the strip selects it in the flow (its paths) and outlines its row in the attention matrix;
 * clicking an input node of the flow selects the token in the strip. No kernel needed.
 */
import { ExplorerModel } from './model';
import { isolate, visibleControls } from './bidi';
import { Doc, el, header, selectToken } from './render-common';
import { FlowView, flowView } from './render-flow';
import { HeadsView, headsView } from './render-heads';
import { attributionView } from './render-tokens';

export function explorerView(doc: Doc, p: ExplorerModel, palette: readonly string[]): HTMLElement {
  const root = el(doc, 'div', 'xattr-lab-view xattr-lab-explorer');
  root.appendChild(header(doc, p.meta, 'Explorer (saved): linked token strip, flow and heads'));
  if (p.text) {
    root.appendChild(isolate(el(doc, 'div', 'xattr-lab-caption xattr-lab-explorer-text', visibleControls(p.text.slice(0, 2000)))));
  }
  let flow: FlowView | null = null;
  let heads: HeadsView | null = null;
  let strip: HTMLElement | null = null;
  const link = (index: number, from: 'strip' | 'flow') => {
    if (from === 'strip') {
      flow?.setInput(index);
    } else if (strip) {
      selectToken(strip, index);
    }
    heads?.showToken(index);
  };
  if (p.strip) {
    const view = attributionView(doc, p.strip, palette, (index, selected) => link(selected ? index : -1, 'strip'));
    strip = view.strip;
    root.appendChild(view.root);
  }
  if (p.flow) {
    flow = flowView(doc, p.flow, palette, index => link(index, 'flow'));
    root.appendChild(flow.root);
  }
  if (p.heads) {
    heads = headsView(doc, p.heads);
    root.appendChild(heads.root);
  }
  if (!p.strip && !p.flow && !p.heads) {
    root.appendChild(el(doc, 'div', 'xattr-lab-note', 'This Explorer was saved before any view was computed.'));
  }
  return root;
}
