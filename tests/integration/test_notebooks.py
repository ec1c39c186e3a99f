"""Workshop notebooks: saved without outputs, lessons with exercises (fast checks), and executed headless
(slow): as saved (every check says "not answered yet") and with the solutions pasted in (every check passes)."""
from __future__ import annotations

import os
import re

import nbformat
import pytest

from tests.support import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
LESSONS = [p for p in NOTEBOOKS if not p.stem.startswith("00")]
SOLUTION = re.compile(r"<details>.*?```python\n(.*?)```.*?</details>", re.S)
EXERCISE = re.compile(r"^### Exercise (\d+) (⭐{1,3}) \((\d+) min\): \S", re.M)


def test_examples_exist():
    names = [p.stem[:2] for p in NOTEBOOKS]
    assert names == ["00", "01", "02", "03", "04", "05", "06"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_valid_with_cell_ids(path):
    """nbformat 4.5 with an id on every cell (no MissingIDFieldWarning), ids unique."""
    import warnings

    nb = nbformat.read(path, as_version=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nbformat.validate(nb)
    ids = [c.get("id") for c in nb.cells]
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5) and all(ids) and len(set(ids)) == len(ids), ids


def exercises(nb) -> list[tuple[int, int, int]]:
    """(answer cell, check cell, solution cell) indices of each exercise of ``nb``, in order.

    An exercise is a markdown heading "### Exercise N ⭐.. (M min): title", then a code cell tagged
    ``answer`` (the student's variables, ``None`` until answered), a code cell tagged ``check`` (a call to
    ``workshop.check_*``, the cell's last line) and a markdown ``<details>`` block holding the solution code.
    """
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and EXERCISE.search(cell.source):
            found.append((i + 1, i + 2, i + 3))
    return found


def with_solutions(nb):
    """A copy of ``nb`` whose answer cells hold the code of the exercises' hidden solutions."""
    import copy

    nb = copy.deepcopy(nb)
    for answer, _, solution in exercises(nb):
        nb.cells[answer].source = SOLUTION.search(nb.cells[solution].source).group(1)
    return nb


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_notebook_is_a_lesson(path):
    """Objectives, concepts before code, 2-4 time-boxed exercises tagged by difficulty with a check cell and a
    hidden solution each, discussion prompts, and a troubleshooting cell."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0].source
    assert "Learning objectives" in first and "Concepts in plain words" in first and "```" in first, path.name
    found = exercises(nb)
    assert 2 <= len(found) <= 4, (path.name, len(found))
    for answer, check, solution in found:
        heading = nb.cells[answer - 1].source
        assert int(EXERCISE.search(heading).group(3)) <= 15, heading
        a, c, s = nb.cells[answer], nb.cells[check], nb.cells[solution]
        assert a.cell_type == "code" and "answer" in a.metadata.get("tags", []) and "= None" in a.source, a.source
        assert c.cell_type == "code" and "check" in c.metadata.get("tags", []), c.source
        assert c.source.lstrip().startswith("workshop.check_"), c.source
        assert s.cell_type == "markdown" and SOLUTION.search(s.source), s.source
    numbers = [int(EXERCISE.search(nb.cells[a - 1].source).group(1)) for a, _, _ in found]
    assert numbers == list(range(1, len(found) + 1)), numbers
    sources = [c.source for c in nb.cells]
    assert any("## Discussion" in src for src in sources), path.name
    assert any("workshop.memory_advice" in src for src in sources), path.name


def test_with_solutions_fills_every_answer_cell():
    nb = nbformat.read(LESSONS[0], as_version=4)
    solved = with_solutions(nb)
    for answer, _, _ in exercises(nb):
        assert solved.cells[answer].source != nb.cells[answer].source and "= None" not in solved.cells[answer].source
    assert [c.source for c in solved.cells if "check" in c.metadata.get("tags", [])] == \
        [c.source for c in nb.cells if "check" in c.metadata.get("tags", [])]


def _check_texts(nb) -> list[str]:
    """The text each check cell of an executed ``nb`` shows (its Verdict's repr)."""
    texts = []
    for _, check, _ in exercises(nb):
        outputs = nb.cells[check].outputs
        texts.append("".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs))
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has saved outputs"


#: the most an executed workshop notebook may weigh (issue 32: "saved notebooks that travel")
MAX_EXECUTED_BYTES = 2_000_000
BOKEH_LOADERS = ("application/vnd.bokehjs_load.v0+json", "application/javascript")


def assert_travels(nb) -> None:
    """An executed notebook as saved: at most 2 MB, and no output carries a BokehJS loader (~4 MB of script
    each; regression: every executed notebook weighed 8.2-9.3 MB)."""
    loaders = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if any(mime in (o.get("data") or {}) for mime in BOKEH_LOADERS)]
    assert not loaders, [sorted(o["data"]) for o in loaders]
    size = len(nbformat.writes(nb).encode("utf-8"))
    assert size <= MAX_EXECUTED_BYTES, f"executed notebook is {size / 1e6:.2f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    texts = _check_texts(nb)
    assert all(t.startswith("⏳ Not answered yet") for t in texts), texts
    assert_travels(nb)


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_notebook_solutions_pass(path, tmp_path):
    """Each exercise's hidden solution, pasted into its answer cell, makes its check say "Right"."""
    from nbclient import NotebookClient

    nb = with_solutions(nbformat.read(path, as_version=4))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    texts = _check_texts(nb)
    assert texts and all(t.startswith("✅ Right.") for t in texts), texts


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


FACILITATOR = EXAMPLES.parent / "docs" / "workshop" / "FACILITATOR.md"
ROW = re.compile(r"^\| (\d):(\d\d) \| (\d+) \| [^|]+\| (?:`(\d\d)_\w+`|—) \| ([^|]*) \|$", re.M)


def test_facilitator_schedule_fills_three_hours_and_matches_the_notebooks():
    """The guide's session table: rows start where the previous ended, add up to 180 minutes, and each lesson's
    row has the notebook's own minutes ("**Time:** N min") and its exercises (number, stars, minutes)."""
    rows = ROW.findall(FACILITATOR.read_text(encoding="utf-8"))
    assert len(rows) >= 8, rows
    clock = 0
    seen = set()
    for hours, minutes, length, stem, listed in rows:
        assert 60 * int(hours) + int(minutes) == clock, (hours, minutes, clock)
        clock += int(length)
        if not stem:
            continue
        seen.add(stem)
        nb = nbformat.read(next(p for p in LESSONS if p.stem.startswith(stem)), as_version=4)
        assert re.search(rf"\*\*Time:\*\* {length} min\b", nb.cells[0].source), (stem, length)
        heads = [EXERCISE.search(nb.cells[a - 1].source) for a, _, _ in exercises(nb)]
        assert listed.strip() == ", ".join(f"{m.group(1)} {m.group(2)} {m.group(3)}" for m in heads), (stem, listed)
    assert clock == 180 and seen == {p.stem[:2] for p in LESSONS}, (clock, seen)
