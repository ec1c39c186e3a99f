import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';
import { describe, expect, it } from 'vitest';

import { MIME_TYPE, MIME_TYPE_V2, WIDGET_MIME_TYPE } from '../src/payload';
import { RANK, XattrRenderer, rendererFactory } from '../src/renderer';

const payload = {
  schema: 'xattr.v1', kind: 'attribution', tokens: ['a', 'b'], scores: [0.1, -0.2], model_id: 'm1'
};

/** A stand-in for the notebook's rendermime: its widget factory renders through a fake manager. */
/** models: ids with a live comm; saved: ids restored from the notebook's widget state (no kernel). */
function fakeRendermime(models: string[] | null, saved: string[] = []) {
  const rendered: string[] = [];
  const live = new Map<string, { comm_live: boolean; handlers: Array<() => void>; on: (e: string, f: () => void) => void; off: () => void }>();
  const modelFor = (id: string) => {
    if (!live.has(id)) {
      const m = { comm_live: !saved.includes(id), handlers: [] as Array<() => void>,
        on: (_e: string, f: () => void) => void m.handlers.push(f), off: () => undefined };
      live.set(id, m);
    }
    return live.get(id)!;
  };
  const has = (id: string) => (models ?? []).includes(id) || saved.includes(id);
  const manager = {
    has_model: has,
    get_model: async (id: string) => (has(id) ? modelFor(id) : undefined),
    restored: new Signal<object, void>({}),
    live: modelFor
  };
  const rendermime = {
    getFactory(mime: string) {
      if (mime !== WIDGET_MIME_TYPE) {
        return undefined;
      }
      return {
        safe: false,
        mimeTypes: [WIDGET_MIME_TYPE],
        createRenderer: () => {
          const w = new Widget() as Widget & { _manager: { promise: Promise<unknown> }; renderModel: (m: any) => Promise<void> };
          // null models: the global factory of a kernel-less notebook, whose manager never comes
          w._manager = { promise: models === null ? new Promise(() => undefined) : Promise.resolve(manager) };
          w.renderModel = async m => {
            const id = m.data[WIDGET_MIME_TYPE].model_id;
            rendered.push(id);
            w.node.textContent = `live widget ${id}`;
          };
          return w;
        }
      };
    }
  };
  return { rendermime: rendermime as never, rendered, manager, models };
}

const host = { colourMap: () => 'RdBu', contextFor: () => null };
const options = { mimeType: MIME_TYPE } as never;

function model(data: Record<string, unknown>, trusted = true) {
  return { data: { [MIME_TYPE]: data, [WIDGET_MIME_TYPE]: { version_major: 2, version_minor: 0, model_id: data.model_id } }, metadata: {}, trusted, setData: () => undefined } as never;
}

describe('XattrRenderer', () => {
  it('has a rank that beats the widget renderer', () => {
    expect(RANK).toBeLessThan(-10);
    const factory = rendererFactory(host);
    expect(factory.mimeTypes).toEqual([MIME_TYPE_V2, MIME_TYPE]);
    expect(factory.defaultRank).toBe(RANK);
  });

  it('mounts the live widget when the manager has the model', async () => {
    const { rendermime, rendered } = fakeRendermime(['m1']);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    expect(renderer.mode).toBe('live');
    expect(rendered).toEqual(['m1']);
    expect(renderer.node.textContent).toBe('live widget m1');
    expect(renderer.node.querySelector('.xattr-lab-token')).toBeNull();
  });

  it('draws from JSON when the model is gone (fresh kernel)', async () => {
    const { rendermime, rendered } = fakeRendermime(['other']);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    expect(renderer.mode).toBe('static');
    expect(rendered).toEqual([]);
    expect(renderer.node.querySelectorAll('.xattr-lab-token').length).toBe(2);
    expect(renderer.node.querySelector('.xattr-lab-static-note')).not.toBeNull();
  });

  it('switches to the live widget when the manager restores the model later', async () => {
    const { rendermime, rendered, manager, models } = fakeRendermime([]);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    expect(renderer.mode).toBe('static');
    models!.push('m1');
    manager.restored.emit();
    await new Promise(resolve => setTimeout(resolve, 100));
    expect(renderer.mode).toBe('live');
    expect(rendered).toEqual(['m1']);
  });

  it('draws from JSON, not a disconnected widget, when the model comes from saved widget state', async () => {
    const { rendermime, rendered } = fakeRendermime([], ['m1']);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    expect(renderer.mode).toBe('static');
    expect(rendered).toEqual([]);
    expect(renderer.node.querySelectorAll('.xattr-lab-token').length).toBe(2);
  });

  it('goes back to the JSON drawing when the live model loses its kernel', async () => {
    const { rendermime, manager } = fakeRendermime(['m1']);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    expect(renderer.mode).toBe('live');
    const m = manager.live('m1');
    m.comm_live = false;
    m.handlers.forEach(f => f());
    expect(renderer.mode).toBe('static');
    expect(renderer.node.querySelectorAll('.xattr-lab-token').length).toBe(2);
  });

  it('keeps the mounted live widget when its output is updated, and draws the latest data once the kernel goes', async () => {
    const { rendermime, rendered, manager } = fakeRendermime(['m1']);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    // update_display of the same widget with new data (the Explorer's views landed)
    await renderer.renderModel(model({ ...payload, tokens: ['a', 'b', 'c'], scores: [0.1, -0.2, 0.3] }));
    expect(renderer.mode).toBe('live');
    expect(rendered).toEqual(['m1']);
    expect(renderer.node.textContent).toBe('live widget m1');
    const m = manager.live('m1');
    m.comm_live = false;
    m.handlers.forEach(f => f());
    expect(renderer.mode).toBe('static');
    expect(renderer.node.querySelectorAll('.xattr-lab-token').length).toBe(3);
  });

  it('draws from JSON when there is no kernel (manager never arrives)', async () => {
    const { rendermime } = fakeRendermime(null);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload));
    expect(renderer.mode).toBe('static');
  });

  it('never mounts widgets for untrusted outputs', async () => {
    const { rendermime, rendered } = fakeRendermime(['m1']);
    const renderer = new XattrRenderer(options, host, { rendermime });
    await renderer.renderModel(model(payload, false));
    expect(renderer.mode).toBe('static');
    expect(rendered).toEqual([]);
  });

  it('shows the schema message for an unknown version', async () => {
    const renderer = new XattrRenderer(options, host, null);
    await renderer.renderModel(model({ ...payload, schema: 'xattr.v9' }));
    expect(renderer.node.querySelector('.xattr-lab-message')!.textContent).toContain('"xattr.v9"');
  });
});
