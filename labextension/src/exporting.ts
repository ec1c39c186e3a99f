/** Export a result: JSON (the payload), HTML (a self-contained static view), PNG. */
import { renderResult } from './render';

/** The payload as pretty JSON, without the (session-specific) widget model id. */
export function payloadJson(payload: Record<string, unknown>): string {
  const { model_id: _unused, ...rest } = payload;
  void _unused;
  return JSON.stringify(rest, null, 1);
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** `text` with the five HTML-special characters escaped (safe in text and quoted attributes). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, c => ESCAPES[c]);
}

/** A URL that runs script when followed (dropped from any attribute by `serialize`). */
const SCRIPT_URL = /^(?:java|vb)script:/i;

/**
 * Markup of a view built by render.ts (or a rendered markdown cell): elements, attributes and text only (no comments, no raw
 * text elements), every text and attribute value escaped, so no string from the data can open a
 * tag anywhere the file is pasted.
 */
export function serialize(node: Node): string {
  if (node.nodeType === 3) {
    return escapeHtml(node.textContent ?? '');
  }
  if (node.nodeType !== 1) {
    return '';
  }
  const element = node as Element;
  const tag = element.localName;
  if (!/^[a-z][a-z0-9-]*$/i.test(tag) || /^(script|style|iframe|object|embed|frame|base|meta|link)$/i.test(tag)) {
    return '';
  }
  const attributes = Array.from(element.attributes)
    .filter(a => /^[a-z][a-z0-9_:.-]*$/i.test(a.name) && !/^on/i.test(a.name) && !SCRIPT_URL.test(a.value.replace(/[\s\u0000-\u001f]+/g, '')))
    .map(a => ` ${a.name}="${escapeHtml(a.value)}"`)
    .join('');
  const children = Array.from(element.childNodes).map(serialize).join('');
  return `<${tag}${attributes}>${children}</${tag}>`;
}

/** The CSS rules of the xattr views found in the page's style sheets. */
export function xattrCss(doc: Document = document): string {
  const rules: string[] = [];
  for (const sheet of Array.from(doc.styleSheets)) {
    let list: CSSRuleList;
    try {
      list = sheet.cssRules;
    } catch {
      continue; // cross-origin sheet
    }
    for (const rule of Array.from(list)) {
      if (rule.cssText.includes('xattr-lab-')) {
        rules.push(rule.cssText);
      }
    }
  }
  return rules.join('\n');
}

/**
 * A standalone HTML document with the result drawn statically. The view is built with DOM APIs
 * and serialised by the browser, which escapes every text node and attribute value.
 */
export function resultHtml(payload: unknown, options: { colourMap?: string; document?: Document } = {}): string {
  const doc = options.document ?? document;
  const view = renderResult(payload, options);
  const title = doc.createElement('title');
  title.textContent = `xattr-lab ${(payload as { kind?: unknown })?.kind ?? 'result'}`;
  // Our own CSS (never data); '<' cannot occur in it, so it cannot close the style element.
  const css = (xattrCss(doc) || BASE_EXPORT_CSS).replace(/</g, '\\3C ');
  return (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8">' +
    serialize(title) +
    `<style>${css}</style>` +
    '</head><body class="xattr-lab-export">' +
    serialize(view) +
    '</body></html>\n'
  );
}

/** Minimal styling when the page's sheets are not readable (e.g. in tests). */
export const BASE_EXPORT_CSS = [
  '.xattr-lab-view{font-family:sans-serif;font-size:13px}',
  '.xattr-lab-token{display:inline-block;padding:1px 3px;margin:1px;border-radius:2px;white-space:pre}',
  '.xattr-lab-cell{width:26px;height:20px;text-align:center;font-size:10px}',
  '.xattr-lab-edge{stroke:#b2182b}',
  '.xattr-lab-node{fill:#444}'
].join('\n');

/** PNG bytes from a base64 `image/png` output. */
export function pngFromBase64(data: string): Uint8Array {
  const binary = atob(data.replace(/\s+/g, ''));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

/** Rasterise a rendered view (DOM + inline styles via SVG foreignObject) to a PNG blob. */
export async function viewToPng(view: HTMLElement, css: string): Promise<Blob> {
  const width = Math.max(200, Math.ceil(view.scrollWidth || view.getBoundingClientRect().width));
  const height = Math.max(50, Math.ceil(view.scrollHeight || view.getBoundingClientRect().height));
  const xhtml = new XMLSerializer().serializeToString(view);
  const style = new XMLSerializer().serializeToString(Object.assign(document.createElement('style'), { textContent: css }));
  const svgText =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<foreignObject width="100%" height="100%"><div xmlns="http://www.w3.org/1999/xhtml">${style}${xhtml}</div>` +
    '</foreignObject></svg>';
  const image = new Image();
  const url = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svgText);
  await new Promise<void>((resolve, reject) => {
    image.onload = () => resolve();
    image.onerror = () => reject(new Error('the browser could not rasterise the view'));
    image.src = url;
  });
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  if (!context) {
    throw new Error('no 2D canvas');
  }
  context.fillStyle = '#fff';
  context.fillRect(0, 0, width, height);
  context.drawImage(image, 0, 0);
  return new Promise((resolve, reject) =>
    canvas.toBlob(blob => (blob ? resolve(blob) : reject(new Error('PNG encoding failed'))), 'image/png')
  );
}

/** Offer `blob` as a download called `filename`. */
export function download(filename: string, blob: Blob): void {
  const url = URL.createObjectURL(blob);
  const anchor = document.createElement('a');
  anchor.href = url;
  anchor.download = filename;
  anchor.style.display = 'none';
  document.body.appendChild(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---------------------------------------------------------------------------- notebook -> offline HTML
/** The player's own `<script>` in an output's text/html (widgets/player.py writes it). */
export const PLAYER_TAG = /<script data-xattr-player="\d+">[\s\S]*?<\/script>/;
const MOUNT = '<script>window.xattrLabPlayer&&window.xattrLabPlayer.mountAll(document);</script>';

/** One cell as the notebook export reads it (index.ts builds these from the notebook panel). */
export interface ExportCell {
  type: string;
  source: string;
  /** Output bundles (mime type -> data) with their trust. */
  outputs?: Array<{ data: Record<string, unknown>; trusted: boolean; text?: string }>;
  /** The rendered markdown (a DOM node), serialised safely; else the source is shown as text. */
  rendered?: Node | null;
}

/** JSON that cannot close or break out of a `<script>` element (`<`, `>`, `&`, U+2028/9 as \uXXXX). */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

/** The xattr payload of an output bundle (any schema version), if it has one. */
export function bundlePayload(data: Record<string, unknown>): Record<string, unknown> | null {
  const key = Object.keys(data).find(k => k.startsWith('application/vnd.xattr.'));
  const value = key ? data[key] : null;
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

const asText = (value: unknown) => (Array.isArray(value) ? value.join('') : typeof value === 'string' ? value : '');

/**
 * One offline HTML page of a notebook: inputs and text outputs as escaped text, PNGs as data URLs,
 * every xattr output as a payload block drawn by the player, which is inlined once. The player is
 * taken from a trusted output's text/html (the kernel wrote it); with none, each xattr output is
 * drawn now and stored as static markup (no clicks), and the page says so. Saved HTML of outputs
 * is never copied, so nothing from the data runs.
 */
export function notebookHtml(cells: ExportCell[], options: { title?: string; document?: Document } = {}): string {
  const doc = options.document ?? document;
  let player = '';
  for (const cell of cells) {
    for (const output of cell.outputs ?? []) {
      const html = asText(output.data['text/html']);
      const found = output.trusted && bundlePayload(output.data) ? PLAYER_TAG.exec(html) : null;
      if (found && !player) {
        player = found[0];
      }
    }
  }
  const parts: string[] = [];
  for (const cell of cells) {
    if (cell.type === 'markdown' && cell.rendered) {
      parts.push(`<div class="xattr-nb-markdown">${serialize(cell.rendered)}</div>`);
      continue;
    }
    parts.push(`<pre class="xattr-nb-${cell.type === 'code' ? 'input' : 'text'}">${escapeHtml(cell.source)}</pre>`);
    for (const output of cell.outputs ?? []) {
      const payload = bundlePayload(output.data);
      const png = asText(output.data['image/png']).replace(/\s+/g, '');
      if (payload) {
        const { model_id: _unused, ...data } = payload;
        void _unused;
        parts.push(player
          ? `<div class="xattr-lab-player tex2jax_ignore mathjax_ignore"><script type="application/json" class="xattr-lab-payload">${scriptJson(data)}</script></div>${MOUNT}`
          : serialize(renderResult(data, { document: doc })));
      } else if (png && /^[A-Za-z0-9+/]+=*$/.test(png)) {
        parts.push(`<img class="xattr-nb-png" alt="output" src="data:image/png;base64,${png}">`);
      } else {
        const text = output.text ?? asText(output.data['text/plain']);
        if (text) {
          parts.push(`<pre class="xattr-nb-output">${escapeHtml(text)}</pre>`);
        }
      }
    }
  }
  const note = player ? '' : '<p class="xattr-nb-note">Static drawing: no trusted xattr-lab output carried the player; re-run the cells for clickable views.</p>';
  const css = (xattrCss(doc) || BASE_EXPORT_CSS).replace(/</g, '\\3C ') +
    '\npre.xattr-nb-input{background:#f5f5f5;padding:6px;white-space:pre-wrap}pre.xattr-nb-output{white-space:pre-wrap}';
  return (
    `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(options.title ?? 'xattr-lab notebook')}</title>` +
    `<style>${css}</style>${player}</head><body class="xattr-lab-export">${note}${parts.join('\n')}</body></html>\n`
  );
}
