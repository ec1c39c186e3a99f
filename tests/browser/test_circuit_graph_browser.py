"""The circuit graph of a patching circuit (issue 31) in a real browser: JupyterLab on 127.0.0.1 +
Debian Chromium, the shared harness of tests/browser/conftest.py.

Live: a click on a head node of the Bokeh graph (at its pixel, from BokehJS's own scales) reaches
Python, whose per-prompt effects appear, escaped, and whose head grid follows; the size slider
changes the faithfulness readout. Saved: the notebook reopened with no kernel is drawn by the
JupyterLab renderer (graph, slider, clicks answered from the payload); the player's ``text/html``
draws it in a bare page. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json
import re

import pytest
from tests.browser.bokeh_js import with_bokeh_finder

from xattr_lab.constants import MIME_TYPE_V2

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"
SETUP = r'''
import numpy as np, ipywidgets as widgets
from IPython.display import display
from xattr_lab.results import PatchingCircuitResult
from xattr_lab.widgets import mime_bundle
from xattr_lab.widgets.select import view_for

L, H, P = 3, 2, 4
rng = np.random.default_rng(3)
per_prompt = np.round(rng.normal(size=(P, L, H)), 3)
E = np.zeros((L * H, L * H + 1))
for s in range(L * H):
    for r in range(L * H + 1):
        if r == L * H or s // H < r // H:
            E[s, r] = np.round(rng.normal(), 3)
E[0, 2], E[1, 6] = 5.0, -4.0
result = PatchingCircuitResult(
    node_scores=per_prompt.mean(0), edge_scores=E, prompt_node_scores=per_prompt,
    prompt_edge_scores={"0->2": [5.5, 4.5, 5.0, 5.0], "1->6": [-4.0, -3.0, -5.0, -4.0]}, n_layers=L, n_heads=H,
    method="eap-ig", metric="logit difference",
    positive=["<img src=x onerror=alert(1)>", "clean two", "</script><script>alert(2)</script>", "clean four"],
    negative=["corrupt one", "corrupt two", "corrupt three", "corrupt four"],
    faithfulness={"unit": "edges", "sizes": [1, 2, 4, 8], "faithfulness": [0.1, 0.5, 0.8, 0.95], "cpr": 0.71,
                  "cmd": 0.12}, model="synthetic")
view = view_for(result)
clicks = widgets.Label("no click yet")
view.state.observe(lambda ch: setattr(clicks, "value", f"python saw head {tuple(ch['new'])}"), names="head")
'''
BIG = r'''
L2, H2 = 30, 9  # smollm2-135m's heads
rng2 = np.random.default_rng(5)
E2 = rng2.normal(size=(L2 * H2, L2 * H2 + 1)) * (rng2.random((L2 * H2, L2 * H2 + 1)) > 0.97)
E2 = np.where((np.arange(L2 * H2)[:, None] // H2 < np.append(np.arange(L2 * H2) // H2, L2)[None, :]), E2, 0.0)
big = PatchingCircuitResult(node_scores=rng2.normal(size=(L2, H2)), edge_scores=E2,
                            prompt_node_scores=rng2.normal(size=(2, L2, H2)), n_layers=L2, n_heads=H2,
                            method="eap-ig", positive=["a", "b"], negative=["c", "d"], model="synthetic-30x9")
display(mime_bundle(big, view=view_for(big, size=60)), raw=True)
'''
CELLS = [SETUP, "display(mime_bundle(result, view=view), raw=True)", "clicks", BIG]
NAME = "circuit_graph.ipynb"

POINT_JS = with_bokeh_finder("""
([name, x, y, nth]) => {
  /*FIND_BOKEH_VIEW*/
  const [v] = findBokehView(name, nth);
  if (!v) return null;
  v.el.scrollIntoView({block: 'center'});
  const r = v.el.getBoundingClientRect();
  return {x: r.left + v.frame.x_scale.compute(x), y: r.top + v.frame.y_scale.compute(y)};
}
""")


def _open(jupyterlab, page, name: str, kernel: bool = True) -> None:
    page.goto(jupyterlab.url(f"lab/tree/{name}?reset"), wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=120_000)
    if kernel:
        jupyterlab.wait_idle(page)


def _no_kernel_copy(jupyterlab, source: str, name: str) -> None:
    """A copy of ``source`` whose kernelspec names no installed kernel (it opens with none)."""
    nb = json.loads((jupyterlab.root_dir / source).read_text(encoding="utf-8"))
    nb["metadata"]["kernelspec"] = {"name": "xattr-no-such-kernel", "display_name": "gone", "language": "none"}
    nb["metadata"]["language_info"] = {"name": "none"}
    (jupyterlab.root_dir / name).write_text(json.dumps(nb), encoding="utf-8")


def _dismiss_kernel_dialog(page) -> None:
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=15_000)
    except Exception:
        return
    select = dialog.locator("select")
    if select.count():
        options = select.first.locator("option").all_text_contents()
        choice = next((o for o in options if "No Kernel" in o), None)
        if choice:
            select.first.select_option(label=choice)
    buttons = dialog.locator(".jp-Dialog-button")
    for label in ("Select", "No Kernel", "Cancel"):
        button = buttons.filter(has_text=re.compile(f"^{label}$"))
        if button.count():
            button.first.click()
            break
    dialog.wait_for(state="detached", timeout=15_000)


def _click_glyph(page, name: str, x: float, y: float, condition: str, timeout: float = 20_000) -> None:
    """Click data point (x, y) of the Bokeh figure ``name`` until the JS ``condition`` holds (2 tries)."""
    for attempt in range(2):
        p = None
        for _ in range(50):
            p = page.evaluate(POINT_JS, [name, x, y, 0])
            if p:
                break
            page.wait_for_timeout(200)
        assert p, f"no Bokeh figure {name!r} on the page"
        page.wait_for_timeout(400)  # scroll settles; two taps within ~300 ms read as a double tap
        p = page.evaluate(POINT_JS, [name, x, y, 0])
        page.mouse.click(p["x"], p["y"])
        try:
            page.wait_for_function(condition, timeout=5_000 if attempt == 0 else timeout, polling=200)
            return
        except Exception:
            if attempt:
                raise


def _text_in(css: str, needle: str) -> str:
    return (f"() => [...document.querySelectorAll({json.dumps(css)})]"
            f".some(el => (el.textContent || '').includes({json.dumps(needle)}))")


@pytest.fixture(scope="module")
def notebook(jupyterlab):
    return jupyterlab.write_notebook(NAME, CELLS)


def test_live_graph_click_and_slider(jupyterlab, page, notebook, artifacts):
    _open(jupyterlab, page, notebook.name)
    jupyterlab.run_all(page)
    page.wait_for_selector(".xattr-circuit-graph canvas", timeout=120_000)
    readout = page.locator(".xattr-circuit-graph .xattr-faithfulness").first
    assert "top 4 edges · faithfulness 0.8000 · CPR 0.7100 · CMD 0.1200" in readout.inner_text()
    # a click on head 1.0 (x = layer 1, y = -head 0) reaches Python: the per-prompt effects appear
    _click_glyph(page, "xattr-circuit-graph", 1.0, 0.0, _text_in(".xattr-circuit-graph .xattr-effects", "head 1.0"))
    page.locator(".jp-OutputArea-output:has-text('python saw head (1, 0)')").wait_for(timeout=30_000)
    effects = page.locator(".xattr-circuit-graph .xattr-effects").first
    assert effects.locator("tr.xattr-prompt-row").count() == 4
    assert HOSTILE in effects.inner_text()  # the prompt shows as text ...
    assert page.locator('img[src="x"]').count() == 0 and not page.dialogs  # ... and never as markup
    # the linked head grid (same LinkedState) shows the same head
    page.wait_for_function(_text_in(".xattr-circuit-graph .xattr-head-grid", "head 1.0"), timeout=20_000)
    # an edge: the middle of 0.0 -> 1.0 (no node there) shows its saved per-prompt effects
    _click_glyph(page, "xattr-circuit-graph", 0.5, 0.0, _text_in(".xattr-circuit-graph .xattr-effects", "edge 0.0 -&gt; 1.0")
                 .replace("-&gt;", "->"))
    assert effects.locator("td.xattr-effect").all_inner_texts() == ["5.5000", "4.5000", "5.0000", "5.0000"]
    # the size slider (ipywidgets SelectionSlider, sizes 1, 2, 4, 8): one step right is 8 edges
    handle = page.locator(".xattr-circuit-graph .widget-slider .noUi-handle, .xattr-circuit-graph .slider-container "
                          "input[type=range]").first
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(_text_in(".xattr-circuit-graph .xattr-faithfulness", "top 8 edges · faithfulness 0.9500"),
                           timeout=20_000)
    page.locator(".xattr-circuit-graph").first.screenshot(path=str(artifacts / "circuit-graph-live.png"))
    # a 30 x 9 model fits the output's width: no horizontal overflow, the logits label drawn
    big = page.locator(".xattr-circuit-graph").nth(1)
    big.locator("canvas").first.wait_for(timeout=60_000)
    big.scroll_into_view_if_needed()
    area = (page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
            .filter(has=page.locator(".xattr-circuit-graph")).nth(1).bounding_box())
    canvas = big.locator("canvas").first.bounding_box()
    assert canvas["x"] >= area["x"] - 1 and canvas["x"] + canvas["width"] <= area["x"] + area["width"] + 1
    assert page.evaluate("""() => { for (const doc of window.Bokeh.documents) { for (const m of doc.all_models) {
        if (m.name !== 'xattr-circuit-graph' || m.x_range.end < 30) continue;
        const o = m.below.find(a => a.major_label_overrides).major_label_overrides;
        return o instanceof Map ? (o.get(30) ?? o.get('30')) : o['30']; } } return null; }""") == "logits"
    big.locator("canvas").first.screenshot(path=str(artifacts / "circuit-graph-live-30x9.png"))
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)
    saved = json.loads(notebook.read_text(encoding="utf-8"))
    kinds = [o["data"][MIME_TYPE_V2]["kind"] for c in saved["cells"] for o in c.get("outputs", [])
             if MIME_TYPE_V2 in o.get("data", {})]
    assert kinds == ["patching-circuit", "patching-circuit"]


def test_saved_graph_draws_without_a_kernel(jupyterlab, page, notebook, artifacts):
    saved = json.loads(notebook.read_text(encoding="utf-8"))
    if not any(MIME_TYPE_V2 in o.get("data", {}) for c in saved["cells"] for o in c.get("outputs", [])):
        import nbclient
        import nbformat

        nb = nbformat.read(notebook, as_version=4)
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
        nbformat.write(nb, notebook)
    _no_kernel_copy(jupyterlab, notebook.name, "circuit_graph_nokernel.ipynb")
    _open(jupyterlab, page, "circuit_graph_nokernel.ipynb", kernel=False)
    _dismiss_kernel_dialog(page)
    view = page.locator(".xattr-lab-renderer .xattr-lab-patching").first
    view.wait_for(timeout=60_000)
    assert view.get_attribute("data-kind") == "patching-circuit"
    assert view.locator("circle.xattr-lab-graph-node").count() == 6
    readout = view.locator(".xattr-lab-faithfulness")
    assert readout.inner_text() == "circuit: top 4 edges · faithfulness 0.8000 · CPR 0.7100 · CMD 0.1200"
    view.locator("input.xattr-lab-circuit-size").fill("1")  # sizes 1, 2, 4, 8: the second, 2 edges
    assert "top 2 edges · faithfulness 0.5000" in readout.inner_text()
    view.locator("circle.xattr-lab-graph-node[data-layer='1'][data-head='0']").click()
    rows = view.locator(".xattr-lab-effects tr.xattr-lab-prompt-row")
    assert rows.count() == 4 and HOSTILE in rows.nth(0).inner_text()
    assert view.locator("td.xattr-lab-cell.xattr-lab-selected[data-layer='1'][data-head='0']").count() == 1
    view.locator("g.xattr-lab-graph-edge[data-rank='1'] line.xattr-lab-hit").click(force=True)
    assert "edge 0.1 -> logits" in view.locator(".xattr-lab-detail").inner_text()
    assert page.locator('img[src="x"]').count() == 0 and not page.dialogs
    view.screenshot(path=str(artifacts / "circuit-graph-saved.png"))


def test_player_html_draws_the_graph_offline(page, artifacts):
    from xattr_lab.results import PatchingCircuitResult
    from xattr_lab.widgets import mime_bundle
    import numpy as np

    per_prompt = np.array([[[1.0, -2.0]], [[3.0, 0.5]]])
    E = np.zeros((2, 3))
    E[0, 2], E[1, 2] = 0.7, -0.2
    result = PatchingCircuitResult(node_scores=per_prompt.mean(0), edge_scores=E, prompt_node_scores=per_prompt,
                                   n_layers=1, n_heads=2, method="eap", positive=[HOSTILE, "b"], negative=["c", "d"])
    html = mime_bundle(result, widget=False)["text/html"]
    page.route("**/*", lambda route: route.abort())  # nothing may be fetched
    page.set_content(f"<!doctype html><html><body>{html}</body></html>")
    view = page.locator(".xattr-lab-patching")
    view.wait_for(timeout=10_000)
    assert view.locator("g.xattr-lab-graph-edge").count() == 2
    assert "faithfulness: not computed" in view.locator(".xattr-lab-faithfulness").inner_text()
    view.locator("circle.xattr-lab-graph-node[data-head='1']").click()
    assert view.locator(".xattr-lab-effects td.xattr-lab-effect").all_inner_texts() == ["-2.0000", "0.5000"]
    assert HOSTILE in view.inner_text() and page.locator('img[src="x"]').count() == 0 and not page.dialogs
    view.screenshot(path=str(artifacts / "circuit-graph-player.png"))
