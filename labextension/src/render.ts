/**
 * Draw an xattr result from its saved payload (v1 or v2, any kind), in the browser, with no kernel.
 * `renderResult` is the entry point (the JupyterLab renderer and the self-contained HTML player
 * use it): it checks the payload (payload.ts: read-v1.ts, read-v2.ts) and draws the view of its
 * kind (render-tokens, render-flow, render-heads, render-circuit, render-graph, render-explorer), or a message.
 * It never throws: untrusted saved output is data. Pure DOM: strings reach the page through
 * `textContent` / `setAttribute` only (render-common.ts).
 */
import { diverging } from './colours';
import { readPayload } from './payload';
import { RenderOptions, renderMessage } from './render-common';
import { circuitView } from './render-circuit';
import { explorerView } from './render-explorer';
import { flowView } from './render-flow';
import { patchingView } from './render-graph';
import { headsView } from './render-heads';
import { attributionView } from './render-tokens';

export type { RenderOptions } from './render-common';
export { convergenceBadge, fmt, renderMessage, shorten, tokenLabel, tokenStrip } from './render-common';
export { MAX_FLOW_EDGES, nodeThroughput, pathsThrough, topEdges } from './render-flow';
export { attentionMatrix } from './render-heads';
export { faithfulnessAt, faithfulnessText } from './render-graph';
export { LIMITS } from './model';

/** Render a payload (any kind, v1 or v2), or a clear message when it cannot be drawn. */
export function renderResult(data: unknown, options: RenderOptions = {}): HTMLElement {
  const doc = options.document ?? document;
  try {
    const read = readPayload(data);
    if (!read.ok) {
      return renderMessage(read.message, { document: doc });
    }
    const palette = diverging(options.colourMap);
    const model = read.model;
    let view: HTMLElement;
    switch (model.kind) {
      case 'attribution':
        view = attributionView(doc, model, palette).root;
        break;
      case 'flow':
        view = flowView(doc, model, palette).root;
        break;
      case 'heads':
        view = headsView(doc, model).root;
        break;
      case 'circuit':
        view = circuitView(doc, model);
        break;
      case 'patching-circuit':
        view = patchingView(doc, model, palette);
        break;
      case 'explorer':
        view = explorerView(doc, model, palette);
        break;
    }
    view.dataset.kind = model.kind;
    return view;
  } catch (error) {
    // a last guard: nothing in a payload may break the notebook
    const why = error instanceof Error ? error.name : 'error';
    return renderMessage(`This xattr-lab output could not be drawn (${why}).`, { document: doc });
  }
}
