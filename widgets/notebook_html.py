"""``xattr export notebook.ipynb --html out.html``: one offline HTML file per notebook, every xattr
output interactive (docs/ARCHITECTURE.md, section "Front end").

nbconvert's HTML exporter (its ``lab`` template) with four changes: no require.js, MathJax, Mermaid or
widget-manager scripts from a CDN (their blocks are emptied); the player inlined once in the head; each
xattr output drawn from its ``text/html`` item (the player's copy in it dropped; one is made for
outputs saved before that item existed); no saved widget state, so a live view saved with the
notebook never shows as a disconnected widget: the file has no kernel behind it, every output draws
from its data; and no BokehJS loader outputs (~8 MB of script that only live widgets use, in notebooks
saved before BokehJS was sent display-only; since then the empty output that replaced the loader). Markdown
math stays as typed TeX (MathJax needs a CDN).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xattr_lab.errors import InputError

from . import player

__all__ = ["XATTR_PREFIX", "prepare_notebook", "notebook_html", "export_notebook"]

XATTR_PREFIX = "application/vnd.xattr."
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
BOKEH_LOADER = "application/vnd.bokehjs_load.v0+json"

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}{{ resources.xattr_player }}{%- endblock extra_css -%}
"""


def _loader_output(output: dict) -> bool:
    """A BokehJS loader output: the script itself (notebooks saved before BokehJS was sent display-only) or the empty display that
    replaces it once sent (``bundle.publish_bokeh_loader``: an empty text; no data at all in early builds)."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return False
    data = output.get("data")
    return not data or data == {"text/plain": ""} or BOKEH_LOADER in data


def _xattr_payload(data: dict) -> dict | None:
    return next((value for key, value in data.items() if key.startswith(XATTR_PREFIX) and isinstance(value, dict)),
                None)


def prepare_notebook(nb: Any) -> int:
    """Make ``nb`` (an nbformat v4 notebook, changed in place) draw from its data: drop saved widget
    state, BokehJS loaders and the widget views of xattr outputs, give every xattr output a player-less
    ``text/html``. Returns the number of xattr outputs."""
    nb.metadata.pop("widgets", None)
    count = 0
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _loader_output(o)]
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data")
            payload = _xattr_payload(data) if isinstance(data, dict) else None
            if payload is None:
                continue
            count += 1
            data.pop(WIDGET_VIEW, None)
            html = data.get("text/html")
            if isinstance(html, list):
                html = "".join(html)
            if not isinstance(html, str) or "xattr-lab-payload" not in html:
                clean = {k: v for k, v in payload.items() if k != "model_id"}
                text = data.get("text/plain", "")
                html = player.html_item(clean, "".join(text) if isinstance(text, list) else str(text), player=False)
            data["text/html"] = player.PLAYER_TAG_RE.sub("", html)
    return count


def notebook_html(nb: Any, title: str = "xattr-lab notebook") -> str:
    """The offline HTML page of ``nb`` (see module docstring); ``nb`` is changed by :func:`prepare_notebook`."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    prepare_notebook(nb)
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"xattr_offline.html.j2": _TEMPLATE})],
                            template_file="xattr_offline.html.j2")
    body, _ = exporter.from_notebook_node(nb, resources={"xattr_player": player.player_tag(),
                                                         "metadata": {"name": title}})
    return body


def export_notebook(source, target) -> str:
    """Read the notebook ``source``, write its offline HTML to ``target``; returns the target path.

    Raises InputError for a missing or unreadable notebook (nothing is written then).
    """
    import nbformat

    source, target = Path(source), Path(target)
    if not source.is_file():
        raise InputError(f"no notebook at {str(source)!r}")
    try:
        nb = nbformat.read(source, as_version=4)
    except Exception as error:  # nbformat raises JSON, validation and version errors of many types
        raise InputError(f"{str(source)!r} is not a readable Jupyter notebook: {error}") from error
    page = notebook_html(nb, title=source.stem)
    target.write_text(page, encoding="utf-8")
    return str(target)
