"""The workshop notebooks (examples/*.ipynb) run through the JupyterLab UI in Chromium.

Each test copies one notebook into the harness's root_dir (examples/ is never touched), opens it
alone (``?reset``), runs all cells through the UI (the harness fails at once on a traceback),
checks no output is an error or a broken widget, then clicks at least one glyph of each kind of
interactive view the notebook shows and waits for the Python side's answer in the DOM (tap ->
BokehJS selection -> jupyter_bokeh comm -> Python callback -> widget update). A screenshot per
notebook goes to test-artifacts/examples-<notebook>.png. The kernel is shut down afterwards.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.browser.bokeh_js import with_bokeh_finder


pytestmark = pytest.mark.browser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Find the nth (document order) connected Bokeh figure named `name`, scroll it into view, tag the
# enclosing .xattr-view (crossing shadow roots) with data-xattr-test=tag, and return the page
# coordinates of data point (x, y). x may be {strip: k}: the x of token k in a token strip figure.
POINT_JS = with_bokeh_finder("""
([name, x, y, nth, tag]) => {
  /*FIND_BOKEH_VIEW*/
  const [v, found] = findBokehView(name, nth);
  if (!v) return null;
  if (typeof x === 'object') {
    const r = v.model.renderers.find(r => r.data_source && r.data_source.name === 'xattr-strip-source');
    if (!r) return null;
    x = r.data_source.data.x[x.strip];
  }
  let node = v.el;
  while (node) {
    if (node.classList && node.classList.contains('xattr-view')) break;
    node = node.parentElement || (node.getRootNode && node.getRootNode().host) || null;
  }
  if (!node) return null;
  node.setAttribute('data-xattr-test', tag);
  v.el.scrollIntoView({block: 'start'});
  const r = v.el.getBoundingClientRect();
  return {x: r.left + v.frame.x_scale.compute(x), y: r.top + v.frame.y_scale.compute(y), count: found.length};
}
""")

# number of connected Bokeh figures named `name` inside the element tagged `tag`
FIGURES_IN_JS = """
([name, tag]) => {
  const host = document.querySelector(`[data-xattr-test="${tag}"]`);
  if (!host) return 0;
  let n = 0;
  const seen = new Set();
  const inside = (el) => {
    let node = el;
    while (node) {
      if (node === host) return true;
      node = node.parentElement || (node.getRootNode && node.getRootNode().host) || null;
    }
    return false;
  };
  const visit = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.model && v.model.name === name && v.el.isConnected && inside(v.el)) n += 1;
    for (const c of (v.child_views || [])) visit(c);
  };
  for (const v of Object.values(window.Bokeh ? window.Bokeh.index : {})) visit(v);
  return n;
}
"""

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _point(page, name, x, y, nth, tag):
    p = None
    for _ in range(150):  # the figure may still be rendering
        p = page.evaluate(POINT_JS, [name, x, y, nth, tag])
        if p:
            break
        page.wait_for_timeout(200)
    assert p, f"no Bokeh figure {name!r} #{nth} on the page"
    page.wait_for_timeout(150)  # let the scroll settle
    p = page.evaluate(POINT_JS, [name, x, y, nth, tag])
    return p["x"], p["y"]


def click_glyph(page, name: str, x, y: float, nth: int, tag: str, needle: str, timeout: float = 60_000):
    """Click data point (x, y) of the nth figure ``name``; wait until its view's text has ``needle``.

    Returns a locator of the view. One retry if the first click gets no answer in 8 s (the layout
    can move under the pointer while other outputs render).
    """
    view = page.locator(f'[data-xattr-test="{tag}"]')
    for attempt in range(3):
        xy = _point(page, name, x, y, nth, tag)
        page.wait_for_timeout(400)  # BokehJS reads two quick taps as a double tap
        page.mouse.click(*xy)
        try:
            page.wait_for_function(
                "([tag, needle]) => { const el = document.querySelector(`[data-xattr-test=\"${tag}\"]`);"
                " return !!el && (el.textContent || '').includes(needle); }",
                arg=[tag, needle], timeout=8_000 if attempt < 2 else timeout, polling=200)
            return view
        except Exception:
            if attempt == 2:
                raise
            print(f"no answer to the click on {name} #{nth} ({x}, {y}); clicking again")
    raise AssertionError("unreachable")


def wait_views(page, css: str, count: int = 1, timeout: float = 90_000) -> None:
    """Wait for ``count`` Bokeh canvases under ``css`` (Playwright's CSS pierces BokehJS's shadow DOM)."""
    canvases = page.locator(f"{PANEL} {css} canvas")
    deadline = time.time() + timeout / 1000
    while canvases.count() < count:
        assert time.time() < deadline, f"fewer than {count} {css} canvases: {canvases.count()}"
        page.wait_for_timeout(250)


def no_errors(page) -> None:
    texts = page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts()
    joined = "\n".join(texts)
    assert "Traceback (most recent call last)" not in joined, joined[-3000:]
    assert "Error displaying widget" not in joined and "Error rendering" not in joined, joined[-3000:]
    assert page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0
    assert not page.dialogs, page.dialogs


def _shutdown_kernels(jupyterlab) -> None:
    try:
        for kernel in jupyterlab.api("kernels"):
            request = urllib.request.Request(jupyterlab.url(f"api/kernels/{kernel['id']}"), method="DELETE")
            urllib.request.urlopen(request, timeout=20).close()
    except Exception as exc:  # a leftover kernel is not this test's failure
        print(f"could not shut kernels down: {exc}")


def _no_windowing(jupyterlab) -> None:
    """JupyterLab 4 detaches cells scrolled out of view ("full" windowing), so their Bokeh canvases
    vanish; this test session's settings dir (the harness's tmp dir) turns that off."""
    settings = json.loads(json.dumps({"windowingMode": "none"}))
    folder = Path(jupyterlab.env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "notebook-extension"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tracker.jupyterlab-settings"
    if path.exists():
        try:
            settings = {**json.loads(path.read_text(encoding="utf-8")), **settings}
        except ValueError:
            pass
    path.write_text(json.dumps(settings), encoding="utf-8")


@pytest.fixture
def run_example(jupyterlab, page, artifacts):
    """Copy examples/<stem>.ipynb into root_dir, open it alone, run all cells, check for errors."""
    opened = []
    _no_windowing(jupyterlab)

    def run(stem: str, timeout: float = 300_000):
        name = f"example_{stem}.ipynb"
        target = jupyterlab.root_dir / name
        shutil.copy(EXAMPLES / f"{stem}.ipynb", target)
        subprocess.run([sys.executable, "-m", "jupyter", "trust", str(target)], env=jupyterlab.env,
                       capture_output=True, check=False)
        opened.append(stem)
        jupyterlab.open_notebook(page, name)
        jupyterlab.run_all(page, timeout=timeout)
        no_errors(page)
        return page

    yield run
    for stem in opened:
        try:
            page.screenshot(path=str(artifacts / f"examples-{stem}.png"), full_page=True)
        except Exception:
            pass
    _shutdown_kernels(jupyterlab)


def _strip_token_click(page, nth: int, token: int, tag: str):
    view = click_glyph(page, "xattr-token-strip", {"strip": token}, 0.0, nth, tag, f"token {token} ")
    assert "score " in view.inner_text()
    return view


def _flow_input_click(page, nth: int, position: int, tag: str):
    view = click_glyph(page, "xattr-flow", 0.0, -float(position), nth, tag, f"(position {position})")
    text = view.inner_text()
    assert "flow into" in text, text[-500:]
    return view


def _head_click(page, name_nth: int, layer: int, head: int, tag: str, matrix: bool = True):
    before = page.evaluate(FIGURES_IN_JS, ["xattr-matrix", tag])
    view = click_glyph(page, "xattr-head-grid", float(head), -float(layer), name_nth, tag, f"head {layer}.{head}")
    if matrix:
        assert before == 0
        page.wait_for_function(f"(args) => ({FIGURES_IN_JS})(args) >= 1", arg=["xattr-matrix", tag],
                               timeout=30_000, polling=200)
        page.wait_for_function(
            "(tag) => (document.querySelector(`[data-xattr-test=\"${tag}\"]`).textContent || '')"
            ".length > 0", arg=tag, timeout=5_000)
    return view


def test_00_preflight(run_example):
    """The instructor's preflight runs through the UI: the versions table, every embedded model's row
    "ok", the toy truth line, and READY (its last code cell asserts, so a failure is a traceback)."""
    import xattr_lab as xa

    page = run_example("00_preflight", timeout=600_000)
    outputs = "\n".join(page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts())
    assert "missing packages: none" in outputs, outputs[-3000:]
    assert "READY: every embedded model builds and loads" in outputs, outputs[-3000:]
    assert "NOT READY" not in outputs and "FAILED" not in outputs, outputs[-3000:]
    assert "toy truth heads ['0.0', '0.2', '1.1', '1.3']" in outputs, outputs[-3000:]
    rows = page.locator(f"{PANEL} .jp-OutputArea-output table tbody tr")
    texts = rows.all_inner_texts()
    for alias in xa.ALIASES:  # one row per embedded model, its status "ok"
        row = [t for t in texts if t.split("\t")[0].strip() == alias]
        assert row and "\tok\t" in row[0], (alias, texts)
    no_errors(page)


def test_01_quickstart(run_example):
    page = run_example("01_quickstart")
    # strips: %xattr explain (sig), %%xattr explain (ig), widgets.view(a), the Explorer's strip
    wait_views(page, ".xattr-token-strip", 1)
    wait_views(page, ".xattr-flow", 1)
    wait_views(page, ".xattr-explorer", 1)
    view = _strip_token_click(page, 0, 2, "strip-sig")
    assert "sig" in view.inner_text()
    _flow_input_click(page, 0, 3, "flow-magic")
    # the Explorer's strip: a click reaches Python too
    explorer_strips = page.locator(f"{PANEL} .xattr-token-strip").count()
    _strip_token_click(page, explorer_strips - 1, 1, "strip-explorer")
    assert page.locator('[data-xattr-test="strip-explorer"]').locator(
        "xpath=ancestor::*[contains(@class,'xattr-explorer')]").count() == 1
    no_errors(page)


def test_02_flows(run_example):
    page = run_example("02_flows")
    wait_views(page, ".xattr-flow", 1)
    _flow_input_click(page, 0, 1, "flow-agf")
    # the highlight source got edges
    page.wait_for_function(
        "() => [...window.Bokeh.documents].some(d => { const m = d.get_model_by_name('xattr-flow-highlight');"
        " return m && m.data.flow && m.data.flow.length > 0; })", timeout=20_000)
    no_errors(page)


def test_03_gradients(run_example):
    page = run_example("03_gradients")
    wait_views(page, ".xattr-token-strip", 1)
    view = _strip_token_click(page, 0, 3, "strip-sig")
    assert "sig" in view.inner_text()
    no_errors(page)


def test_04_trust(run_example):
    page = run_example("04_trust")
    wait_views(page, ".xattr-head-grid", 1)
    _head_click(page, 0, 1, 2, "heads")
    no_errors(page)


def test_05_circuits(run_example):
    page = run_example("05_circuits", timeout=900_000)  # SmolLM2 SAEs + EAP-IG on the toy; slow on a loaded CPU
    wait_views(page, ".xattr-circuit", 2)
    for nth, tag in ((0, "circuit-toy"), (1, "circuit-ioi")):
        view = click_glyph(page, "xattr-head-grid", 0.0, 0.0, nth, tag, "head 0.0")
        assert "xattr-circuit" in (view.get_attribute("class") or "")
    no_errors(page)


def test_06_bring_your_own_model(run_example):
    page = run_example("06_bring_your_own_model")
    wait_views(page, ".xattr-token-strip", 1)
    _strip_token_click(page, 0, 1, "strip-gpt2")
    outputs = "\n".join(page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts())
    assert "torch sees a GPU:" in outputs
    no_errors(page)
