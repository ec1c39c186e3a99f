"""Notebook front end (xattr_widgets, folder widgets/, imported as xattr_lab.widgets): views from fake results, callbacks, exports, MIME bundle."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO_ROOT
from xattr_lab.results import Attribution, CircuitResult, FlowResult, HeadStats, Result
from xattr_lab import widgets
from xattr_lab.widgets import core
from xattr_lab.constants import MIME_TYPE as XATTR_MIME, MIME_TYPE_V2 as XATTR_MIME_V2, WIDGET_MIME
from xattr_lab.payload import from_payload, to_payload

HOSTILE = ["[CLS]", "\u0120a", "##b", "<img src=x onerror=alert(1)>", "</script>", "$$x$$", "\"'&", "[SEP]"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def conserving_flow(rng, L=3, n=len(HOSTILE)):
    """A flow that is conserved at every inner node: top flows routed down by row-stochastic splits."""
    E = np.zeros((L, n, n))
    node = rng.random(n) + 0.1
    for layer in range(L - 1, -1, -1):
        split = rng.random((n, n)) ** 3
        split /= split.sum(axis=1, keepdims=True)
        E[layer] = node[:, None] * split
        node = E[layer].sum(axis=0)
    return E


@pytest.fixture
def results():
    rng = np.random.default_rng(0)
    n, L, H = len(HOSTILE), 3, 4
    attribution = Attribution(tokens=HOSTILE, scores=rng.normal(size=n), method="sig", target=1,
                              target_label="POSITIVE", prediction={"POSITIVE": 0.8, "NEGATIVE": 0.2}, model="fake")
    E = conserving_flow(rng, L, n)
    flow = FlowResult(tokens=HOSTILE, attributions=E[0].sum(axis=0), edge_flow=E, value=E[-1].sum(), sources=[0])
    attn = rng.random((L, H, n, n))
    attn /= attn.sum(axis=-1, keepdims=True)
    heads = HeadStats(tokens=HOSTILE, entropy=rng.random((L, H)), cone_index=rng.random(L + 1) * n,
                      cone_index_normalised=rng.random(L + 1),
                      patterns=[["broad", "diagonal", "first", "broad"]] * L, attentions=attn, texts=["t"])
    circuit = CircuitResult(node_scores=rng.integers(0, 5, (L, H)).astype(float),
                            edge_scores=np.triu(rng.integers(0, 3, (L * H, L * H)), 1).astype(float),
                            codes_positive=rng.integers(0, 6, (5, L * H)), codes_negative=rng.integers(0, 6, (5, L * H)),
                            n_layers=L, n_heads=H, positive=["<b>pos</b>"] * 5, negative=["neg"] * 5,
                            truth=(np.arange(L * H).reshape(L, H) % 5 == 0).astype(int).tolist())
    circuit.edge_scores = circuit.edge_scores + circuit.edge_scores.T
    return {"attribution": attribution, "flow": flow, "heads": heads, "circuit": circuit}


# ---------------------------------------------------------------------------- import hygiene
def test_front_end_never_imports_torch():
    code = (
        "import sys, numpy as np\n"
        "import xattr_lab, xattr_lab.widgets, xattr_lab.magic\n"
        "from xattr_lab.widgets import views, explorer, export, bundle, figures, core\n"
        "from xattr_lab.results import Attribution\n"
        "a = Attribution(tokens=['a', 'b'], scores=np.array([1.0, -1.0]))\n"
        "v = xattr_lab.widgets.view(a, display=False); v.widget; xattr_lab.widgets.mime_bundle(a)\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'xattr_lab')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


#: The front end's layers, bottom to top: a module imports only modules of lower layers (views/*
#: also each other), and from the rest of xattr_lab only the torch-free pure modules below. ``alias``
#: (stdlib only) gives the package its public name ``xattr_lab.widgets``.
LAYERS = ["alias", "core", "player", "sizing", "figures", "export", "bundle", "views", "select", "explorer",
          "notebook_html"]
PURE = {"xattr_lab", "xattr_lab.constants", "xattr_lab.target_spec", "xattr_lab.methods", "xattr_lab.methods.registry",
        "xattr_lab.graphs", "xattr_lab.graphs.rollout", "xattr_lab.core", "xattr_lab.core.cache",
        "xattr_lab.core.locking", "xattr_lab.errors", "xattr_lab.payload"}  # stdlib/numpy only (graphs.rollout: numpy)
FRONT_END = "xattr_widgets"


def _homes() -> dict[str, Path]:
    """The folder of each root package: xattr_lab (kernel_ext/) and the front end (widgets/)."""
    import xattr_lab

    return {"xattr_lab": Path(xattr_lab.__file__).parent, FRONT_END: Path(widgets.__file__).parent}


def _is_module(name: str) -> bool:
    root, *rest = name.split(".")
    home = _homes().get(root)
    if home is None or not rest:
        return False
    where = home.joinpath(*rest)
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _import_nodes(path: Path, package: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement of ``path``, at any depth
    (function-level imports count too); relative imports resolved against ``package``."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found.append((base, [a.name for a in node.names]))
    return found


def _imports(path: Path, package: str) -> list[str]:
    """Every module ``path`` imports (a ``from package import module`` counts the module too)."""
    found = []
    for base, names in _import_nodes(path, package):
        found.append(base)
        found += [f"{base}.{name}" for name in names if _is_module(f"{base}.{name}")]
    return found


def _front_end_modules():
    """(path, parts below the package, package of the module) of every front-end module."""
    root = Path(widgets.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").parts
        yield path, rel, ".".join([FRONT_END, *rel[:-1]])


def test_the_front_end_is_its_own_root_package_under_its_public_name():
    import importlib

    import xattr_lab
    import xattr_widgets

    root = REPO_ROOT
    assert Path(xattr_widgets.__file__).parent == root / "widgets"  # the card's top-level folder
    assert not (root / "kernel_ext" / "widgets").exists()
    assert widgets is xattr_widgets and xattr_lab.widgets is xattr_widgets
    # every submodule under both names is one module object, with its own spec (resources, reload)
    for name in ("core", "views", "views.head_grid", "views.circuit_view", "explorer", "notebook_html", "player"):
        public = importlib.import_module(f"xattr_lab.widgets.{name}")
        assert public is importlib.import_module(f"{FRONT_END}.{name}"), name
        assert public.__spec__.name == f"{FRONT_END}.{name}", name
    assert importlib.util.find_spec("xattr_lab.widgets.no_such_module") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("xattr_lab.widgets.no_such_module")


def test_no_front_end_module_over_the_size_limit():
    """docs/ARCHITECTURE.md's ~400-line limit, for the front end's folder (tests/project/test_architecture.py walks kernel_ext/)."""
    long = {"/".join(rel): n for path, rel, _ in _front_end_modules() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_front_end_layers_import_only_downwards():
    checked = 0
    for path, rel, package in _front_end_modules():
        if rel == ("__init__",):
            continue  # the package imports its layers lazily, on top of all of them
        layer = LAYERS.index(rel[0])
        for name in _imports(path, package):
            where = "/".join(rel)
            assert not name.startswith("xattr_lab.widgets"), f"{where} imports {name}: inside, say {FRONT_END}"
            if name.startswith(f"{FRONT_END}."):
                target = name.split(".")[1]
                assert target == rel[0] or LAYERS.index(target) < layer, f"{where} imports {name}, a layer above it"
            elif name.startswith("xattr_lab"):
                assert name in PURE, f"{where} imports {name}: the front end reads only {sorted(PURE)}"
            assert name.split(".")[0] != "torch", f"{where} imports torch"
            checked += 1
    assert checked > 50


def test_front_end_modules_share_no_private_names():
    """What one front-end module takes from another is named as shared (no leading underscore)."""
    taken = []
    for path, rel, package in _front_end_modules():
        for base, names in _import_nodes(path, package):
            if base.startswith(FRONT_END) or base.startswith("xattr_lab"):
                taken += [f"{'/'.join(rel)}: {base}.{name}" for name in names
                          if name.startswith("_") and not name.startswith("__")]
    assert taken == []


def test_a_front_end_module_importing_torch_breaks_the_build(tmp_path):
    """lint-imports (make test, CI) fails when a widgets module imports torch, directly or through the compute
    package: .importlinter run against a copy of the front end, unchanged (kept) and then with such an import."""
    import shutil

    root = REPO_ROOT
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is part of the dev extra"
    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "xattr_lab").symlink_to(root / "kernel_ext", target_is_directory=True)
    copy = Path(shutil.copytree(root / "widgets", packages / FRONT_END,
                                ignore=shutil.ignore_patterns("__pycache__", "static")))
    shutil.copy(root / ".importlinter", tmp_path / ".importlinter")
    env = {**__import__("os").environ, "PYTHONPATH": str(packages)}

    def lint_copy() -> subprocess.CompletedProcess:
        return subprocess.run([lint, "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    kept = lint_copy()
    assert kept.returncode == 0 and "0 broken" in kept.stdout, kept.stdout[-3000:] + kept.stderr[-2000:]
    base = copy / "views" / "base.py"
    original = base.read_text(encoding="utf-8")
    for line in ("import torch", "from xattr_lab.methods import gradients"):  # directly; through xattr-lab
        base.write_text(f"{original}\n\ndef _later():\n    {line}\n", encoding="utf-8")
        broken = lint_copy()
        assert broken.returncode != 0, line
        report = broken.stdout.split("Broken contracts")[-1]
        assert "never imports torch" in report and f"{FRONT_END}.views.base" in report, report[-3000:]


# ---------------------------------------------------------------------------- core helpers
def test_pretty_tokens_strip_markers_and_keep_text():
    assert core.pretty_tokens(["\u0120film", "##ing", "\u2581the", "<b>", " ", "\n"]) == [
        "film", "ing", "the", "<b>", "\u2423", "\\n"]
    assert core.escape("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"


def test_wrap_layout_keeps_rows_within_width_and_pages():
    labels = [f"tok{i}" for i in range(700)]
    x, rows, widths = core.wrap_layout(labels, width_px=300)
    assert np.all(x + widths / 2 <= 300 + 1e-9) and rows.max() > 10
    assert np.all(np.diff(rows) >= 0)
    assert [len(p) for p in core.pages(700, 300)] == [300, 300, 100]


def test_flow_decomposition_sums_back_to_the_flow():
    rng = np.random.default_rng(1)
    E = conserving_flow(rng, L=4, n=6)
    by_input = sum(core.flow_to_input(E, j) for j in range(6))
    by_output = sum(core.flow_from_output(E, i) for i in range(6))
    np.testing.assert_allclose(by_input, E, atol=1e-12)
    np.testing.assert_allclose(by_output, E, atol=1e-12)
    carried = core.flow_to_input(E, 2)
    # conserved: the flow that ends at input 2 is the same through every layer
    np.testing.assert_allclose(carried.sum(axis=(1, 2)), E[0][:, 2].sum())
    T = core.node_throughput(E)
    np.testing.assert_allclose(T[1:], E.sum(axis=2), atol=1e-12)
    np.testing.assert_allclose(T[0], E[0].sum(axis=0))


def test_top_edges_keeps_the_largest():
    E = np.zeros((2, 3, 3))
    E[0, 1, 2], E[1, 0, 0], E[1, 2, 1] = 5.0, 3.0, 1.0
    picked = core.top_edges(E, max_edges=2)
    assert picked.tolist() == [[0, 1, 2], [1, 0, 0]]


def test_display_rollout_matches_the_flows_module():
    from xattr_lab import flows
    rng = np.random.default_rng(2)
    attn = rng.random((3, 2, 5, 5))
    attn /= attn.sum(axis=-1, keepdims=True)
    reference = flows.rollout(attn.mean(axis=1), residual=0.5)
    for layer in range(3):
        np.testing.assert_allclose(core.rollout(attn, layer), reference[layer], atol=1e-12)


def test_set_diverging_palette():
    try:
        palette = core.set_diverging("PiYG")
        assert core.DIVERGING == palette and palette[0] != "#053061"
        assert core.diverging_colours(np.array([-1.0]))[0] == palette[0]
        with pytest.raises(ValueError):
            core.set_diverging("NoSuchPalette")
    finally:
        core.set_diverging("RdBu")
    assert core.DIVERGING[0] == "#053061"


# ---------------------------------------------------------------------------- views
@pytest.mark.parametrize("kind, cls, css", [("attribution", "TokenStrip", "xattr-token-strip"),
                                            ("flow", "FlowView", "xattr-flow"),
                                            ("heads", "HeadGrid", "xattr-head-grid"),
                                            ("circuit", "CircuitView", "xattr-circuit")])
def test_view_builds_for_each_result_kind(results, kind, cls, css):
    v = widgets.view(results[kind], display=False)
    assert type(v).__name__ == cls
    w = v.widget
    assert css in w._dom_classes and "xattr-view" in w._dom_classes
    assert v.model_id == w.model_id
    from jupyter_bokeh import BokehModel

    def bokeh_models(widget):
        found = [widget] if isinstance(widget, BokehModel) else []
        for child in getattr(widget, "children", ()):
            found += bokeh_models(child)
        return found

    assert bokeh_models(w), "every view draws at least one Bokeh figure"


def test_view_of_unknown_object_is_a_clear_error():
    with pytest.raises(TypeError, match="no view for"):
        widgets.view(object(), display=False)


def test_token_strip_tap_selects_and_shows_exact_value(results):
    a = results["attribution"]
    v = widgets.view(a, display=False)
    v.widget
    # what a Bokeh tap does: the browser sets the selection, the Python callback runs
    v._source.selected.indices = [3]
    assert v.state.token == 3
    assert f"{a.scores[3]:+.6g}" in v._info.value
    assert "&lt;img src=x onerror=alert(1)&gt;" in v._info.value and "<img" not in v._info.value
    v.select_token(1)
    assert v._source.selected.indices == [1]
    with pytest.raises(IndexError):
        v.select_token(99)


def test_token_strip_pages_hundreds_of_tokens():
    tokens = [f"w{i}" for i in range(700)]
    a = Attribution(tokens=tokens, scores=np.linspace(-1, 1, 700))
    v = widgets.TokenStrip(a, page_size=300)
    v.widget
    assert v.n_pages == 3 and v._pager.layout.display == "flex"
    assert len(v._source.data["token"]) == 300
    v.select_token(650)
    assert v.page == 2 and v._source.data["index"][0] == 600
    assert v._source.selected.indices == [50]
    assert max(v._source.data["y"]) == 0 and min(v._source.data["y"]) < -3  # wrapped into rows
    v.set_page(0)
    assert v._source.data["index"][0] == 0 and v._source.selected.indices == []


def test_token_strip_colours_are_diverging_and_symmetric():
    a = Attribution(tokens=["neg", "zero", "pos"], scores=np.array([-2.0, 0.0, 2.0]))
    v = widgets.TokenStrip(a)
    v.widget
    colours = v._source.data["colour"]
    assert colours[0] == core.DIVERGING[0] and colours[2] == core.DIVERGING[-1]
    assert colours[1] == core.DIVERGING[len(core.DIVERGING) // 2]


def test_flow_view_input_click_highlights_its_paths(results):
    f = results["flow"]
    v = widgets.view(f, display=False)
    v.widget
    n = len(f.tokens)
    v._nodes.selected.indices = [3]  # layer 0, token 3: a tap on an input node
    assert v.state.token == 3 and v.highlight["kind"] == "input"
    np.testing.assert_allclose(v.highlight["carried"], f.attributions[3])
    assert len(v._highlight.data["flow"]) > 0
    np.testing.assert_allclose(v._throughput.data["value"], core.node_throughput(f.edge_flow)[:, 3])
    assert "&lt;img src=x onerror=alert(1)&gt;" in v._info.value
    # right column: output token, no explainer -> paths leaving it
    L = f.edge_flow.shape[0]
    v._nodes.selected.indices = [L * n + 0]
    assert v.state.output == 0 and v.highlight["kind"] == "output"


def test_flow_view_output_click_retargets(results):
    calls = []
    v = widgets.FlowView(results["flow"], retarget=calls.append)
    v.widget
    v.select_output(5)
    assert calls == [5]


def test_linked_views_share_the_selection(results):
    state = widgets.LinkedState()
    strip = widgets.TokenStrip(results["attribution"], state=state)
    flow = widgets.FlowView(results["flow"], state=state)
    strip.widget, flow.widget
    strip._source.selected.indices = [2]
    assert flow.highlight["position"] == 2 and flow._nodes.selected.indices == [2]
    flow.close()
    strip.select_token(4)
    assert flow.highlight["position"] == 2  # closed views stop following


def test_head_grid_cell_shows_attention_matrix(results):
    h = results["heads"]
    v = widgets.view(h, display=False)
    v.widget
    row = 1 * 4 + 2  # layer 1, head 2
    v._cells.selected.indices = [row]
    assert v.state.head == (1, 2) and v.detail["has_matrix"]
    fig, source, model, n = v._matrix
    np.testing.assert_allclose(np.reshape(source.data["value"], (n, n)), h.attentions[1, 2])
    v.select_head(0, 0)  # reuses the figure, new values
    assert v._matrix[2] is model
    np.testing.assert_allclose(np.reshape(v._matrix[1].data["value"], (n, n)), h.attentions[0, 0])


def test_head_grid_layer_label_shows_rollout_and_cone_index(results):
    h = results["heads"]
    v = widgets.view(h, display=False)
    v.widget
    v._layers.selected.indices = [2]
    assert v.state.layer == 2 and v.detail["kind"] == "layer"
    assert v.detail["cone_index_out"] == pytest.approx(h.cone_index[3])
    n = len(h.tokens)
    np.testing.assert_allclose(np.reshape(v._matrix[1].data["value"], (n, n)), core.rollout(h.attentions, 2))
    assert f"{h.cone_index[3]:.3f}" in v._detail_title.value


def test_head_grid_statistic_switch_recolours(results):
    v = widgets.view(results["heads"], display=False)
    v.widget
    assert set(v.statistics) == {"entropy", "pattern"}
    before = list(v._cells.data["colour"])
    v._stat_picker.value = "pattern"
    assert v.state.statistic == "pattern" and v._cells.data["colour"] != before
    assert v._cells.data["text"][1] == "diagon"
    assert "diagonal" in v._legend.value
    with pytest.raises(KeyError):
        v.set_statistic("nope")


def test_head_grid_extra_statistic_for_ablation(results):
    ablation = np.arange(12, dtype=float).reshape(3, 4)
    v = widgets.HeadGrid(results["heads"], extra={"ablation effect": ablation})
    v.widget
    v.set_statistic("ablation effect")
    assert v._cells.data["value"] == ablation.ravel().tolist()


def test_circuit_view_codes_and_edges(results):
    c = results["circuit"]
    v = widgets.view(c, display=False)
    v.widget
    assert v.state.statistic == "circuit node score"
    v.set_statistic("ground truth")
    assert v._cells.data["value"] == (np.arange(12) % 5 == 0).astype(float).tolist()
    assert "class-mean difference" not in v.statistics  # only when the result carries the baseline
    with_baseline = widgets.view(dataclasses.replace(c, difference_scores=np.arange(12.0).reshape(3, 4).tolist()),
                                 display=False)
    with_baseline.widget
    with_baseline.set_statistic("class-mean difference")
    assert with_baseline._cells.data["value"] == np.arange(12.0).tolist()
    v.select_head(1, 3)
    flat = 1 * 4 + 3
    codes = v.detail["codes"]
    assert codes["positive"] == c.codes_positive[:, flat].astype(int).tolist()
    assert codes["unique"] == sorted(set(codes["positive"]) - set(codes["negative"]))
    assert "&lt;b&gt;pos&lt;/b&gt;" in v._extra_detail.value and "<b>pos</b>" not in v._extra_detail.value
    edges = v.top_edges()
    assert [e[2] for e in edges] == sorted([e[2] for e in edges], reverse=True)
    a, b, score = edges[0]
    la, ha = map(int, a.split("."))
    lb, hb = map(int, b.split("."))
    assert c.edge_scores[la * 4 + ha, lb * 4 + hb] == score == c.edge_scores.max()


def test_circuit_view_names_the_silent_code(tmp_path):
    """circuits.codes gives ``features`` when no feature fires: the table says "silent", not a number."""
    codes_pos = np.array([[3, 0], [1, 0]])  # head 0: silent, then feature 1
    codes_neg = np.array([[3, 0], [3, 2]])
    c = CircuitResult(node_scores=np.array([[1.0, 1.0]]), edge_scores=np.zeros((2, 2)), codes_positive=codes_pos,
                      codes_negative=codes_neg, n_layers=1, n_heads=2, positive=["p0", "p1"], negative=["n0", "n1"],
                      options={"features": 3})
    v = widgets.view(c, display=False)
    v.widget
    v.select_head(0, 0)
    assert v.detail["codes"]["silent"] == 3
    html = v._extra_detail.value
    assert html.count(">silent<") == 3 and "<b>1</b>" in html and ">3<" not in html
    v.select_head(0, 1)
    assert "silent" not in v._extra_detail.value and "<b>0</b>" not in v._extra_detail.value
    v.select_head(0, 0)
    assert open(v.to_png(tmp_path / "codes.png"), "rb").read().startswith(PNG_MAGIC)  # the code list is drawn


# ---------------------------------------------------------------------------- exports
CDN = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", re.I)


@pytest.mark.parametrize("kind", ["attribution", "flow", "heads", "circuit"])
def test_html_export_is_self_contained_and_escapes_tokens(results, kind, tmp_path):
    v = widgets.view(results[kind], display=False)
    if kind == "flow":
        v.select_input(3)
    if kind in ("heads", "circuit"):
        v.select_head(0, 1)
    path = v.to_html(tmp_path / "v.html")
    page = open(path, encoding="utf-8").read()
    assert not CDN.search(page), "no external script/link/img"
    assert "Bokeh" in page and len(page) > 300_000  # BokehJS inlined
    assert "<img src=x" not in page and "onerror=alert(1)>" not in page
    assert page.count("</script>") == len(re.findall(r"<script\b", page))
    assert "<b>pos</b>" not in page
    if kind != "circuit":
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize("kind", ["attribution", "flow", "heads", "circuit"])
def test_png_export_writes_a_png(results, kind, tmp_path):
    v = widgets.view(results[kind], display=False)
    path = v.to_png(tmp_path / "v.png")
    data = open(path, "rb").read()
    assert data.startswith(PNG_MAGIC)
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert image.shape[0] > 100 and image.shape[1] > 300


def test_view_json_round_trips_the_result(results):
    v = widgets.view(results["flow"], display=False)
    v.select_input(2)
    payload = json.loads(v.to_json())
    assert payload["view"] == {"type": "flow", "selection": {"token": 2, "output": -1, "head": [-1, -1], "layer": -1,
                                                             "statistic": ""}}
    back = Result.from_json(v.to_json())
    np.testing.assert_allclose(back.edge_flow, results["flow"].edge_flow)


# ---------------------------------------------------------------------------- MIME bundle
def test_mime_bundle_without_a_kernel_is_text_png_json(results):
    a = results["attribution"]
    bundle = widgets.mime_bundle(a)
    assert {"text/plain", "image/png", XATTR_MIME_V2} <= set(bundle) and XATTR_MIME not in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(PNG_MAGIC)
    assert bundle[XATTR_MIME_V2] == to_payload(a, model_id=None)  # the v2 display payload (xattr_lab.payload)
    json.dumps(bundle[XATTR_MIME_V2], allow_nan=False)
    assert a._repr_mimebundle_().keys() == bundle.keys()


@pytest.mark.parametrize("kind", ["attribution", "flow", "heads", "circuit"])
def test_mime_bundle_with_widget_carries_the_model_id(results, kind):
    bundle = widgets.mime_bundle(results[kind], widget=True)
    model_id = bundle[WIDGET_MIME]["model_id"]
    assert model_id and bundle[XATTR_MIME_V2]["model_id"] == model_id
    assert bundle[WIDGET_MIME]["version_major"] == 2
    assert bundle[XATTR_MIME_V2]["kind"] == results[kind].kind


def test_mime_bundle_nan_scores_stay_valid_json():
    a = Attribution(tokens=["a", "b"], scores=np.array([np.nan, 1.0]))
    bundle = widgets.mime_bundle(a)
    assert np.isnan(from_payload(bundle[XATTR_MIME_V2]).scores[0])
    assert from_payload(bundle[XATTR_MIME_V2]).scores[1] == 1.0


# ---------------------------------------------------------------------------- Explorer
class FakeExplainer:
    """Stands in for an Explainer: counts calls, optional delay per method."""

    name = "fake"

    def __init__(self, delays=None):
        self.calls = []
        self.delays = delays or {}
        self.lock = threading.Lock()

    def attribute(self, text, method="sig", target=None, **options):
        with self.lock:
            self.calls.append(("attribute", text, method, target))
        time.sleep(self.delays.get(method, 0))
        tokens = ["[CLS]"] + text.split() + ["[SEP]"]
        scores = np.linspace(-1, 1, len(tokens)) * (1 + len(method))
        return Attribution(tokens=tokens, scores=scores, method=method, target=target, model=self.name)

    def flow(self, text, target=None, sources=None, **options):
        with self.lock:
            self.calls.append(("flow", text, tuple(sources or ())))
        n = len(text.split()) + 2
        E = conserving_flow(np.random.default_rng(n), L=2, n=n)
        return FlowResult(tokens=["[CLS]"] + text.split() + ["[SEP]"], attributions=E[0].sum(0), edge_flow=E,
                          value=E[-1].sum(), sources=list(sources or [0]))

    def heads(self, text):
        with self.lock:
            self.calls.append(("heads", text))
        n = len(text.split()) + 2
        attn = np.full((2, 2, n, n), 1.0 / n)
        return HeadStats(tokens=["[CLS]"] + text.split() + ["[SEP]"], entropy=np.ones((2, 2)), cone_index=np.ones(3),
                         attentions=attn)


def test_explorer_links_views_and_caches():
    ex = FakeExplainer()
    e = widgets.Explorer(ex, "a fine film", background=False)
    e.widget
    e.refresh()
    assert e.strip.result.method == "attention" and e.flow is not None and e.heads is not None
    assert e._containers["strip"].children == (e.strip.widget,)
    e._method_box.value = "sig"  # the control, as a user changes it
    assert e.strip.result.method == "sig"
    n_calls = len(ex.calls)
    e._method_box.value = "attention"  # back: everything cached
    assert len(ex.calls) == n_calls and e.timings[-1]["cached"]
    assert e.strip.result.method == "attention"
    e.strip.select_token(2)  # linked: flow highlights token 2
    assert e.flow.highlight["position"] == 2
    e.flow.select_output(3)  # re-target: recompute flow from position 3
    assert ex.calls[-1] == ("flow", "a fine film", (3,)) and e.flow.result.sources == [3]
    e._text_box.value = "another text"
    assert e.strip.result.tokens[1] == "another" and e.state.token == -1


def test_explorer_drops_stale_results():
    ex = FakeExplainer(delays={"sig": 0.6})
    e = widgets.Explorer(ex, "slow one", views=("strip",), background=True)
    e.widget
    e.set(method="sig")  # slow job
    time.sleep(0.05)
    e.set(method="ig")  # newer, fast
    e.wait(5)
    time.sleep(0.7)
    e.wait(5)
    assert e.strip.result.method == "ig"
    assert ("attribute", "slow one", "sig", None) in ex.calls


def test_explorer_output_is_updated_on_the_main_thread_when_views_land(monkeypatch):
    """The output is shown before anything is computed; each finished computation rewrites it (same
    display id) with every linked view (v2 "explorer" payload, text/html, PNG), from the main thread."""
    import IPython.display

    shown, updated, handed_over = [], [], []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append((obj, kw)))
    monkeypatch.setattr(IPython.display, "update_display",
                        lambda obj, **kw: updated.append((obj, kw, threading.current_thread())))
    e = widgets.Explorer(FakeExplainer(delays={"attention": 0.2}), "a fine film", background=True,
                         schedule=handed_over.append)  # the main loop: run by wait() on this thread
    e._ipython_display_()
    (first, kw), = shown
    assert kw["raw"] and kw["display_id"] and first[XATTR_MIME_V2]["views"] == {} and not updated
    assert "image/png" not in first  # nothing to draw yet
    e.wait(5)
    assert handed_over and updated and all(t is threading.main_thread() for _, _, t in updated)
    bundle, kw, _ = updated[-1]
    assert kw == {"raw": True, "display_id": shown[0][1]["display_id"]}
    payload = bundle[XATTR_MIME_V2]
    assert payload["kind"] == "explorer" and set(payload["views"]) == {"strip", "flow", "heads"}
    assert payload["views"]["strip"]["method"] == "attention"
    assert '"kind":"explorer"' in bundle["text/html"] and base64.b64decode(bundle["image/png"]).startswith(PNG_MAGIC)
    e.set(method="ig")  # a recompute: the output follows
    e.wait(5)
    assert updated[-1][0][XATTR_MIME_V2]["views"]["strip"]["method"] == "ig"


def test_explorer_reports_errors_without_raising():
    class Broken(FakeExplainer):
        def flow(self, *args, **kwargs):
            raise ValueError("no <flow> here")

    e = widgets.Explorer(Broken(), "x y", background=False)
    e.widget
    e.refresh()
    assert e.errors == ["flow: no <flow> here"]
    assert "&lt;flow&gt;" in e._status.value and e.strip is not None and e.heads is not None


def test_explorer_exports(tmp_path):
    e = widgets.Explorer(FakeExplainer(), "a film", background=False)
    e.refresh()
    payload = json.loads(e.to_json())
    assert set(payload["views"]) == {"token_strip", "flow", "heads"}
    assert e.to_png(tmp_path / "e.png") and open(tmp_path / "e.png", "rb").read().startswith(PNG_MAGIC)
    page = open(e.to_html(tmp_path / "e.html"), encoding="utf-8").read()
    assert not CDN.search(page)


def test_explorer_on_a_real_tiny_model(tiny):
    e = widgets.Explorer(tiny("bert"), "a <b>bold</b> film", background=False)
    e.widget
    e.refresh()
    assert not e.errors, e.errors
    assert e.strip.result.tokens[0] == "[CLS]" and e.heads.attentions.shape[:2] == (2, 4)
    e.flow.select_output(0)  # re-target: a real GAF from [CLS]
    assert not e.errors, e.errors
    assert e.flow.result.sources == [0] and e.flow.result.value > 0
    e.set(method="gaf")
    assert e.strip.result.method == "gaf" and not e.errors


def test_explorer_cancel_drops_the_running_request():
    ex = FakeExplainer(delays={"sig": 0.5})
    e = widgets.Explorer(ex, "slow one", views=("strip",), background=True)
    e.widget
    e.set(method="attention")
    e.wait(5)
    e.set(method="sig")
    assert e._cancel.layout.visibility == "visible"
    e._cancel.click()
    e.wait(5)
    assert e.strip.result.method == "attention" and e._status.value == "cancelled"
    assert e._progress.layout.visibility == "hidden"


def test_explorer_streams_sig_and_cancel_stops_it(tiny):
    ex = tiny("bert")
    text = "a truly fine and moving film about love"
    e = widgets.Explorer(ex, text, method="sig", views=("strip",), background=False,
                         options={"steps": 4, "stream_every": 2})
    e.widget
    shown = []
    real_apply = e._apply
    e._apply = lambda generation, kind, result: (shown.append(result), real_apply(generation, kind, result))
    e.refresh()
    assert not e.errors, e.errors
    partial = [r for r in shown if r.options.get("partial")]
    assert len(partial) >= 3  # 7 words, 2 at a time: the strip updated while SIG ran
    assert [len(r.options["positions_done"]) for r in partial] == sorted(len(r.options["positions_done"]) for r in partial)
    final = e.strip.result
    assert not final.options.get("partial")
    np.testing.assert_allclose(final.raw, ex.attribute(text, method="sig", steps=4).raw, rtol=1e-6, atol=1e-9)

    # cancel while streaming: the SIG computation itself stops at its next group
    e2 = widgets.Explorer(ex, text + " indeed", method="sig", views=("strip",), background=False,
                          options={"steps": 4, "stream_every": 1})
    e2.widget
    groups = []
    real_stream = e2._stream

    def stream_then_cancel(generation, partial):
        groups.append(partial)
        keep_going = real_stream(generation, partial)
        e2.cancel()
        return keep_going

    e2._stream = stream_then_cancel
    e2.refresh()
    assert len(groups) == 2  # the second callback saw the stale generation and stopped SIG
    assert e2.errors == []  # a cancelled request is not an error


# ---------------------------------------------------------------------------- layout (issue 27, item 5)
def _ticks(low: float, high: float, mantissas=(1, 2, 5), desired: int = 6) -> np.ndarray:
    """Ticks as Bokeh's BasicTicker places them: the 1/2/5 x 10^k step nearest to span/desired."""
    span = high - low
    candidates = [m * 10.0 ** k for k in range(-14, 8) for m in mantissas]
    step = min(candidates, key=lambda s: abs(span / s - desired))
    return np.arange(np.ceil(low / step), np.floor(high / step) + 1) * step


@pytest.mark.parametrize("low,high", [(-1.5e-3, 1.5e-3), (2.63899, 2.63902), (0.0, 2.5), (-3e-7, 3e-7),
                                      (0.0, 0.006), (-40.0, 40.0), (0.0, 1.0)])
def test_tick_formats_write_every_tick_as_a_plain_decimal(low, high):
    from xattr_lab.widgets.sizing import readable_ticks, tick_decimals

    decimals = tick_decimals(high - low)
    fmt = readable_ticks(low, high).format
    assert "e" not in fmt and fmt == ("0" if decimals == 0 else "0.[" + "0" * decimals + "]")
    for mantissas in ((1, 2, 5), (1, 2, 2.5, 5)):  # BasicTicker's and a finer one
        ticks = _ticks(low, high, mantissas)
        assert len(ticks) >= 2
        written = [round(float(t), decimals) for t in ticks]
        np.testing.assert_allclose(written, ticks, rtol=0, atol=1e-9 * (high - low))  # exact in that many decimals
        assert len(set(written)) == len(ticks)  # and distinct ("2.64 2.64 2.64" is no scale)
    # and not many more than needed: the 1/2/5 ticker's ticks need at most 2 fewer
    ticks = _ticks(low, high)
    needed = next(d for d in range(13) if all(abs(round(float(t), d) - t) <= 1e-9 * (high - low) for t in ticks))
    assert needed <= decimals <= needed + 2


def test_live_figures_stretch_to_the_cell_and_ticks_are_readable(results):
    from bokeh.models import ColorBar, NumeralTickFormatter

    strip = widgets.view(results["attribution"], display=False)
    strip.widget
    flow = widgets.view(results["flow"], display=False)
    flow.widget
    heads = widgets.view(results["heads"], display=False)
    heads.widget
    heads.select_head(1, 2)
    live = {"strip": strip._fig, "flow": flow._figure, "throughput": flow._tplot._model, "grid": heads._fig,
            "matrix": heads._matrix[0]}
    for name, fig in live.items():
        assert fig.sizing_mode == "stretch_width" and fig.max_width >= fig.min_width > 0, name
    assert strip._fig.max_width == strip.width + 20
    bars = [fig.select_one({"type": ColorBar}) for fig in (strip._fig, heads._fig)]
    assert all(isinstance(bar.formatter, NumeralTickFormatter) for bar in bars)
    assert bars[0].width == "auto"  # spans the strip whatever its width, never clipped
    assert isinstance(flow._tplot._model.yaxis[0].formatter, NumeralTickFormatter)
    # exports keep their fixed widths (a page scrolls; the cell is what must not overflow)
    exported = [m for v in (strip, flow, heads) for m in v.export_models()]
    from bokeh.plotting import figure as _figure  # noqa: F401  (the Figure type, for select)
    figs = [f for m in exported for f in m.select({"type": type(strip._fig)})]
    assert figs and all(f.sizing_mode is None for f in figs)


def test_throughput_is_plotted_in_percent_of_the_flow_value(results):
    flow = widgets.view(results["flow"], display=False)
    flow.widget
    flow.select_input(2)
    data = flow._throughput.data
    np.testing.assert_allclose(data["value"], flow.node_flow[:, 2])
    np.testing.assert_allclose(data["percent"], 100 * flow.node_flow[:, 2] / results["flow"].value)
    assert flow._tplot._model.renderers[0].glyph.top == "percent"


def test_token_strip_rewraps_to_its_measured_width():
    labels = [f"word{i}" for i in range(90)]
    a = Attribution(tokens=labels, scores=np.linspace(-1, 1, 90), method="attention")
    strip = widgets.view(a, display=False)
    strip.widget
    fig, source = strip._fig, strip._source
    rows_wide = -min(source.data["y"]) + 1
    fig.set_from_json("inner_width", 410)  # what BokehJS reports when it drew the strip 410 px wide
    assert strip.wrap == 400 and (fig.x_range.start, fig.x_range.end) == (-5, 405)  # 1 px per layout px
    x, w = np.asarray(source.data["x"]), np.asarray(source.data["w"])
    assert np.all(x + w / 2 <= 400 + 1e-9) and np.all(x - w / 2 >= 0)
    rows_narrow = -min(source.data["y"]) + 1
    assert rows_narrow > rows_wide and fig.y_range.start == -rows_narrow + 0.45
    assert fig.height == 32 * rows_narrow + 95
    strip.select_token(7)
    assert source.selected.indices == [7]
    fig.set_from_json("inner_width", 5000)  # a wide cell: at most the strip's own width
    assert strip.wrap == strip.width and fig.x_range.end == strip.width + 5
    assert source.selected.indices == [7]


def test_flow_graph_keeps_pixels_for_its_token_labels(results):
    from xattr_lab.widgets.sizing import label_px

    flow = widgets.view(results["flow"], display=False)
    flow.widget
    fig = flow._figure
    left = label_px(fig.select_one({"name": "xattr-flow-labels-left"}).data["text"])
    L = flow.n_layers
    for width in (300, 520, 1200):
        fig.set_from_json("inner_width", width)
        unit = width / (fig.x_range.end - fig.x_range.start)  # px per layer
        assert -fig.x_range.start * unit == pytest.approx(left)  # the labels' room, in pixels
        labels = [v.text for v in fig.xaxis[0].major_label_overrides.values()]
        assert labels[-1] == (f"L{L}" if unit < 56 else f"layer {L}")


def test_views_wrap_instead_of_overflowing(results, tiny):
    flow = widgets.view(results["flow"], display=False)
    row = flow.widget.children[1]
    assert row.layout.flex_flow == "row wrap" and flow._plot.layout.min_width == "0"
    heads = widgets.view(results["heads"], display=False)
    assert heads.widget.children[3].layout.flex_flow == "row wrap"
    e = widgets.Explorer(tiny("bert"), "a fine film", views=("strip",), background=False)
    e.widget
    assert e._text_box.layout.width == "auto" and e._text_box.layout.max_width == "900px"
    assert e.widget.children[0].children[0].layout.flex_flow == "row wrap"


def test_readable_numbers_match_the_renderer_and_avoid_exponents():
    """Side panels read 0.000128, not 1.28319e-07 style (the TypeScript fmt's rule, render.test.ts)."""
    assert widgets.core.readable(1e-5) == "0.0000100"
    assert widgets.core.readable(-0.000123456) == "-0.000123"
    assert widgets.core.readable(0.00062) == "0.000620"
    assert widgets.core.readable(0.5) == "0.5000"
    assert widgets.core.readable(2e-9) == "2.00e-09"
    assert widgets.core.readable(float("nan")) == "n/a"
