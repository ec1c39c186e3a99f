"""The documentation site (docs/, ``make docs``) and the README landing page, checked without building.

The build itself (Sphinx, warnings as errors, the notebooks executed) is ``make docs``, which CI runs after
``make test``; these tests catch in seconds what would break it or make it lie: a page outside every toctree,
a notebook link that no longer resolves, a verb or option of the parser missing from the generated reference,
a README that outgrew a landing page or links nowhere.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ROOT = REPO_ROOT
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SKIP = {"_build", "jupyter_execute", "_ext", "_static"}


def _ext():
    spec = importlib.util.spec_from_file_location("xattr_docs", DOCS / "_ext" / "xattr_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> set[str]:
    """Every source page of the site: docnames (path under docs/ without suffix)."""
    found = set()
    for path in DOCS.rglob("*"):
        rel = path.relative_to(DOCS)
        if rel.parts[0] in SKIP or path.suffix not in (".md", ".ipynb") or ".ipynb_checkpoints" in rel.parts:
            continue
        found.add(rel.with_suffix("").as_posix())
    return found


def _toctree_entries() -> dict[str, list[str]]:
    """page -> the docnames its ``{toctree}`` blocks list, resolved against the page's folder."""
    entries: dict[str, list[str]] = {}
    for page in _pages():
        path = DOCS / (page + ".md")
        if not path.exists():
            continue
        for block in re.findall(r"```\{toctree\}\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                line = line.strip()
                if line and not line.startswith(":"):
                    base = Path(page).parent
                    entries.setdefault(page, []).append((base / line).as_posix().removeprefix("./"))
    return entries


def test_every_page_is_in_a_toctree_and_every_entry_exists():
    pages, entries = _pages(), _toctree_entries()
    listed = {e for es in entries.values() for e in es}
    assert "index" in pages and "index" in entries
    assert listed - pages == set(), f"toctree entries with no page: {sorted(listed - pages)}"
    orphans = pages - listed - {"index"}
    assert not orphans, f"pages in no toctree (Sphinx -W fails on them): {sorted(orphans)}"


def test_the_required_pages_are_there():
    pages = _pages()
    for page in ("getting-started", "workshop", "troubleshooting", "reference/cli", "reference/magic",
                 "reference/api", "ARCHITECTURE", "results", "guides/flows", "guides/gradients",
                 "guides/faithfulness", "guides/trust", "guides/circuits", "guides/words-generation-images",
                 "guides/ray"):
        assert page in pages, page
    start = (DOCS / "getting-started.md").read_text()
    for must in ("make demo", "make test", "torch==2.13.0", "download.pytorch.org/whl/cpu",
                 "torch.cuda.is_available()", "TORCH_INDEX_URL=", "python -m build", "[lab]", "xattr zoo install",
                 "xattr examples DIR"):
        assert must in start, must
    trouble = (DOCS / "troubleshooting.md").read_text()
    for must in ("XATTR_LAB_MEMORY_LIMIT", "Ray", "Chromium", "Right-to-left", "Long inputs"):
        assert must in trouble, must


def test_every_workshop_notebook_is_on_the_site_and_its_link_resolves():
    lessons = sorted(p.name for p in (ROOT / "examples").glob("0*.ipynb"))
    assert len(lessons) == 7, lessons
    on_site = sorted(p.name for p in (DOCS / "notebooks").glob("*.ipynb"))
    assert on_site == lessons
    for name in lessons:
        link = DOCS / "notebooks" / name
        assert link.resolve() == (ROOT / "examples" / name).resolve(), f"{link} does not point at examples/{name}"
    assert set(f"notebooks/{Path(n).stem}" for n in lessons) <= set(_toctree_entries()["workshop"])


def test_notebooks_execute_at_build_with_a_timeout_and_show_the_player():
    conf = (DOCS / "conf.py").read_text()
    assert re.search(r'nb_execution_mode = os.environ.get\("XATTR_DOCS_EXECUTE", "cache"\)', conf)
    assert "nb_execution_timeout" in conf and "nb_execution_raise_on_error = True" in conf
    # the offline player (text/html) wins over the kernel-bound widget view on a static page
    assert '("html", "application/vnd.jupyter.widget-view+json", None)' in conf
    assert '("html", "text/html", 0)' in conf
    assert "nb_ipywidgets_js: dict = {}" in conf  # no require.js / widget manager from a CDN
    extensions = ast.literal_eval(re.search(r"^extensions = (\[.*?\])$", conf, re.M | re.S).group(1))
    assert "myst_nb" in extensions and "sphinx.ext.autodoc" in extensions and "xattr_docs" in extensions
    offline = {"sphinx.ext.intersphinx", "sphinx.ext.mathjax", "sphinxcontrib.mermaid"}  # they fetch at build or view time
    assert not offline & set(extensions)
    assert 'html_math_renderer = "mathml"' in conf


@pytest.mark.parametrize("front_end", ["cli", "magic"])
def test_the_cli_reference_covers_every_verb_and_option_of_the_parser(front_end):
    ext = _ext()
    parser = ext.parser_for(front_end)
    text = ext.reference_rst(parser)
    verbs = ext.verbs(parser)
    assert {"explain", "flow", "heads", "circuit", "evaluate", "generate"} <= set(verbs)
    if front_end == "cli":
        assert {"lab", "export"} <= set(verbs)
    for verb, sub in verbs.items():
        section = text.split(f"\n{parser.prog} {verb}\n", 1)
        assert len(section) == 2, f"no section for {verb}"
        body = section[1].split(f"\n{parser.prog} ", 1)[0]
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help"):
                    continue
                assert f"``{flag}" in body or f", {flag}" in body, f"{parser.prog} {verb}: {flag} missing"
            if not action.option_strings:
                assert f"``{action.metavar or action.dest}``" in body, f"{verb}: positional {action.dest}"
            if action.help and action.help != "show this help message and exit":
                first_words = " ".join(action.help.split()[:4]).replace("_", r"\_").replace("*", r"\*")
                assert first_words.replace("|", r"\|") in " ".join(body.split()), f"{verb}: help of {action.dest}"


def test_the_cli_reference_lists_defaults_from_the_parser():
    ext = _ext()
    rows = {names.split()[0]: (default, text) for names, default, text in
            ext.option_rows(ext.verbs(ext.parser_for("cli"))["circuit"])}
    from xattr_lab.methods import registry

    for option in registry.spec("circuit").options:
        flag = "--" + option.name.replace("_", "-")
        assert flag in rows, flag
        if option.default is not None and not isinstance(option.default, bool):
            assert rows[flag][0] == repr(option.default), (flag, rows[flag][0])


def test_plain_text_docstrings_become_valid_rst_with_the_same_words():
    ext = _ext()
    assert ext.rst_docstring(["The sum |x| of ``a|b`` and *args."]) == [r"The sum \|x\| of ``a|b`` and \*args."]
    assert ext.rst_docstring(["Two **bold** words."]) == ["Two **bold** words."]
    # an indented continuation under a paragraph: a blank line, words unchanged
    assert ext.rst_docstring(["A paragraph", "    indented more", "back"]) == [
        "A paragraph", "", "    indented more", "", "back"]
    # a list under a paragraph; the items' own continuation lines are left alone
    assert ext.rst_docstring(["Each step:", "1. one", "   more of one", "2. two"]) == [
        "Each step:", "", "1. one", "   more of one", "2. two"]
    # a field body continued on indented lines stays one field; literal blocks are left as they are
    assert ext.rst_docstring([":param x: the", "    input", "Example::", "", "    a |b| *c"]) == [
        ":param x: the", "    input", "", "Example::", "", "    a |b| *c"]


def test_pages_that_load_from_the_network_are_found():
    ext = _ext()
    page = """<script src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>
    <link rel="stylesheet" href="//fonts.example.org/a.css"><img alt='x' src='http://x.org/i.png'>
    <script src="_static/local.js"></script><a href="https://github.com/">a link is not a load</a>"""
    assert ext.remote_assets(page) == ["https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js",
                                       "//fonts.example.org/a.css", "http://x.org/i.png"]


def test_only_bokehs_loader_is_dropped_from_pages():
    ext = _ext()
    loader = "(function(root) { if (typeof root._bokeh_onload_callbacks === 'undefined') { } })(window);"
    assert ext.is_bokeh_loader(["application/javascript"], loader)
    assert ext.is_bokeh_loader(["application/javascript", "application/vnd.bokehjs_load.v0+json"], loader)
    # an xattr output (the player in text/html) or any other script output stays
    assert not ext.is_bokeh_loader(["text/html"], loader)
    assert not ext.is_bokeh_loader(["application/javascript", "text/html"], loader)
    assert not ext.is_bokeh_loader(["application/javascript"], "console.log('another script')")


def test_math_becomes_mathml_at_build_time():
    ext = _ext()
    out = ext.mathml(r"\sum_e f_e", display=True)
    assert out.startswith("<math") and 'display="block"' in out and ("<msub>" in out or "<munder>" in out)
    assert ext.mathml(r"\frac{a", display=False).startswith("<")  # unconvertible: shown as its source, escaped


def test_the_options_left_out_of_the_method_table_are_named_below_it():
    from xattr_lab.methods import registry

    page = (DOCS / "guides" / "methods.md").read_text()
    table = registry.markdown_table()
    below = page.split(table, 1)[1].split("The families, one guide each", 1)[0]
    left_out = {registry.GRANULARITY.name, "truncate"} | {o.name for o in registry.PATCHING_OPTIONS}
    for name in left_out:
        assert f"`{name}`" in below, f"option {name} is neither in the method table nor named below it"
    for method in registry.CIRCUIT_METHODS:
        assert f"'{method}'" in below, method


def test_readme_is_a_landing_page_that_links_into_the_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert "make demo    # set up ./.venv" in text and "make test    # set up ./.venv" in text
    assert text.index("torch==2.13.0") < text.index("make demo    #") + 2000
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local)
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert images and all((ROOT / i).is_file() for i in images)
    for guide in ("flows", "gradients", "faithfulness", "trust", "circuits", "words-generation-images", "ray"):
        assert f"docs/guides/{guide}.md" in text, guide


def test_nothing_the_readme_used_to_say_is_lost():
    """Every paragraph-opening sentence of the old README sections lives on a docs page now."""
    site = "\n".join(p.read_text() for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    for phrase in ("SIG's `steps=\"exact\"` is its limit as steps grow", "No degenerate baselines.",
                   "Why `ray[default]` and not the slim `ray`", "Right-to-left text is explained as typed",
                   "Bytes per saved output, v1 display JSON before", "A new architecture is one small file",
                   "Models bigger than one device.", "Greedy decoding gives the same tokens",
                   "Live interactivity: ipywidgets 8 + jupyter_bokeh (kept)."):
        assert phrase in site, phrase
