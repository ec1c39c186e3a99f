"""Issue 19 (part B): the text/html item of every bundle (the player), and math rendering off in every
Bokeh text model, with hostile tokens. No browser here (tests/browser/test_player_browser.py runs it)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO_ROOT
from xattr_lab import widgets
from xattr_lab.results import Attribution, CircuitResult, FlowResult, HeadStats
from xattr_lab.widgets import player

REPO = REPO_ROOT
MATH_HREF = "$$\\href{javascript:alert(1)}{x}$$"
HOSTILE = ["[CLS]", "<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", MATH_HREF,
           "\\(x\\)", "&amp;\u2028", "[SEP]"]
PAYLOAD_RE = re.compile(r'<script type="application/json" class="xattr-lab-payload">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(1)
    n, L, H = len(HOSTILE), 2, 3
    E = rng.random((L, n, n))
    attn = rng.random((L, H, n, n))
    attn /= attn.sum(-1, keepdims=True)
    return {
        "attribution": Attribution(tokens=HOSTILE, scores=rng.normal(size=n), method="sig", target_label=MATH_HREF,
                                   model=MATH_HREF),
        "flow": FlowResult(tokens=HOSTILE, attributions=E[0].sum(0), edge_flow=E, value=1.0, sources=[0]),
        "heads": HeadStats(tokens=HOSTILE, entropy=rng.random((L, H)), cone_index=rng.random(L + 1),
                           cone_index_normalised=rng.random(L + 1), patterns=[[MATH_HREF] * H] * L, attentions=attn,
                           texts=[MATH_HREF]),
        "circuit": CircuitResult(node_scores=rng.random((L, H)), edge_scores=rng.random((L * H, L * H)),
                                 codes_positive=rng.integers(0, 4, (3, L * H)),
                                 codes_negative=rng.integers(0, 4, (3, L * H)), n_layers=L, n_heads=H,
                                 positive=[MATH_HREF] * 3, negative=["<b>n</b>"] * 3),
    }


@pytest.mark.parametrize("kind", ["attribution", "flow", "heads", "circuit"])
def test_the_html_item_carries_the_payload_as_inert_json(results, kind):
    bundle = widgets.mime_bundle(results[kind], widget=False)
    page = bundle["text/html"]
    blocks = PAYLOAD_RE.findall(page)
    assert len(blocks) == 1
    key = next(k for k in bundle if k.startswith("application/vnd.xattr."))  # v1 or v2
    expected = {k: v for k, v in bundle[key].items() if k != "model_id"}
    assert json.loads(blocks[0]) == expected  # \u003c etc. read back as the same strings
    assert not re.search("[<>&\u2028\u2029]", blocks[0])
    # the only script elements: the payload block, the guarded player and the mount call
    assert len(re.findall(r"<script\b", page)) == 3
    assert "<img" not in page and "<b>n</b>" not in page
    assert player.PLAYER_TAG_RE.search(page) and page.endswith(f"<script>{player.MOUNT_SCRIPT}</script>")
    assert page.startswith('<div class="xattr-lab-player tex2jax_ignore mathjax_ignore">')  # a page's MathJax skips it


def test_a_missing_player_loses_only_the_html_item(monkeypatch, results):
    def missing():
        raise player.XattrError("the xattr-lab player is missing")

    monkeypatch.setattr(player, "player_script", missing)
    bundle = widgets.mime_bundle(results["attribution"], widget=False)
    assert "text/html" not in bundle and "image/png" in bundle
    assert any(k.startswith("application/vnd.xattr.") for k in bundle)
    assert "HTML rendering failed: the xattr-lab player is missing" in bundle["text/plain"]


def test_the_player_is_small_and_cannot_close_its_script_element():
    code = player.player_script()
    assert 5_000 < len(code.encode()) < 120_000  # one copy per output: keep it small
    assert not re.search(r"</script|<!--", code, re.I)
    ts = (REPO / "labextension" / "src" / "player.ts").read_text()
    assert re.search(rf"PLAYER_VERSION = {player.PLAYER_VERSION};", ts)


def test_the_shipped_player_is_built_from_the_current_sources(tmp_path):
    """widgets/static/xattr-player.js is committed (a clone or a Python-only install works
    without npm); it must be what `npm run build:player` makes of labextension/src today."""
    ext = REPO / "labextension"
    esbuild = ext / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists() or shutil.which("node") is None:
        pytest.fail("esbuild is missing: `make setup-dev` (npm install in labextension/) installs it")
    script = json.loads((ext / "package.json").read_text())["scripts"]["build:player"]
    out = tmp_path / "player.js"
    args = script.split()[1:]
    args = [a for a in args if not a.startswith("--outfile=")] + [f"--outfile={out}", "--log-level=error"]
    subprocess.run([str(esbuild), *args], cwd=ext, check=True, timeout=120)
    shipped = REPO / "widgets" / "static" / "xattr-player.js"
    assert out.read_bytes() == shipped.read_bytes(), "stale player: run `npm run build:player` in labextension/"


def _text_models(models):
    from bokeh.document import Document

    doc = Document()
    for model in models:
        doc.add_root(model)
    return list(doc.models)


@pytest.mark.parametrize("kind", ["attribution", "flow", "heads", "circuit"])
def test_every_bokeh_text_model_has_math_off(results, kind):
    from bokeh.models import Axis, ColorBar, Label, Markup, PlainText, Title
    from bokeh.models.text import BaseText

    v = widgets.view(results[kind], display=False)
    if kind in ("heads", "circuit"):
        v.select_head(0, 1)
    elif kind == "flow":
        v.select_input(3)
    checked = 0
    for model in _text_models(v.export_models()):
        if isinstance(model, Markup):
            assert model.disable_math, f"{type(model).__name__} renders math"
            assert "<img" not in model.text and "$$\\href" not in model.text
            checked += 1
        fields = {Title: "text", Label: "text", Axis: "axis_label", ColorBar: "title"}
        for cls, name in fields.items():
            if isinstance(model, cls):
                text = getattr(model, name)
                assert text is None or text == "" or isinstance(text, PlainText), (type(model).__name__, text)
                checked += 1
        if isinstance(model, Axis):
            for label in (model.major_label_overrides or {}).values():
                assert isinstance(label, (PlainText, str)) and (isinstance(label, BaseText) or "$$" not in label)
    assert checked >= 3


def test_a_mathjax_href_token_stays_text_in_the_exported_page(results, tmp_path):
    """The Bokeh page (v.to_html) holds the token only as JSON data with its TeX delimiters broken."""
    v = widgets.view(results["attribution"], display=False)
    page = Path(v.to_html(tmp_path / "a.html")).read_text(encoding="utf-8")
    assert '"disable_math":true' in page.replace(" ", "")
    # Divs have MathJax off (disable_math) and, like glyph text, TeX delimiters broken ("$\u200b$")
    assert "$$\\\\href" not in page and "$$\\href" not in page
    assert "<img src=x" not in page


# ---------------------------------------------------------------------------- xattr export (notebook -> HTML)
def _notebook(results, tmp_path, *, widget_state=True):
    import nbformat

    outputs = []
    for kind in ("attribution", "flow"):
        data = widgets.mime_bundle(results[kind], widget=False)
        data["application/vnd.jupyter.widget-view+json"] = {"version_major": 2, "version_minor": 0, "model_id": "m"}
        outputs.append(nbformat.v4.new_output("display_data", data=data))
    old = {"text/plain": "saved before text/html", "application/vnd.xattr.v1+json": results["attribution"].to_dict()}
    outputs.append(nbformat.v4.new_output("display_data", data=old))
    loader = {"application/javascript": "/* BokehJS */", "application/vnd.bokehjs_load.v0+json": "/* BokehJS */"}
    outputs.append(nbformat.v4.new_output("display_data", data=loader))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title $x$"),
                                         nbformat.v4.new_code_cell("r", outputs=outputs)])
    if widget_state:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    return path


def test_export_writes_one_offline_page_with_the_player_once(results, tmp_path):
    from xattr_lab import cli

    source = _notebook(results, tmp_path)
    assert cli.main(["export", str(source), "--html", str(tmp_path / "n.html")]) == 0
    page = (tmp_path / "n.html").read_text(encoding="utf-8")
    assert not re.search(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']?(?:https?:)?//", page)  # nothing from a CDN
    assert "widget-state" not in page and "widget-view+json" not in page  # drawn from data, no dead widget
    assert "/* BokehJS */" not in page  # the loader of live widgets (~8 MB inline) is left out
    assert page.count("data-xattr-player=") == 1 and len(re.findall(r"class=\"?xattr-lab-payload", page)) == 3
    assert "<img src=x" not in page and "</script><script>alert(2)" not in page


def test_export_refuses_what_is_not_a_notebook(tmp_path, capsys):
    from xattr_lab import cli

    (tmp_path / "bad.ipynb").write_text("{not json")
    assert cli.main(["export", str(tmp_path / "bad.ipynb"), "--html", str(tmp_path / "o.html")]) == 2
    assert cli.main(["export", str(tmp_path / "none.ipynb"), "--html", str(tmp_path / "o.html")]) == 2
    err = capsys.readouterr().err
    assert "not a readable Jupyter notebook" in err and "no notebook at" in err
    assert not (tmp_path / "o.html").exists()
