"""Browser tests for the JupyterLab extension (issue 8): labextension/ in JupyterLab + Chromium.

Uses the shared harness of tests/browser/conftest.py (``jupyterlab``, ``page``, ``artifacts``).
The extension must be installed in the environment JupyterLab runs from (``pip install -e .``, or
for a TypeScript loop ``PYTHONPATH=. jupyter-builder develop --overwrite .``).

The notebook builds one result of each kind from fixed numpy arrays (no model download, a second
of kernel time) and shows each through the real front end (``mime_bundle`` with a live view), so
the saved outputs are exactly what a workshop notebook saves.
"""
from __future__ import annotations

import json
import re

import pytest

from xattr_lab.constants import MIME_TYPE, MIME_TYPE_V2, WIDGET_MIME

pytestmark = pytest.mark.browser

HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>"]

SETUP = r'''
import numpy as np, ipywidgets as widgets
from IPython.display import display
from xattr_lab.results import Attribution, FlowResult, HeadStats, CircuitResult
from xattr_lab.widgets import mime_bundle
from xattr_lab.widgets.select import view_for

TOKENS = ["[CLS]", "a", "gripping", "<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "film", "[SEP]"]
rng = np.random.default_rng(0)
L, H, n = 2, 3, len(TOKENS)
edge = rng.random((L, n, n)) * (rng.random((L, n, n)) > 0.4)
att = rng.random((L, H, n, n)); att /= att.sum(-1, keepdims=True)
results = [
    Attribution(tokens=TOKENS, scores=np.linspace(-1, 1, n), method="grad_x_input", target=1,
                target_label="POSITIVE", prediction={"POSITIVE": 0.8, "NEGATIVE": 0.2}, model="synthetic"),
    FlowResult(tokens=TOKENS, attributions=edge[0].sum(0), edge_flow=edge, value=float(edge[0].sum()), model="synthetic"),
    HeadStats(tokens=TOKENS, entropy=rng.random((L, H)), cone_index=rng.random(L + 1),
              patterns=[["diagonal"] * H for _ in range(L)], attentions=att, model="synthetic"),
    CircuitResult(node_scores=np.array([[0., 3, 1], [2, 0, 1]]), edge_scores=np.zeros((L * H, L * H)),
                  codes_positive=rng.integers(0, 9, (4, L * H)).astype(float),
                  codes_negative=rng.integers(0, 9, (4, L * H)).astype(float), n_layers=L, n_heads=H,
                  unique_codes={"1": [3, 4]}, positive=["p"] * 4, negative=["n"] * 4, model="synthetic"),
]
views = [view_for(r) for r in results]
clicks = widgets.Label("no click yet")
views[2].state.observe(lambda ch: setattr(clicks, "value", f"python saw statistic {ch['new']}"), names="statistic")
views[2].state.observe(lambda ch: setattr(clicks, "value", f"python saw head {tuple(ch['new'])}"), names="head")
'''
SHOW = "display(mime_bundle(results[{i}], view=views[{i}]), raw=True)"
KINDS = ["attribution", "flow", "heads", "circuit"]


def _extension_loaded(page) -> None:
    config = page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent)")
    names = [ext.get("name") for ext in config.get("federated_extensions", [])]
    assert "xattr-lab" in names, (
        "the xattr-lab labextension is not installed where JupyterLab looks: run `pip install -e .` "
        f"(or `PYTHONPATH=. jupyter-builder develop --overwrite .`); found {names}")


def _open(jupyterlab, page, name: str, kernel: bool = True) -> None:
    """Open ``name`` alone (``?reset`` drops the tabs other tests left in the saved workspace)."""
    page.goto(jupyterlab.url(f"lab/tree/{name}?reset"), wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=120_000)
    if kernel:
        jupyterlab.wait_idle(page)


def _renderers(page):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .xattr-lab-renderer")


def _save(page) -> None:
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    page.wait_for_function(
        "() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-mod-dirty') &&"
        " !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)


def _open_without_kernel(jupyterlab, page, name: str) -> None:
    """Open ``name`` with no kernel: its kernelspec names no installed kernel, and we pick "No Kernel"."""
    path = jupyterlab.root_dir / name
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["metadata"]["kernelspec"] = {"name": "xattr-no-such-kernel", "display_name": "gone", "language": "none"}
    nb["metadata"]["language_info"] = {"name": "none"}
    path.write_text(json.dumps(nb), encoding="utf-8")
    _open(jupyterlab, page, name, kernel=False)
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


@pytest.fixture(scope="module")
def notebook(jupyterlab):
    return jupyterlab.write_notebook(
        "xattr_ext.ipynb", [SETUP] + [SHOW.format(i=i) for i in range(4)] + ["clicks"])


def test_live_widgets_are_mounted_and_reach_python(jupyterlab, page, notebook, artifacts):
    """(2) With a kernel: every result shows its live widget, and a click in it reaches Python."""
    _open(jupyterlab, page, notebook.name)
    _extension_loaded(page)
    jupyterlab.run_all(page)
    renderers = _renderers(page)
    renderers.nth(3).wait_for(timeout=60_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.xattr-lab-renderer')].filter(r => r.dataset.xattrMode === 'live'"
        " && r.querySelector('.jupyter-widgets')).length === 4", timeout=60_000)
    assert renderers.count() == 4
    # the live ipywidgets views, not the JSON drawing, and no "Loading widget..." placeholder
    assert page.locator(".xattr-lab-renderer .xattr-lab-static").count() == 0
    for i, cls in enumerate(("xattr-token-strip", "xattr-flow", "xattr-head-grid", "xattr-circuit")):
        assert renderers.nth(i).locator(f".xattr-lab-live .{cls}").count() == 1, cls
    # a click reaches Python: pick another statistic in the head grid's dropdown; Python's observer
    # writes into a Label that the browser then shows
    heads = renderers.nth(2)
    select = heads.locator("select").first
    options = select.locator("option").all_text_contents()
    other = next(o for o in options if o != select.input_value())
    select.select_option(label=other)
    page.locator(f".jp-OutputArea-output:has-text('python saw statistic {other}')").wait_for(timeout=30_000)
    # and a mouse click on a cell of the Bokeh head grid (the canvas): Python's tap callback runs
    canvas = heads.locator("canvas").first
    canvas.wait_for(timeout=30_000)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    label = page.locator(".jp-OutputArea-output:has-text('python saw head')")
    for fy in (0.35, 0.55, 0.25, 0.65):
        for fx in (0.4, 0.55, 0.7, 0.3):
            page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            try:
                label.wait_for(timeout=1_500)
                break
            except Exception:
                continue
        if label.count():
            break
    assert re.search(r"python saw head \(\d+, \d+\)", label.inner_text()), "a click on the head grid never reached Python"
    page.screenshot(path=str(artifacts / "labextension_live.png"), full_page=True)
    _save(page)
    saved = json.loads(notebook.read_text(encoding="utf-8"))
    bundles = [o["data"] for c in saved["cells"] for o in c.get("outputs", []) if "data" in o]
    xattr = [b for b in bundles if MIME_TYPE_V2 in b]
    assert [b[MIME_TYPE_V2]["kind"] for b in xattr] == KINDS
    assert all(b[MIME_TYPE_V2]["model_id"] for b in xattr)
    assert all(WIDGET_MIME in b for b in xattr)


def test_saved_results_render_without_a_kernel(jupyterlab, page, notebook, artifacts):
    """(1) The notebook saved by the previous test, reopened with no kernel: every kind draws from
    its JSON and reacts to clicks."""
    saved = json.loads(notebook.read_text(encoding="utf-8"))
    if not any(o.get("data", {}).get(MIME_TYPE_V2) for c in saved["cells"]
               for o in c.get("outputs", [])):
        # run alone: execute it headless instead of through the UI (same kernel-side bundles)
        import nbclient
        import nbformat

        nb = nbformat.read(notebook, as_version=4)
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
        nbformat.write(nb, notebook)
    name = "xattr_ext_nokernel.ipynb"
    (jupyterlab.root_dir / name).write_text(notebook.read_text(encoding="utf-8"), encoding="utf-8")
    _open_without_kernel(jupyterlab, page, name)
    _extension_loaded(page)
    renderers = _renderers(page)
    renderers.nth(3).wait_for(timeout=60_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.xattr-lab-renderer')].filter(r => r.dataset.xattrMode === 'static')"
        ".length === 4", timeout=30_000)
    kinds = [renderers.nth(i).locator(".xattr-lab-view").get_attribute("data-kind") for i in range(4)]
    assert kinds == KINDS
    assert page.get_by_text("Loading widget...").count() == 0
    # attribution: hover shows the value, click selects
    strip = renderers.nth(0)
    token = strip.locator(".xattr-lab-token").nth(2)
    token.hover()
    assert "gripping" in strip.locator(".xattr-lab-readout").inner_text()
    token.click()
    assert "xattr-lab-selected" in token.get_attribute("class")
    # flow: clicking an input node highlights its paths
    flow = renderers.nth(1)
    assert flow.locator("line.xattr-lab-edge").count() > 0
    flow.locator("circle.xattr-lab-node[data-layer='2'][data-index='0']").click()
    assert flow.locator("svg.xattr-lab-has-selection").count() == 1
    assert flow.locator("line.xattr-lab-hl").count() > 0
    # head grid: a click shows the head's attention matrix (n x n cells)
    heads = renderers.nth(2)
    heads.locator("td.xattr-lab-cell[data-layer='1'][data-head='2']").click()
    assert "Layer 1, head 2" in heads.locator(".xattr-lab-detail").inner_text()
    assert heads.locator("rect.xattr-lab-matrix-cell").count() == 7 * 7
    # circuit: a click shows the head's codes
    circuit = renderers.nth(3)
    circuit.locator("td.xattr-lab-cell[data-layer='0'][data-head='1']").click()
    assert "codes only in positives: 3, 4" in circuit.locator(".xattr-lab-detail").inner_text()
    assert circuit.locator(".xattr-lab-code-table tr").count() == 1 + 4
    page.screenshot(path=str(artifacts / "labextension_no_kernel.png"), full_page=True)


def _put_settings(jupyterlab, raw: dict) -> None:
    import urllib.request

    body = json.dumps({"raw": json.dumps(raw)}).encode()
    request = urllib.request.Request(jupyterlab.url("lab/api/settings/xattr-lab:plugin"), data=body, method="PUT",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"token {jupyterlab.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204)


def _write_raw_notebook(jupyterlab, name: str, cells: list[dict], kernel: bool = True) -> None:
    metadata = {"language_info": {"name": "python"}}
    if kernel:
        metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb = {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
    (jupyterlab.root_dir / name).write_text(json.dumps(nb), encoding="utf-8")


def test_explain_selected_text_produces_a_result(jupyterlab, page, artifacts):
    """(3) Select text in a markdown cell, "Explain selected text" from the context menu: a new cell
    runs %%xattr explain on it in the kernel, with the model and method from the settings."""
    text = 'A gripping film, "really" {not} $HOME'
    _write_raw_notebook(jupyterlab, "explain.ipynb", [
        {"cell_type": "markdown", "id": "m0", "metadata": {}, "source": text},
        {"cell_type": "code", "id": "c0", "metadata": {}, "execution_count": None, "outputs": [], "source": "1 + 1"},
    ])
    _put_settings(jupyterlab, {"model": "tiny-bert", "method": "grad_x_input"})
    try:
        _open(jupyterlab, page, "explain.ipynb")
        _extension_loaded(page)
        paragraph = page.locator(".jp-MarkdownCell .jp-RenderedMarkdown p").first
        paragraph.wait_for(timeout=30_000)
        # select the rendered text as a user does (a double/triple click would open the editor)
        paragraph.evaluate("""p => { const range = document.createRange(); range.selectNodeContents(p);
                                     const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range); }""")
        assert page.evaluate("() => window.getSelection().toString()").strip() == text
        paragraph.click(button="right")
        page.locator(".lm-Menu-item:has-text('Explain selected text')").first.click()
        renderer = page.locator(".jp-Cell:nth-child(2) .xattr-lab-renderer")
        renderer.wait_for(timeout=180_000)
        jupyterlab.wait_idle(page)
        page.wait_for_function("() => document.querySelector('.jp-Cell:nth-child(2) .xattr-lab-renderer')"
                               ".dataset.xattrMode === 'live'", timeout=60_000)
        page.screenshot(path=str(artifacts / "labextension_explain.png"), full_page=True)
        _save(page)
    finally:
        _put_settings(jupyterlab, {})
    saved = json.loads((jupyterlab.root_dir / "explain.ipynb").read_text(encoding="utf-8"))
    cell = saved["cells"][1]
    assert "run_cell_magic(\"xattr\", \"explain\"" in "".join(cell["source"])
    payloads = [o["data"][MIME_TYPE_V2] for o in cell["outputs"]
                if MIME_TYPE_V2 in o.get("data", {})]
    assert len(payloads) == 1, cell["outputs"]
    payload = payloads[0]
    assert payload["kind"] == "attribution"
    assert payload["text"] == text  # quotes, braces and $ arrive verbatim (no IPython expansion)
    assert payload["model"] == "tiny-bert" and payload["method"] == "grad_x_input"  # from the settings
    assert "".join(saved["cells"][2]["source"]) == "1 + 1"


def test_hostile_tokens_run_no_script_and_export(jupyterlab, page, artifacts):
    """(4) Hostile token strings in a saved payload show as text and run nothing, also in the HTML
    export; the export commands give JSON, HTML and PNG files."""
    payload = {
        "schema": "xattr.v1", "kind": "attribution", "tokens": ["[CLS]", *HOSTILE, "[SEP]"],
        "scores": [0.0, 1.0, -0.5, 0.0], "raw": [0.0, 1.0, -0.5, 0.0], "target": 1,
        "method": HOSTILE[1], "options": {}, "prediction": {HOSTILE[0]: 1.0}, "text": HOSTILE[0],
        "model": HOSTILE[0], "target_label": HOSTILE[1], "model_id": None,
    }
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    output = {"output_type": "display_data", "metadata": {},
              "data": {MIME_TYPE: payload, "image/png": png, "text/plain": "Attribution(...)"}}
    _write_raw_notebook(jupyterlab, "hostile.ipynb", [
        {"cell_type": "code", "id": "h0", "metadata": {}, "execution_count": 1, "outputs": [output], "source": "a"},
        {"cell_type": "code", "id": "h1", "metadata": {}, "execution_count": 2, "source": "b", "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {
                MIME_TYPE: {**payload, "schema": "xattr.v99"}, "text/plain": "x"}}]},
    ])
    _open(jupyterlab, page, "hostile.ipynb")
    _extension_loaded(page)
    strip = page.locator(".xattr-lab-renderer").first
    strip.locator(".xattr-lab-token").nth(1).wait_for(timeout=30_000)
    for token in strip.locator(".xattr-lab-token").all():
        token.hover()
        token.click()
    tokens = strip.locator(".xattr-lab-token").all_text_contents()
    assert tokens[1:3] == HOSTILE
    assert HOSTILE[0] in strip.inner_text()
    # the unknown schema version gets a clear message
    message = page.locator(".xattr-lab-renderer .xattr-lab-message")
    assert '"xattr.v99"' in message.inner_text() and '"xattr.v1"' in message.inner_text()
    # export the first cell's result through the commands (palette)
    page.locator(".jp-Cell").first.locator(".jp-InputArea-prompt").click()
    files = {}
    for fmt in ("JSON", "HTML", "PNG"):
        with page.expect_download(timeout=30_000) as info:
            page.keyboard.press("Control+Shift+c")
            page.locator(".lm-CommandPalette-input").fill(f"Export result as {fmt}")
            page.keyboard.press("Enter")
        download = info.value
        path = artifacts / f"hostile-export.{fmt.lower()}"
        download.save_as(str(path))
        files[fmt] = (download.suggested_filename, path.read_bytes())
    assert files["JSON"][0] == "xattr-lab-attribution.json"
    exported = json.loads(files["JSON"][1])
    assert exported["tokens"] == payload["tokens"] and "model_id" not in exported
    html = files["HTML"][1].decode()
    assert "<img" not in html and "<script" not in html.lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert files["PNG"][1].startswith(b"\x89PNG")
    # nothing ran: no dialogs, no element created from a token, the exported page included
    page.set_content(html)
    page.wait_for_timeout(500)
    assert page.locator(".xattr-lab-token").count() == 4
    assert page.locator("img").count() == 0 and page.locator("script").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]
