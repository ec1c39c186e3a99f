"""Every live view fits its notebook cell (issue 27, item 5), in JupyterLab at a 1,280 px viewport
(then at 1,024 px: views already drawn shrink with their cell).

One notebook shows each live view (token strip, flow view, head grid, circuit view, Explorer on
tiny-bert) with its side panels filled (a selected input token, a head's attention matrix, a
head's code table) and with values whose axis and colour-bar ticks Bokeh's default formatter
writes as "1.500e-3". With the file browser open, the test then checks, in the page:

- no element of a view (shadow DOM included: Bokeh's canvases) shows outside its
  ``.jp-OutputArea-output`` box (what an ancestor clips is not shown), and nothing scrolls sideways;
- no text is clipped (``scrollWidth > clientWidth``) or broken one word per line;
- in every Bokeh figure: colour bars lie inside the canvas, axis and colour-bar tick labels are
  not in scientific notation, every text glyph (token labels) is drawn inside the plot frame, and
  the token strip is drawn at one pixel per layout pixel (its boxes are not squeezed under their
  text).

Each output is scrolled into view before it is checked (JupyterLab skips the layout of cells out
of view), and its problems are polled for a while (the views measure their width and re-lay
themselves out through the kernel); they are listed in the failure message. Screenshots and the
report: test-artifacts/layout-*.png, layout-report.json.
"""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1280, "height": 900}

SETUP = '''
import numpy as np
import xattr_lab as xa
from xattr_lab import widgets
from xattr_lab.results import Attribution, CircuitResult, FlowResult, HeadStats
rng = np.random.default_rng(1)
WORDS = ("a gripping beautifully acted film whose quiet final act lingers long after the credits roll "
         "even if the middle drags a little and the score swells").split()
TOKENS = ["[CLS]"] + WORDS * 2 + ["[SEP]"]
n = len(TOKENS)
scores = rng.uniform(-1, 1, n); scores *= 1.5e-3 / np.abs(scores).max()  # colour bar ticks of 0.0005
a = Attribution(tokens=TOKENS, scores=scores, method="attention", model="fake")
FT = ["[CLS]"] + WORDS[:12] + ["[SEP]"]
m, L, H = len(FT), 6, 12
E = np.zeros((L, m, m)); node = np.zeros(m); node[0] = 0.006  # a small flow value: throughput ~1e-3
for layer in range(L - 1, -1, -1):
    split = rng.random((m, m)) ** 3; split /= split.sum(axis=1, keepdims=True)
    E[layer] = node[:, None] * split; node = E[layer].sum(axis=0)
f = FlowResult(tokens=FT, attributions=E[0].sum(axis=0), edge_flow=E, value=0.006, sources=[0])
attn = rng.random((L, H, m, m)); attn /= attn.sum(axis=-1, keepdims=True)
h = HeadStats(tokens=FT, entropy=rng.random((L, H)) * 2.5, cone_index=rng.random(L + 1) * m,
              cone_index_normalised=rng.random(L + 1), patterns=[["broad", "diagonal", "first"] * 4] * L,
              attentions=attn, texts=["t"], model="fake")
c = CircuitResult(node_scores=rng.integers(0, 5, (L, H)).astype(float),
                  edge_scores=np.triu(rng.integers(0, 3, (L * H, L * H)), 1).astype(float),
                  codes_positive=rng.integers(0, 6, (5, L * H)), codes_negative=rng.integers(0, 6, (5, L * H)),
                  n_layers=L, n_heads=H, positive=["a positive example sentence, long enough to need room"] * 5,
                  negative=["a negative example sentence, long enough to need room"] * 5)
c.edge_scores = c.edge_scores + c.edge_scores.T
'''
CELLS = [
    SETUP,
    "sv = widgets.view(a)",
    "fv = widgets.view(f)\nfv.select_input(3)",
    "hv = widgets.view(h)\nhv.select_head(2, 5)",
    "cv = widgets.view(c)\ncv.select_head(1, 2)",
    'ex = xa.load("tiny-bert", device="cpu")\n'
    'e = widgets.Explorer(ex, "a gripping, beautifully acted film that never lets go of you")\ne',
    "e.wait(120)\ne.flow.select_input(2)\ne.heads.select_head(0, 1)",
]
VIEWS = (".xattr-token-strip", ".xattr-flow", ".xattr-head-grid", ".xattr-circuit", ".xattr-explorer")

# JS: the layout problems of every output showing an xattr view (a list of strings; [] = all fit)
LAYOUT_JS = r"""
(only) => {
  const problems = [];
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const outputs = [...panel.querySelectorAll('.jp-OutputArea-output')]
    .filter(o => o.querySelector('.xattr-view, .xattr-explorer'))
    .filter((o, i) => only === null || only === undefined || i === only);
  const walk = function* (root) {  // every element, crossing shadow roots (Bokeh draws in them)
    for (const el of root.querySelectorAll('*')) {
      yield el;
      if (el.shadowRoot) yield* walk(el.shadowRoot);
    }
  };
  const hostOf = (el) => el.parentElement || (el.getRootNode && el.getRootNode().host) || null;
  const inside = (el, box) => { for (let n = el; n; n = hostOf(n)) if (n === box) return true; return false; };
  const describe = (el) => el.tagName.toLowerCase() + (typeof el.className === 'string' && el.className.trim()
    ? '.' + el.className.trim().split(/\s+/).slice(0, 3).join('.') : '');
  const shown = (el) => { const s = getComputedStyle(el); return s.display !== 'none' && s.visibility !== 'hidden'; };
  const scientific = /\d[eE][-+\u2212]?\d/;
  const names = [];
  outputs.forEach((out) => {
    const box = out.getBoundingClientRect();
    const view = out.querySelector('.xattr-explorer') || out.querySelector('.xattr-view');
    const name = view.classList.contains('xattr-explorer') ? 'explorer'
      : [...view.classList].filter(c => c.startsWith('xattr-') && c !== 'xattr-view').join('/');
    names.push(`${name} ${Math.round(box.width)}px`);
    if (out.scrollWidth > out.clientWidth + 1) {
      problems.push(`${name}: the output scrolls sideways (${out.scrollWidth}px of content in ${out.clientWidth}px)`);
    }
    for (const el of walk(out)) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0 || !shown(el)) continue;
      const style = getComputedStyle(el);
      if (/auto|scroll/.test(style.overflowX) && el.scrollWidth > el.clientWidth + 1) {
        const edge = r.left + el.clientWidth;
        const wide = [...walk(el)].filter(d => d.getBoundingClientRect().right > edge + 1).pop();
        const within = wide && [...function* () { for (let n = wide; n && n !== el; n = hostOf(n)) yield n; }()]
          .map(n => n.classList && [...n.classList].find(c => c.startsWith('xattr-'))).find(Boolean);
        problems.push(`${name}: ${describe(el)} scrolls sideways (${el.scrollWidth}px of content in ${el.clientWidth}px`
                      + (wide ? `; e.g. ${describe(wide)} in ${within || '?'} reaches x ${Math.round(wide.getBoundingClientRect().right)})` : ')'));
      }
      // what is visible of it: ancestors that clip (overflow other than visible) cut it
      let left = r.left, right = r.right;
      for (let n = hostOf(el); n && n !== out; n = hostOf(n)) {
        if (!(n instanceof Element) || getComputedStyle(n).overflowX === 'visible') continue;
        const c = n.getBoundingClientRect();
        left = Math.max(left, c.left);
        right = Math.min(right, c.right);
      }
      if (right > left && (right > box.right + 1 || left < box.left - 1)) {
        problems.push(`${name}: ${describe(el)} spans x ${Math.round(left)}..${Math.round(right)}, `
                      + `outside its output ${Math.round(box.left)}..${Math.round(box.right)}`);
      }
      const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
      if (text && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
        problems.push(`${name}: text "${text.slice(0, 40)}" clipped in ${describe(el)} `
                      + `(${el.scrollWidth}px of text in ${el.clientWidth}px)`);
      }
    }
    for (const el of out.querySelectorAll('.widget-html-content, .widget-label')) {
      const words = (el.textContent || '').trim().split(/\s+/).filter(Boolean).length;
      if (words < 4 || !shown(el)) continue;
      const range = document.createRange();
      range.selectNodeContents(el);
      const tops = new Set([...range.getClientRects()].filter(q => q.width > 0).map(q => Math.round(q.top / 4)));
      if (tops.size > Math.max(3, words / 2)) {
        problems.push(`${name}: "${el.textContent.trim().slice(0, 40)}" wraps into ${tops.size} lines `
                      + `for ${words} words (${Math.round(el.getBoundingClientRect().width)}px wide)`);
      }
    }
  });
  // Bokeh figures inside those outputs
  const seen = new Set();
  const plots = [];
  const visit = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.frame && v.el && v.el.isConnected && outputs.some(o => inside(v.el, o))) plots.push(v);
    for (const c of (v.child_views || [])) visit(c);
  };
  for (const v of Object.values(window.Bokeh ? window.Bokeh.index : {})) visit(v);
  const ctx = document.createElement('canvas').getContext('2d');
  const labelsOf = (axisView) => {
    const coords = axisView.tick_coords.major[axisView.dimension];
    return axisView.compute_labels(coords).items.map(t => String(t.text));
  };
  for (const pv of plots) {
    const r = pv.el.getBoundingClientRect();
    if (r.width === 0) continue;
    const name = pv.model.name || (pv.model.title && pv.model.title.text && pv.model.title.text.text) || 'figure';
    const canvas = pv.bbox;
    const frame = pv.frame.bbox;
    for (const rv of pv.renderer_views.values()) {
      const type = rv.model.type || rv.model.constructor.name;
      if (rv._axis_view && rv._inner_layout) {  // a colour bar
        const b = rv._inner_layout.bbox;
        if (b.left < canvas.left - 1 || b.right > canvas.right + 1 || b.top < canvas.top - 1 || b.bottom > canvas.bottom + 1) {
          problems.push(`${name}: colour bar at x ${Math.round(b.left)}..${Math.round(b.right)} y ${Math.round(b.top)}..`
                        + `${Math.round(b.bottom)} is clipped by its ${Math.round(canvas.width)}x${Math.round(canvas.height)} canvas`);
        }
        const labels = labelsOf(rv._axis_view);
        if (labels.some(t => scientific.test(t))) problems.push(`${name}: colour bar ticks read ${labels.join(' ')}`);
      } else if (rv.compute_labels && rv.tick_coords && rv.model.visible) {  // an axis
        const labels = labelsOf(rv);
        if (labels.some(t => scientific.test(t))) problems.push(`${name}: axis ticks read ${labels.join(' ')}`);
      } else if (rv.glyph && rv.glyph.model.type === 'Text' && rv.model.visible) {  // token labels
        const g = rv.glyph, src = rv.model.data_source.data;
        const field = g.model.text.field, xs = src[g.model.x.field], ys = src[g.model.y.field];
        if (!field || !xs) continue;
        const size = g.model.text_font_size.value || '12px';
        const font = g.model.text_font.value || 'helvetica';
        ctx.font = `${size} ${font}`;
        const align = g.model.text_align.value || 'left';
        src[field].forEach((t, i) => {
          if (!t) return;
          const sx = rv.coordinates.x_scale.compute(xs[i]), sy = rv.coordinates.y_scale.compute(ys[i]);
          if (sy < frame.top - 1 || sy > frame.bottom + 1) return;  // a row scrolled out of the range
          const w = ctx.measureText(String(t)).width;
          const left = align === 'right' ? sx - w : align === 'center' ? sx - w / 2 : sx;
          if (left < frame.left - 1 || left + w > frame.right + 1) {
            problems.push(`${name}: label "${String(t).slice(0, 20)}" drawn at x ${Math.round(left)}..${Math.round(left + w)}, `
                          + `outside its frame ${Math.round(frame.left)}..${Math.round(frame.right)}`);
          }
        });
      }
    }
    if (pv.model.name === 'xattr-token-strip') {
      const s = pv.frame.x_scale, ppu = (s.compute(100) - s.compute(0)) / 100;
      if (ppu < 0.97) problems.push(`xattr-token-strip: drawn at ${ppu.toFixed(2)} px per layout px (boxes squeezed under their text)`);
    }
  }
  return {problems, outputs: names, plots: plots.length};
}
"""


def _open_file_browser(page) -> None:
    """JupyterLab's default layout: the file browser open in the left side bar."""
    if not page.locator(".jp-FileBrowser").first.is_visible():
        page.locator('.jp-SideBar [data-id="filebrowser"]').first.click()
    page.wait_for_selector(".jp-FileBrowser", state="visible", timeout=30_000)


OUTPUTS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')]
    .filter(o => o.querySelector('.xattr-view, .xattr-explorer')).length"""
SCROLL_JS = """(i) => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')]
    .filter(o => o.querySelector('.xattr-view, .xattr-explorer'))[i].scrollIntoView({block: 'start'})"""


def layout_problems(page, settle_s: float = 30.0) -> dict:
    """Each view output scrolled into view in turn (JupyterLab skips the layout of cells out of view,
    so a view re-lays itself out when it is seen), LAYOUT_JS polled until it reports no problem for
    that output (views re-lay themselves out after measuring their width through the kernel) or
    ``settle_s`` passes. Returns {"problems": all outputs' last problems, "outputs", "plots"}."""
    report = {"problems": [], "outputs": [], "plots": 0}
    for i in range(page.evaluate(OUTPUTS_JS)):
        page.evaluate(SCROLL_JS, i)
        waited = 0
        while True:
            page.wait_for_timeout(500)
            one = page.evaluate(LAYOUT_JS, i)
            if not one["problems"] or waited >= settle_s * 1000:
                break
            waited += 1000
        for key in ("problems", "outputs"):
            report[key] += one[key]
        report["plots"] += one["plots"]
    return report


def run_layout_notebook(jupyterlab, page, name: str = "layout.ipynb") -> None:
    """Write the notebook, open it at 1,280 px with the file browser open, and run it through the UI."""
    page.set_viewport_size(VIEWPORT)
    jupyterlab.write_notebook(name, CELLS)
    jupyterlab.open_notebook(page, name)
    _open_file_browser(page)
    jupyterlab.run_all(page, timeout=400_000)
    for css in VIEWS:
        page.wait_for_selector(f"{css} canvas", timeout=180_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.xattr-explorer')].some(e => /computed in|cached in/.test(e.textContent))",
        timeout=180_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.xattr-explorer .xattr-flow')].some(e => e.textContent.includes('flow into'))",
        timeout=60_000)


def test_every_view_fits_its_output_at_1280px(jupyterlab, page, artifacts):
    run_layout_notebook(jupyterlab, page)
    reports = {}
    # 1,280 px as drawn, then a narrower window (1,024 px): the drawn views must shrink with the cell
    for width in (VIEWPORT["width"], 1024):
        page.set_viewport_size({"width": width, "height": VIEWPORT["height"]})
        reports[width] = report = layout_problems(page)
        page.screenshot(path=str(artifacts / f"layout-{width}.png"), full_page=True)
        for css in VIEWS:
            element = page.locator(css).first
            element.scroll_into_view_if_needed()
            element.screenshot(path=str(artifacts / f"layout-{width}-{css.strip('.')}.png"))
    print(json.dumps(reports, indent=1))
    (artifacts / "layout-report.json").write_text(json.dumps(reports, indent=1))
    for width, report in reports.items():
        # strip, flow + throughput, grid + matrix + cone, circuit grid, the Explorer's strip + flow + grid ...
        assert report["plots"] >= 10, (width, report)
        assert len(report["outputs"]) == len(VIEWS), (width, report["outputs"])
        assert not report["problems"], f"at {width} px:\n" + "\n".join(report["problems"][:40])
    assert not page.dialogs
