/**
 * xattr-lab JupyterLab extension: the renderer of xattr results, `application/vnd.xattr.v2+json` and
 * `application/vnd.xattr.v1+json` (added to each notebook's rendermime with a rank that beats the
 * widget renderer), the commands "Explain selected text" and "Export result as HTML/PNG/JSON", and
 * settings pushed to the kernel's `%xattr` magic.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ISessionContext, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { ExportCell, download, notebookHtml, payloadJson, pngFromBase64, resultHtml, viewToPng, xattrCss } from './exporting';
import { MagicDefaults, explainCode, settingsCode } from './kernelcode';
import { xattrPayload } from './payload';
import { renderResult } from './render';
import { LiveContext, RANK, RendererHost, rendererFactory } from './renderer';

export { checkPayload } from './payload';
export { renderResult } from './render';

const PLUGIN_ID = 'xattr-lab:plugin';

export namespace CommandIDs {
  export const explain = 'xattr-lab:explain-selection';
  export const exportHtml = 'xattr-lab:export-html';
  export const exportPng = 'xattr-lab:export-png';
  export const exportJson = 'xattr-lab:export-json';
  export const exportNotebook = 'xattr-lab:export-notebook-html';
}

const DEFAULTS: MagicDefaults = { model: 'minilm-rt', method: 'attention', colour_map: 'RdBu' };

function readSettings(settings: ISettingRegistry.ISettings | null): MagicDefaults {
  if (!settings) {
    return { ...DEFAULTS };
  }
  const get = (key: string, fallback: string) => {
    const value = settings.get(key).composite;
    return typeof value === 'string' && value ? value : fallback;
  };
  return {
    model: get('model', DEFAULTS.model),
    method: get('method', DEFAULTS.method),
    colour_map: get('colourMap', DEFAULTS.colour_map)
  };
}

/** Copy the settings into the kernel's `xattr_lab.magic.DEFAULTS` (Python kernels only, silently). */
async function pushSettings(sessionContext: ISessionContext, defaults: MagicDefaults): Promise<void> {
  const kernel = sessionContext.session?.kernel;
  if (!kernel) {
    return;
  }
  try {
    const info = await kernel.info;
    if (info.language_info.name !== 'python') {
      return;
    }
    const future = kernel.requestExecute({ code: settingsCode(defaults), silent: true, store_history: false }, true);
    await future.done;
  } catch (error) {
    console.warn('xattr-lab: could not send the settings to the kernel', error);
  }
}

/** The newest xattr payload (and its whole output bundle) in the active cell of the notebook. */
function activeResult(tracker: INotebookTracker): { payload: Record<string, unknown>; bundle: Record<string, unknown> } | null {
  const cell = tracker.activeCell;
  if (!cell || cell.model.type !== 'code') {
    return null;
  }
  const outputs = (cell.model as unknown as { outputs: { length: number; get(i: number): { data: Record<string, unknown> } } }).outputs;
  for (let i = outputs.length - 1; i >= 0; i--) {
    const bundle = outputs.get(i).data;
    const payload = xattrPayload(bundle);
    if (payload && typeof payload === 'object') {
      return { payload: payload as Record<string, unknown>, bundle };
    }
  }
  return null;
}

/** The cells of a notebook panel as `notebookHtml` reads them (sources, output bundles, rendered markdown). */
function exportCells(panel: NotebookPanel): ExportCell[] {
  type Outputs = { length: number; get(i: number): { data: Record<string, unknown>; trusted: boolean; toJSON(): Record<string, unknown> } };
  return panel.content.widgets.map(cell => {
    const type = cell.model.type;
    const source = cell.model.sharedModel.getSource();
    if (type === 'markdown') {
      return { type, source, rendered: cell.node.querySelector('.jp-RenderedMarkdown') };
    }
    const outputs: ExportCell['outputs'] = [];
    const list = type === 'code' ? (cell.model as unknown as { outputs: Outputs }).outputs : null;
    for (let i = 0; list && i < list.length; i++) {
      const output = list.get(i);
      const json = output.toJSON();
      const stream = json.output_type === 'stream' ? json.text : json.output_type === 'error' ? json.traceback : undefined;
      const text = Array.isArray(stream) ? stream.join(json.output_type === 'error' ? '\n' : '') : typeof stream === 'string' ? stream : undefined;
      outputs.push({ data: output.data, trusted: output.trusted, text: text?.replace(/\u001b\[[0-9;]*m/g, '') });
    }
    return { type, source, outputs };
  });
}

/** Text the user selected in the notebook: the active editor's selection, else the page's. */
function editorSelection(tracker: INotebookTracker): string {
  const editor = tracker.activeCell?.editor;
  if (!editor || !editor.hasFocus()) {
    return '';
  }
  const { start, end } = editor.getSelection();
  const a = editor.getOffsetAt(start);
  const b = editor.getOffsetAt(end);
  return a === b ? '' : editor.model.sharedModel.getSource().slice(Math.min(a, b), Math.max(a, b));
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Renders xattr-lab results (live widget or from JSON) and adds the xattr-lab commands.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [INotebookTracker, ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    tracker: INotebookTracker | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    let settings: ISettingRegistry.ISettings | null = null;
    const contexts = new Map<NotebookPanel, LiveContext>();
    const host: RendererHost = {
      colourMap: () => readSettings(settings).colour_map,
      contextFor: node => {
        for (const [panel, context] of contexts) {
          if (panel.node.contains(node)) {
            return context;
          }
        }
        return null;
      }
    };
    // Everywhere (output views, consoles): drawn from JSON; notebooks get their own factory below.
    rendermime.addFactory(rendererFactory(host), RANK);

    const pushAll = () => contexts.forEach(c => c.sessionContext && void pushSettings(c.sessionContext, readSettings(settings)));

    if (tracker) {
      const attach = (panel: NotebookPanel) => {
        if (contexts.has(panel)) {
          return;
        }
        const context: LiveContext = { rendermime: panel.content.rendermime, sessionContext: panel.sessionContext };
        contexts.set(panel, context);
        panel.content.rendermime.addFactory(rendererFactory(host, context), RANK);
        const session = panel.sessionContext;
        let restarting = true; // push once the first kernel is idle
        session.statusChanged.connect((_, status) => {
          if (status === 'restarting' || status === 'autorestarting' || status === 'starting') {
            restarting = true;
          } else if (status === 'idle' && restarting) {
            restarting = false;
            void pushSettings(session, readSettings(settings));
          }
        });
        session.kernelChanged.connect(() => {
          restarting = true;
        });
        panel.disposed.connect(() => contexts.delete(panel));
      };
      tracker.forEach(attach);
      tracker.widgetAdded.connect((_, panel) => attach(panel));

      // The last non-empty selection inside a notebook: opening the palette or a menu moves focus.
      let lastSelection = '';
      document.addEventListener('selectionchange', () => {
        const selection = window.getSelection();
        const text = selection?.toString() ?? '';
        const anchor = selection?.anchorNode;
        if (text.trim() && anchor && tracker.currentWidget?.node.contains(anchor)) {
          lastSelection = text;
        }
      });

      app.commands.addCommand(CommandIDs.explain, {
        label: 'Explain selected text',
        caption: 'Run %xattr explain on the selected text in a new cell below (xattr-lab)',
        isEnabled: () => !!tracker.currentWidget,
        execute: async args => {
          const panel = tracker.currentWidget;
          if (!panel) {
            return;
          }
          const text = (typeof args.text === 'string' && args.text) || editorSelection(tracker) ||
            window.getSelection()?.toString() || lastSelection;
          if (!text.trim()) {
            Notification.warning('Select some text in the notebook first, then run "Explain selected text".', { autoClose: 4000 });
            return;
          }
          lastSelection = '';
          await panel.sessionContext.ready;
          await pushSettings(panel.sessionContext, readSettings(settings));
          const notebook = panel.content;
          NotebookActions.insertBelow(notebook);
          const cell = notebook.activeCell;
          if (!cell) {
            return;
          }
          cell.model.sharedModel.setSource(explainCode(text));
          await NotebookActions.run(notebook, panel.sessionContext);
        }
      });

      const exporter = (format: 'html' | 'png' | 'json') => async () => {
        const found = activeResult(tracker);
        if (!found) {
          Notification.warning('The active cell has no xattr-lab result to export.', { autoClose: 4000 });
          return;
        }
        const kind = typeof found.payload.kind === 'string' ? found.payload.kind.replace(/[^a-z]/g, '') : 'result';
        const name = `xattr-lab-${kind || 'result'}`;
        try {
          if (format === 'json') {
            download(`${name}.json`, new Blob([payloadJson(found.payload)], { type: 'application/json' }));
          } else if (format === 'html') {
            const html = resultHtml(found.payload, { colourMap: readSettings(settings).colour_map });
            download(`${name}.html`, new Blob([html], { type: 'text/html' }));
          } else {
            const png = found.bundle['image/png'];
            if (typeof png === 'string' && png) {
              download(`${name}.png`, new Blob([pngFromBase64(png)], { type: 'image/png' }));
            } else {
              const view = renderResult(found.payload, { colourMap: readSettings(settings).colour_map });
              view.style.position = 'absolute';
              view.style.left = '-10000px';
              document.body.appendChild(view);
              try {
                download(`${name}.png`, await viewToPng(view, xattrCss()));
              } finally {
                view.remove();
              }
            }
          }
        } catch (error) {
          Notification.error(`xattr-lab export failed: ${String(error)}`);
        }
      };
      app.commands.addCommand(CommandIDs.exportNotebook, {
        label: 'Export notebook as offline HTML (xattr-lab)',
        caption: 'One HTML file, no network: every xattr-lab output clickable, drawn from its saved data',
        isEnabled: () => !!tracker.currentWidget,
        execute: () => {
          const panel = tracker.currentWidget;
          if (!panel) {
            return;
          }
          const name = panel.context.path.split('/').pop()?.replace(/\.ipynb$/i, '') || 'notebook';
          try {
            const html = notebookHtml(exportCells(panel), { title: name });
            download(`${name}.html`, new Blob([html], { type: 'text/html' }));
          } catch (error) {
            Notification.error(`xattr-lab export failed: ${String(error)}`);
          }
        }
      });
      const hasResult = () => activeResult(tracker) !== null;
      app.commands.addCommand(CommandIDs.exportHtml, { label: 'Export result as HTML', isEnabled: hasResult, execute: exporter('html') });
      app.commands.addCommand(CommandIDs.exportPng, { label: 'Export result as PNG', isEnabled: hasResult, execute: exporter('png') });
      app.commands.addCommand(CommandIDs.exportJson, { label: 'Export result as JSON', isEnabled: hasResult, execute: exporter('json') });

      const all = [CommandIDs.explain, CommandIDs.exportHtml, CommandIDs.exportPng, CommandIDs.exportJson, CommandIDs.exportNotebook];
      all.forEach((command, i) => {
        palette?.addItem({ command, category: 'xattr-lab' });
        app.contextMenu.addItem({ command, selector: '.jp-Notebook', rank: 20 + i });
      });
    }

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => {
          settings = loaded;
          loaded.changed.connect(pushAll);
          pushAll();
        })
        .catch(error => console.warn('xattr-lab: settings not loaded', error));
    }
  }
};

export default plugin;
