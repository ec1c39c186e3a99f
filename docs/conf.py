"""Sphinx configuration of the xattr-lab documentation site (``make docs``; docs/index.md is the root).

Offline by construction: no intersphinx, pydata-sphinx-theme without external icons or analytics, the
workshop notebooks executed locally by MyST-NB (cached under ``_build/.jupyter_cache``), and the CLI and
``%xattr`` reference generated from :func:`xattr_lab.commands.build_parser` by ``_ext/xattr_docs.py``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import xattr_lab  # noqa: E402  (the package documented; installed in .venv by `make setup`)

project = "xattr-lab"
author = "the xattr-lab authors"
copyright = "the xattr-lab authors"
release = version = xattr_lab.__version__

extensions = [
    "myst_nb",                      # Markdown pages (MyST) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_design",
    "xattr_docs",                   # `xattr-cli` (generated CLI / %xattr reference), `mermaid` (shown as source)
]

root_doc = "index"
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "requirements.txt", "**.ipynb_checkpoints"]
# xattr outputs also carry application/vnd.xattr.v2+json (and Bokeh's loader carries
# application/vnd.bokehjs_load.v0+json): data for JupyterLab's renderer, which a static page does not draw;
# MyST-NB warns about every such item although the bundle's text/html is what the page shows. An output with
# nothing the page can show still fails the build (mystnb.mime_priority is not suppressed).
suppress_warnings = ["mystnb.unknown_mime_type"]
# docs/workshop/FACILITATOR.md links to folders of the repository (docs/workshop/expected/, slides/): GitHub
# shows them as folder listings, the site has no page for a folder, so those links stay text here.
nitpick_ignore = [("myst", "expected/"), ("myst", "slides/")]

# ---------------------------------------------------------------- MyST
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "attrs_inline"]
myst_heading_anchors = 3            # [text](#a-heading) links, as on GitHub
myst_fence_as_directive = ["mermaid"]
html_math_renderer = "mathml"      # _ext/xattr_docs.py: MathML at build time, no MathJax from a CDN

# ---------------------------------------------------------------- notebooks (MyST-NB)
# The workshop notebooks (docs/notebooks/*.ipynb link to examples/) run at build, in a temporary
# folder, once per content change: "cache" keeps the executed copies in _build/.jupyter_cache, so a
# rebuild with unchanged notebooks costs nothing. XATTR_DOCS_EXECUTE=off|force|cache overrides it.
nb_execution_mode = os.environ.get("XATTR_DOCS_EXECUTE", "cache")
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_execution_in_temp = True
nb_execution_timeout = int(os.environ.get("XATTR_DOCS_CELL_TIMEOUT", "1800"))   # seconds per cell
nb_execution_raise_on_error = True  # a failing cell fails the build
# The kernels inherit this environment. Progress bars are transient: saved, a widget-based bar shows its
# first frame ("Loading weights: 0%") on a static page, so they are off while the notebooks run here.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
nb_execution_show_tb = True
nb_merge_streams = True
# xattr outputs carry a live widget, application/vnd.xattr.v2+json, text/html (the offline player),
# image/png and text/plain. A static page has no kernel behind the widget, so the text/html item
# (payload + player, clickable without a kernel) is the one shown; PNG where there is no HTML.
# Bokeh's loader output (BokehJS inlined, ~4 MB) is dropped from the pages by _ext/xattr_docs.py: xattr
# outputs are drawn by the offline player in their text/html item, which needs no BokehJS.
nb_ipywidgets_js: dict = {}        # MyST-NB would load require.js and the widget manager from CDNs
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.xattr.v2+json", None),
    ("html", "application/vnd.xattr+json", None),
    ("html", "text/html", 0),
    ("html", "image/png", 10),
]

# ---------------------------------------------------------------- API reference
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autosummary_generate = True
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# ---------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = "xattr-lab"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_end": ["theme-switcher"],
    "footer_start": ["copyright"],
    "footer_end": [],
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
