"""Workshop notebooks: saved without outputs (fast check) and executed headless (slow)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_examples_exist():
    names = [p.stem[:2] for p in NOTEBOOKS]
    assert names == ["01", "02", "03", "04", "05", "06"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has saved outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors


def _explorer_outputs(cell) -> list[dict]:
    """The data of the saved outputs of ``cell`` that hold the Explorer's v2 payload."""
    from xattr_lab.constants import MIME_TYPE_V2

    return [o["data"] for o in cell.outputs
            if MIME_TYPE_V2 in o.get("data", {}) and o["data"][MIME_TYPE_V2].get("kind") == "explorer"]


def _assert_keeps_linked_views(data: dict, text: str) -> None:
    """A saved Explorer output: the live widget, the v2 payload with strip, flow and heads of ``text``
    (one tokenisation), the player's text/html carrying that payload, and a PNG."""
    import base64

    from xattr_lab.constants import MIME_TYPE_V2, WIDGET_MIME

    payload = data[MIME_TYPE_V2]
    assert set(payload["views"]) == {"strip", "flow", "heads"}, payload["views"].keys()
    kinds = {name: view["kind"] for name, view in payload["views"].items()}
    assert kinds == {"strip": "attribution", "flow": "flow", "heads": "heads"}
    assert payload["text"] == text and payload["views"]["strip"]["text"] == text
    tokens = [view["tokens"] for view in payload["views"].values()]
    assert tokens[0] and all(t == tokens[0] for t in tokens), tokens
    assert payload["model_id"] and payload["model_id"] == data[WIDGET_MIME]["model_id"]
    html = data["text/html"]
    assert 'class="xattr-lab-payload"' in html and '"kind":"explorer"' in html and "data-xattr-player" in html
    assert '"model_id"' not in html  # the saved drawing is not bound to a kernel session
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow
def test_saved_explorer_keeps_its_linked_views(tmp_path):
    """The Explorer's output is shown before anything is computed; once its views land (here when a
    later cell waits) the output is updated in place, so the saved notebook keeps every linked view."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    text = "a fine film"
    nb = new_notebook(cells=[
        new_code_cell("import xattr_lab as xa\nfrom xattr_lab import widgets\nex = xa.load('tiny-bert', device='cpu')"),
        new_code_cell(f"explorer = widgets.Explorer(ex, {text!r})\nexplorer"),
        new_code_cell("explorer.wait()\nprint(explorer.errors, explorer.strip.result.tokens)"),
    ])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    saved = _explorer_outputs(nb.cells[1])
    assert len(saved) == 1, nb.cells[1].outputs
    _assert_keeps_linked_views(saved[0], text)
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert printed.startswith("[] ") and repr(saved[0]["application/vnd.xattr.v2+json"]["views"]["strip"]["tokens"]) in printed


@pytest.mark.slow
def test_quickstart_explorer_saves_its_views(tmp_path):
    """examples/01_quickstart.ipynb run headless: its Explorer cell's saved output keeps its views."""
    from nbclient import NotebookClient

    nb = nbformat.read(EXAMPLES / "01_quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cell = next(c for c in nb.cells if c.cell_type == "code" and "widgets.Explorer(" in c.source)
    saved = _explorer_outputs(cell)
    assert len(saved) == 1, cell.outputs
    _assert_keeps_linked_views(saved[0], saved[0]["application/vnd.xattr.v2+json"]["text"])
