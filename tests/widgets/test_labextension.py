"""The JupyterLab extension (labextension/): built artifacts, its TypeScript tests, and the Python
it sends to the kernel, run here in a real IPython shell.

Builds the extension first when it has not been built (``npm install --no-save`` + ``npm run build``, about a
minute once); needs Node.js/npm, like ``pip install .`` does.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO_ROOT
from xattr_lab.constants import MIME_TYPE as MIME, MIME_TYPE_V2 as MIME_V2

REPO = REPO_ROOT
EXT = REPO / "labextension"


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found: the JupyterLab extension needs Node.js >= 20 and npm to build and test")
    return npm


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _stale(target: Path, sources: list[Path]) -> bool:
    if not target.exists():
        return True
    built = target.stat().st_mtime
    return any(p.stat().st_mtime > built for src in sources for p in ([src] if src.is_file() else src.rglob("*")))


@pytest.fixture(scope="module")
def built() -> Path:
    """labextension/ with node_modules, lib/ and dist/ up to date with src/, style/, schema/."""
    npm = _npm()
    if not (EXT / "node_modules" / "@jupyter" / "builder").exists():
        subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund"], cwd=EXT, env=_env(), check=True,
                       capture_output=True, timeout=600)
    sources = [EXT / "src", EXT / "style", EXT / "schema", EXT / "package.json"]
    if _stale(EXT / "dist" / "package.json", sources) or _stale(EXT / "lib" / "index.js", sources):
        subprocess.run([npm, "run", "build"], cwd=EXT, env=_env(), check=True, capture_output=True, timeout=600)
    return EXT


def test_package_metadata():
    package = json.loads((EXT / "package.json").read_text())
    assert package["name"] == "xattr-lab"
    lab = package["jupyterlab"]
    assert lab["extension"] is True and lab["outputDir"] == "dist" and lab["schemaDir"] == "schema"
    assert "@jupyter/builder" in package["devDependencies"]
    assert "@jupyterlab/builder" not in package.get("devDependencies", {})  # fails offline (the npm registry path of @jupyterlab/builder needs a download)
    assert "jupyter-builder build ." in package["scripts"]["build"]
    assert "install.json" in package["scripts"]["build"]  # jupyter-builder wipes dist/
    lock = json.loads((EXT / "package-lock.json").read_text())
    assert lock["packages"][""]["name"] == "xattr-lab"
    install = json.loads((EXT / "install.json").read_text())
    assert install == {"packageManager": "python", "packageName": "xattr-lab",
                       "uninstallInstructions": install["uninstallInstructions"]}


def test_settings_schema_matches_the_magic_defaults():
    from xattr_lab import magic

    schema = json.loads((EXT / "schema" / "plugin.json").read_text())
    props = schema["properties"]
    assert set(props) == {"model", "method", "colourMap"}
    # the defaults shown in JupyterLab are the magic's own
    assert props["model"]["default"] == magic.DEFAULTS["model"]
    assert props["method"]["default"] == magic.DEFAULTS["method"]
    assert props["colourMap"]["default"] == magic.DEFAULTS["colour_map"]
    from xattr_lab.methods.registry import ATTRIBUTION_METHODS

    assert set(props["method"]["enum"]) <= set(ATTRIBUTION_METHODS)


def test_dist_is_a_prebuilt_extension(built):
    dist = built / "dist"
    meta = json.loads((dist / "package.json").read_text())
    assert meta["name"] == "xattr-lab"
    entry = meta["jupyterlab"]["_build"]["load"]
    assert (dist / entry).is_file() and entry.startswith("static/remoteEntry.")
    assert json.loads((dist / "install.json").read_text())["packageName"] == "xattr-lab"
    assert json.loads((dist / "schemas" / "xattr-lab" / "plugin.json").read_text())["title"] == "xattr-lab"
    bundle = "".join(p.read_text(errors="replace") for p in (dist / "static").glob("*.js"))
    assert MIME in bundle and MIME_V2 in bundle and "xattr-lab:explain-selection" in bundle  # v2 and v1 drawn
    # JupyterLab's packages are shared from the app, not bundled (the whole dist is small)
    size = sum(p.stat().st_size for p in dist.rglob("*") if p.is_file())
    assert size < 200_000, size
    # no HTML parsing of strings anywhere in the extension's code
    code = "".join(p.read_text() for p in (built / "src").glob("*.ts"))
    assert not re.search(r"(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\(|new Function", code)


def test_npm_test(built):
    """The TypeScript unit tests (vitest + jsdom): renderer, every view, escaping, kernel code."""
    result = subprocess.run([_npm(), "test", "--silent"], cwd=built, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def _kernel_code(built: Path, text: str, defaults: dict) -> dict:
    """explainCode(text) and settingsCode(defaults) from the compiled extension (lib/kernelcode.js)."""
    script = (
        "const src = require('fs').readFileSync('lib/kernelcode.js', 'utf8');"
        "import('data:text/javascript,' + encodeURIComponent(src)).then(m => process.stdout.write(JSON.stringify("
        "{explain: m.explainCode(process.argv[1]), settings: m.settingsCode(JSON.parse(process.argv[2]))})));"
    )
    node = shutil.which("node")
    assert node, "node not found"
    out = subprocess.run([node, "-e", script, text, json.dumps(defaults)], cwd=built, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_kernel_code_passes_text_verbatim_to_the_magic(built, tmp_path):
    """The cell "Explain selected text" runs, in a real IPython shell: the selection reaches
    %%xattr explain byte for byte (quotes, newlines, braces, $ - no IPython expansion, no code run),
    and the settings statement fills xattr_lab.magic.DEFAULTS."""
    from IPython.core.interactiveshell import InteractiveShell

    from xattr_lab import magic

    marker = tmp_path / "pwned"
    text = ('He said "hi" \\ \'q\' {__import__("pathlib").Path(%r).touch()} $HOME\nsecond line \u2028 é \u0085 🤖'
            % str(marker))
    code = _kernel_code(built, text, {"model": "tiny-bert", "method": "sig", "colour_map": "PiYG"})
    shell = InteractiveShell.instance()
    saved = dict(magic.DEFAULTS)
    try:
        shell.run_line_magic("load_ext", "xattr_lab")
        seen = []
        shell.register_magic_function(lambda line, cell: seen.append((line, cell)) or "ok", "cell", "xattr")
        assert shell.run_cell(code["settings"], silent=True).success
        assert {k: magic.DEFAULTS[k] for k in ("model", "method", "colour_map")} == {
            "model": "tiny-bert", "method": "sig", "colour_map": "PiYG"}
        assert "_xattr_lab_settings" not in shell.user_ns
        assert shell.run_cell(code["explain"]).success
        assert seen == [("explain", text)]
        assert not marker.exists()
    finally:
        magic.DEFAULTS.clear()
        magic.DEFAULTS.update(saved)
        InteractiveShell.clear_instance()


def test_labextension_list_shows_it_enabled():
    """After `pip install .` / `pip install -e .` JupyterLab finds the extension in this environment."""
    jupyter = Path(sys.executable).parent / "jupyter"
    if not (Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "xattr-lab" / "package.json").exists():
        pytest.fail("xattr-lab is not installed as a JupyterLab extension in this environment: run `pip install -e .` "
                    "(without SKIP_LABEXTENSION_BUILD) or `PYTHONPATH=. jupyter-builder develop --overwrite .`")
    out = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "xattr-lab" in line]
    assert lines and "enabled" in lines[0] and "OK" in lines[0], out.stdout + out.stderr


# ---------------------------------------------------------------------------- one source for display rules
DISPLAY_FIXTURE = EXT / "test" / "fixtures" / "display-rules.json"
RULES_FILE = REPO / "kernel_ext" / "data" / "display-rules.json"
#: tokens whose labels each rule decides: word-start marks (first and inner), "##", whitespace alone, a
#: newline as the byte-level "Ċ", a bidi mark, HTML
DISPLAY_TOKENS = ["[CLS]", "\u0120hello", "##ing", " ", "\n", "\u010a", "a\u2581b", "\u2581", "\t\t", "\u200fx",
                  "<b>film</b>", "\u0120extraordinarily", "[SEP]"]


def display_fixture() -> dict:
    """One attribution and one flow as saved (v2) and as public JSON (v1), and what the Python views draw of
    them: labels, cell and text colours, the edges drawn and left out, node throughput.
    labextension/test/display-rules.test.ts draws the same payloads and expects the same.

    Scores are multiples of 1/8 (exact in float16, so the saved payload's colours are the live ones). The
    flow is not conserved (inner nodes' inflow differs from their outflow: the throughput definition
    shows), has more positive edges than the drawing cap, and a few below its floor."""
    from xattr_lab.payload import to_payload
    from xattr_lab.results import Attribution, FlowResult
    from xattr_lab.widgets import core, figures

    n, L = len(DISPLAY_TOKENS), 3
    scores = np.array([-1, -0.875, -0.625, -0.5, -0.25, -0.125, 0, 0.125, 0.375, 0.5, 0.625, 0.75, 1.0])
    attribution = Attribution(tokens=DISPLAY_TOKENS, scores=scores, method="ig", model="tiny")
    E = np.random.default_rng(28).random((L, n, n)) + 0.01
    E[0, :2, :3] = 1e-9  # below edge_floor x the largest: never drawn
    flow = FlowResult(tokens=DISPLAY_TOKENS, attributions=E[0].sum(axis=0), edge_flow=E, value=float(E[-1].sum()),
                      model="tiny")
    labels = core.pretty_tokens(DISPLAY_TOKENS)
    strip = figures.strip_data(labels, scores, scores, range(n), None, 900)
    edges = figures.flow_edge_data(E)
    return {
        "rules": json.loads(RULES_FILE.read_text(encoding="utf-8")),
        "attribution": to_payload(attribution), "flow_v1": flow.to_dict(), "flow_v2": to_payload(flow),
        "expected": {"labels": labels, "short_labels": [core.shorten(label) for label in labels],
                     "colours": strip["colour"], "text_colours": strip["text_colour"],
                     "edges_drawn": len(edges["flow"]), "edges_positive": int((E > 0).sum()),
                     "strongest_flow": float(max(edges["flow"])), "throughput": core.node_throughput(E).tolist()},
    }


def test_the_display_rules_are_one_file_both_languages_read():
    """Python reads kernel_ext/data/display-rules.json (the views, the payload), and the TypeScript renderer
    imports the same file (src/rules.ts); no palette, cap or label rule is written out anywhere else."""
    from xattr_lab import payload
    from xattr_lab.widgets import core

    rules = json.loads(RULES_FILE.read_text(encoding="utf-8"))
    assert core.RULES == rules
    assert core.DIVERGING == tuple(rules["palettes"]["diverging"]["RdBu"]) and core.EDGES_DRAWN == 400
    assert payload.MAX_EDGES == rules["flow"]["edges_saved"] and rules["flow"]["node_throughput"] == "inflow"
    assert "from '../../kernel_ext/data/display-rules.json'" in (EXT / "src" / "rules.ts").read_text()
    sources = {p.name: p.read_text(encoding="utf-8") for p in (EXT / "src").glob("*.ts")}
    python = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "widgets").rglob("*.py")}
    for colour in ("#053061", "#67000d", "#4e79a7", "#d9d9d9"):  # a table's colour lives in the rules alone
        assert not [name for name, text in {**sources, **python}.items() if colour in text.lower()], colour
    assert not re.search(r"edges:\s*\d", sources["model.ts"])  # the edge cap is the rules'
    assert "\u2423" not in sources["render-common.ts"] and "\u2423" not in python["core.py"]


def test_display_fixture_is_what_the_python_views_draw():
    """The cross-language check: labextension/test/display-rules.test.ts draws these payloads and must show
    these labels, colours, caps and throughputs (regenerate: python -m tests.widgets.test_labextension)."""
    expected = json.loads(json.dumps(display_fixture(), allow_nan=False))
    assert json.loads(DISPLAY_FIXTURE.read_text(encoding="utf-8")) == expected
    drawn = expected["expected"]
    assert drawn["edges_positive"] > drawn["edges_drawn"] == 400  # the cap decides what is drawn
    throughput = np.array(drawn["throughput"])
    E = np.array(expected["flow_v1"]["edge_flow"])
    np.testing.assert_allclose(throughput[1:-1], E[1:].sum(axis=1))  # inner nodes: inflow from above
    assert not np.allclose(throughput[1:-1], E[:-1].sum(axis=2))  # ... which is not their outflow here
    assert drawn["labels"][3] == "\u2423" and drawn["labels"][1] == "hello" and drawn["labels"][5] == "\\n"
    assert drawn["text_colours"][0] == "#ffffff" and drawn["text_colours"][6] == "#000000"
    assert drawn["short_labels"][-2] == "extraordinari\u2026"  # the label width is the rules' too


if __name__ == "__main__":
    DISPLAY_FIXTURE.write_text(json.dumps(display_fixture(), allow_nan=False, ensure_ascii=True, indent=1) + "\n",
                               encoding="utf-8")
    print("wrote", DISPLAY_FIXTURE)
