/**
 * The renderer for xattr results: `application/vnd.xattr.v2+json` (the display payload notebooks save,
 * kernel_ext/payload.py) and `application/vnd.xattr.v1+json` (the full-precision `Result.to_dict()`).
 *
 * When the notebook's ipywidgets manager holds the result's live model (`model_id`) with an open comm
 * to the kernel, it mounts that widget through the notebook's own widget renderer factory (full kernel
 * interaction). Otherwise it draws the result from its JSON (see render.ts): a model restored from
 * widget state saved in the notebook has no kernel behind it (`comm_live` false) and would only show
 * a disconnected copy, so it is never mounted. The view upgrades to the live widget when a live
 * model appears (kernel started, state restored from the kernel) and goes back to the JSON drawing
 * when the mounted model's comm closes (kernel shut down or restarted).
 */
import type { ISessionContext } from '@jupyterlab/apputils';
import type { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { PanelLayout, Widget } from '@lumino/widgets';

import { MIME_TYPES, WIDGET_MIME_TYPE, xattrPayload } from './payload';
import { renderResult } from './render';

/** Rank in the rendermime registry: below the widget renderer's -10, so this one is preferred. */
export const RANK = -20;

/** Where a renderer finds its notebook: the rendermime holding the widget factory, and the session. */
export interface LiveContext {
  rendermime: IRenderMimeRegistry;
  sessionContext?: ISessionContext;
}

export interface RendererHost {
  /** The live context of the notebook showing `node` (null when unknown, e.g. a detached view). */
  contextFor(node: HTMLElement): LiveContext | null;
  /** Current diverging colour map (settings). */
  colourMap(): string;
}

/** The part of an ipywidgets WidgetModel used here (@jupyter-widgets/base). */
interface WidgetModelLike {
  /** True while the model's comm to the kernel is open (false for state restored from the notebook). */
  comm_live?: boolean;
  on?(event: string, callback: () => void, context?: unknown): void;
  off?(event: string, callback: () => void, context?: unknown): void;
}

interface WidgetManagerLike {
  has_model(modelId: string): boolean;
  get_model?(modelId: string): Promise<WidgetModelLike | undefined> | WidgetModelLike | undefined;
  /** Emitted when the manager restored widget state (from the kernel or the notebook). */
  restored?: { connect(slot: () => void, thisArg?: unknown): boolean; disconnect(slot: () => void, thisArg?: unknown): boolean };
}

/** The manager's model `modelId` if it is backed by a live kernel comm, else null. */
export async function liveModel(manager: WidgetManagerLike, modelId: string): Promise<WidgetModelLike | null> {
  if (!manager.has_model(modelId) || typeof manager.get_model !== 'function') {
    return null;
  }
  try {
    const model = await manager.get_model(modelId);
    return model && model.comm_live === true ? model : null;
  } catch {
    return null;
  }
}

const sleep = (ms: number) => new Promise<null>(resolve => setTimeout(() => resolve(null), ms));

/**
 * The widget manager behind `rendermime`'s widget renderer factory, if it has one yet.
 * (The factory's renderer keeps its manager in a PromiseDelegate `_manager`; before a kernel is
 * ready, JupyterLab's global factory has none and the promise never resolves.)
 */
async function widgetRenderer(
  rendermime: IRenderMimeRegistry,
  options: IRenderMime.IRendererOptions
): Promise<{ renderer: IRenderMime.IRenderer; manager: WidgetManagerLike } | null> {
  const factory = rendermime.getFactory(WIDGET_MIME_TYPE);
  if (!factory) {
    return null;
  }
  const renderer = factory.createRenderer({ ...options, mimeType: WIDGET_MIME_TYPE });
  const delegate = (renderer as unknown as { _manager?: { promise?: Promise<unknown> } })._manager;
  const manager = delegate?.promise ? ((await Promise.race([delegate.promise, sleep(50)])) as WidgetManagerLike | null) : null;
  if (!manager || typeof manager.has_model !== 'function') {
    renderer.dispose();
    return null;
  }
  return { renderer, manager };
}

export class XattrRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(
    private readonly _options: IRenderMime.IRendererOptions,
    private readonly _host: RendererHost,
    private _context: LiveContext | null = null
  ) {
    super();
    this.addClass('xattr-lab-renderer');
    this.layout = new PanelLayout();
  }

  /** "live" (the ipywidget is mounted), "static" (drawn from JSON) or "" before rendering. */
  get mode(): string {
    return this.node.dataset.xattrMode ?? '';
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this._model = model;
    const data = xattrPayload(model.data) as Record<string, unknown> | undefined;
    const modelId = typeof data?.model_id === 'string' && data.model_id ? data.model_id : null;
    const trustedId = model.trusted ? modelId : null; // untrusted outputs never mount code-backed widgets
    if (this.mode === 'live' && trustedId !== null && trustedId === this._modelId) {
      return; // an update of this output (e.g. the Explorer's views landed): the mounted widget shows it already
    }
    this._modelId = trustedId;
    if (this._modelId && this._context && (await this._tryLive())) {
      return;
    }
    this._drawStatic(data);
    this._watch();
  }

  protected onAfterAttach(): void {
    if (!this._context) {
      this._context = this._host.contextFor(this.node);
      this._watch();
      void this._tryLive();
    }
  }

  dispose(): void {
    this._stopWatching();
    this._liveCleanup?.();
    super.dispose();
  }

  private _drawStatic(data: unknown): void {
    const layout = this.layout as PanelLayout;
    while (layout.widgets.length) {
      layout.widgets[0].dispose();
    }
    const holder = new Widget();
    holder.addClass('xattr-lab-static');
    const view = renderResult(data, { colourMap: this._host.colourMap() });
    holder.node.appendChild(view);
    if (this._modelId !== null || (data as { model_id?: unknown } | undefined)?.model_id) {
      const note = document.createElement('div');
      note.className = 'xattr-lab-static-note';
      note.textContent = 'Drawn from the saved result (no live widget): run the cell to interact with the kernel.';
      holder.node.appendChild(note);
    }
    layout.addWidget(holder);
    this.node.dataset.xattrMode = 'static';
  }

  /** Mount the live widget if the notebook's widget manager has the model; true when mounted. */
  private async _tryLive(): Promise<boolean> {
    if (!this._modelId || !this._context || this.mode === 'live' || this.isDisposed || this._trying) {
      return false;
    }
    this._trying = true;
    try {
      const found = await widgetRenderer(this._context.rendermime, this._options);
      if (!found) {
        return false;
      }
      const live = await liveModel(found.manager, this._modelId);
      if (!live || this.isDisposed) {
        found.renderer.dispose();
        this._followRestore(found.manager);
        return false;
      }
      const bundle = (this._model?.data[WIDGET_MIME_TYPE] as Record<string, unknown> | undefined) ?? {
        version_major: 2,
        version_minor: 0
      };
      const widgetModel: IRenderMime.IMimeModel = {
        data: { [WIDGET_MIME_TYPE]: { ...bundle, model_id: this._modelId } },
        metadata: {},
        trusted: true,
        setData: () => undefined
      };
      await found.renderer.renderModel(widgetModel);
      if (this.isDisposed) {
        found.renderer.dispose();
        return false;
      }
      const layout = this.layout as PanelLayout;
      while (layout.widgets.length) {
        layout.widgets[0].dispose();
      }
      found.renderer.addClass('xattr-lab-live');
      layout.addWidget(found.renderer);
      this.node.dataset.xattrMode = 'live';
      this._stopWatching();
      this._followComm(live);
      return true;
    } catch (error) {
      console.warn('xattr-lab: could not mount the live widget; showing the saved result', error);
      return false;
    } finally {
      this._trying = false;
    }
  }

  /** Retry the live widget when the kernel changes or goes idle (state restored, cell re-run). */
  private _watch(): void {
    const session = this._context?.sessionContext;
    if (!session || !this._modelId || this._watching || this.mode === 'live') {
      return;
    }
    this._watching = true;
    const retry = () => void this._tryLive();
    const onStatus = (_: ISessionContext, status: string) => {
      if (status === 'idle') {
        retry();
      }
    };
    session.kernelChanged.connect(retry);
    session.statusChanged.connect(onStatus);
    this._cleanups.push(() => {
      session.kernelChanged.disconnect(retry);
      session.statusChanged.disconnect(onStatus);
    });
  }

  /** After a page reload the manager restores the kernel's widgets a while after connecting. */
  private _followRestore(manager: WidgetManagerLike): void {
    if (!manager.restored || this._restoreManagers.has(manager)) {
      return;
    }
    this._restoreManagers.add(manager);
    const retry = () => void this._tryLive();
    manager.restored.connect(retry, this);
    this._cleanups.push(() => manager.restored?.disconnect(retry, this));
  }

  /** Back to the JSON drawing when the mounted model loses its kernel (comm closed). */
  private _followComm(model: WidgetModelLike): void {
    if (typeof model.on !== 'function') {
      return;
    }
    const update = () => {
      if (model.comm_live !== true && this.mode === 'live' && !this.isDisposed) {
        model.off?.('comm_live_update', update, this);
        this._drawStatic(xattrPayload(this._model?.data));
        this._watch();
      }
    };
    model.on('comm_live_update', update, this);
    this._liveCleanup = () => model.off?.('comm_live_update', update, this);
  }

  private _stopWatching(): void {
    this._cleanups.splice(0).forEach(cleanup => cleanup());
    this._restoreManagers.clear();
    this._watching = false;
  }

  private _liveCleanup: (() => void) | null = null;
  private _restoreManagers = new Set<WidgetManagerLike>();
  private _model: IRenderMime.IMimeModel | null = null;
  private _modelId: string | null = null;
  private _trying = false;
  private _watching = false;
  private _cleanups: Array<() => void> = [];
}

/** A rendermime factory for the xattr MIME type; `context` pins it to one notebook. */
export function rendererFactory(host: RendererHost, context: LiveContext | null = null): IRenderMime.IRendererFactory {
  return {
    safe: true, // pure DOM, no scripts, no HTML from data; live widgets only for trusted outputs
    mimeTypes: MIME_TYPES, // v2 (what the views draw) and v1 (older notebooks)
    defaultRank: RANK,
    createRenderer: options => new XattrRenderer(options, host, context)
  };
}
