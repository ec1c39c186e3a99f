/**
 * The xattr-lab player: draws saved xattr results in any page that runs scripts (Notebook 7 or VS Code
 * or Colab without the extension, nbconvert/nbviewer HTML, `xattr export` files) with the renderer of
 * the JupyterLab extension (render.ts): no kernel, no network; clicks are answered from the data.
 *
 * A result travels as `<div class="xattr-lab-player">` holding a `<script type="application/json"
 * class="xattr-lab-payload">` (the payload, with `<`, `>`, `&` written as \u003c, \u003e, \u0026)
 * and a text fallback. esbuild bundles this file into one IIFE
 * (widgets/static/xattr-player.js, `npm run build:player`); the Python side wraps it in a
 * guard so a page sets the global `xattrLabPlayer` up once however many outputs carry it, and every
 * output then calls `xattrLabPlayer.mountAll()`, which draws the blocks not drawn yet.
 */
import css from '../style/base.css';
import { renderMessage, renderResult } from './render';

/** Bumped when the markup contract changes; a newer player replaces an older one on the page. */
export const PLAYER_VERSION = 1;
export const PAYLOAD_SELECTOR = 'script.xattr-lab-payload[type="application/json"]';
const DRAWN = 'data-xattr-drawn';
const STYLE_ID = 'xattr-lab-player-style';

export interface Player {
  version: number;
  /** Draw every payload block under `root` not drawn yet; returns how many were drawn. */
  mountAll(root?: ParentNode): number;
  /** Draw one payload block after itself (null when it was drawn before). */
  mount(script: Element): HTMLElement | null;
}

/** Our stylesheet, once per document (the views also carry their data colours inline). */
export function ensureStyle(doc: Document): void {
  if (doc.getElementById(STYLE_ID)) {
    return;
  }
  const style = doc.createElement('style');
  style.id = STYLE_ID;
  style.textContent = css;
  (doc.head ?? doc.documentElement).appendChild(style);
}

/** Parse a payload block; a message instead of a payload when it is not JSON. */
export function readPayload(script: Element): { data: unknown } | { error: string } {
  try {
    return { data: JSON.parse(script.textContent ?? '') };
  } catch (error) {
    return { error: `This xattr-lab output is damaged: its data is not JSON (${String(error).slice(0, 120)}).` };
  }
}

/** Draw one payload block into a new element placed right after it; its container's fallback goes. */
export function mount(script: Element): HTMLElement | null {
  if (script.hasAttribute(DRAWN)) {
    return null;
  }
  script.setAttribute(DRAWN, '1');
  const doc = script.ownerDocument;
  ensureStyle(doc);
  const read = readPayload(script);
  let view: HTMLElement;
  try {
    view = 'error' in read ? renderMessage(read.error, { document: doc }) : renderResult(read.data, { document: doc });
  } catch (error) {
    view = renderMessage(`This xattr-lab output could not be drawn: ${String(error).slice(0, 200)}`, { document: doc });
  }
  // a page's own MathJax (nbconvert's, a host page's) skips these subtrees: token text stays text
  view.classList.add('xattr-lab-player-view', 'tex2jax_ignore', 'mathjax_ignore');
  script.parentNode?.insertBefore(view, script.nextSibling);
  script.parentElement?.querySelectorAll(':scope > .xattr-lab-fallback').forEach(node => node.remove());
  return view;
}

/** Draw every block under `root` not drawn yet (each output's script calls this). */
export function mountAll(root: ParentNode = document): number {
  let drawn = 0;
  root.querySelectorAll(PAYLOAD_SELECTOR).forEach(script => {
    if (mount(script)) {
      drawn += 1;
    }
  });
  return drawn;
}

/** Install the global player (once per page; a newer version replaces an older one). */
export function install(scope: { xattrLabPlayer?: Player }): Player {
  const current = scope.xattrLabPlayer;
  if (current && typeof current.mountAll === 'function' && current.version >= PLAYER_VERSION) {
    return current;
  }
  const player: Player = { version: PLAYER_VERSION, mountAll, mount };
  scope.xattrLabPlayer = player;
  return player;
}

if (typeof window !== 'undefined' && typeof document !== 'undefined') {
  install(window as unknown as { xattrLabPlayer?: Player });
}
