"""xattr_lab.workshop: each check says right (✅), wrong (❌, with why) or not answered (⏳), never raises."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.support import REPO_ROOT
from xattr_lab import workshop as w


def _kind(verdict) -> str:
    return {True: "right", False: "wrong", None: "waiting"}[verdict.ok]


def test_verdict_text_and_truth():
    v = w.check_number(2.0, 2.0)
    assert bool(v) and repr(v).startswith("✅") and str(v) == repr(v)
    bad = w.check_number(3.0, 2.0, hint="try again")
    assert not bad and repr(bad).startswith("❌") and "+1" in repr(bad) and "try again" in repr(bad)
    wait = w.check_number(None, 2.0, name="x")
    assert not wait and wait.ok is None and repr(wait).startswith("⏳") and "x" in repr(wait)


@pytest.mark.parametrize("answer, kind", [(1.0004, "right"), (np.float32(1.0), "right"), (np.array([1.0]), "right"),
                                          (1.1, "wrong"), ("1.0", "wrong"), (True, "wrong"), (float("nan"), "wrong"),
                                          ([1, 2], "wrong"), (None, "waiting")])
def test_check_number_accepts_numbers_only(answer, kind):
    assert _kind(w.check_number(answer, 1.0)) == kind


def test_check_choice_gives_the_feedback_of_the_pick():
    options = {"a": "no: a is a bug", "b": "yes: b", "c": "no: c"}
    assert _kind(w.check_choice(" B ", "b", options)) == "right" and "yes: b" in repr(w.check_choice("b", "b", options))
    wrong = w.check_choice("a", "b", options)
    assert _kind(wrong) == "wrong" and "a is a bug" in repr(wrong)
    assert _kind(w.check_choice("z", "b", options)) == "wrong" and "not one of" in repr(w.check_choice("z", "b", options))
    assert _kind(w.check_choice(None, "b", options)) == "waiting"


def test_clean_token_drops_markers_case_and_spaces():
    assert [w.clean_token(t) for t in ["\u0120Mary", "##ing", "\u2581The", " Terrific "]] == ["mary", "ing", "the", "terrific"]


def test_check_top_token_computes_the_argmax_itself():
    tokens, scores = ["[CLS]", "a", "\u0120terrific", "film"], [0.0, 0.1, 0.7, 0.2]
    assert _kind(w.check_top_token("Terrific", tokens, scores)) == "right"
    assert _kind(w.check_top_token("film", tokens, scores)) == "wrong"
    typo = w.check_top_token("terrfic", tokens, scores)
    assert _kind(typo) == "wrong" and "not a token" in repr(typo)


def test_check_prediction_reports_the_actual_top_token():
    tokens, scores = ["the", "plot", "terrific"], np.array([0.1, 0.5, 0.2])
    assert _kind(w.check_prediction("plot", tokens, scores)) == "right"
    miss = w.check_prediction("terrific", tokens, scores)
    assert _kind(miss) == "wrong" and "'plot'" in repr(miss)
    assert _kind(w.check_prediction(None, tokens, scores)) == "waiting"


def test_check_ranks_wants_rank_one_for_the_largest_score():
    table = pd.DataFrame({"a": [0.587, 0.680, 0.600], "b": [0.003, 0.001, 0.002]})
    assert _kind(w.check_ranks(table.rank(ascending=False), table)) == "right"
    assert _kind(w.check_ranks(table.rank(ascending=False, method="first").to_numpy(), table)) == "right"
    ascending = w.check_ranks(table.rank(ascending=True), table)
    assert _kind(ascending) == "wrong"
    assert _kind(w.check_ranks(table.rank(ascending=False).iloc[:2], table)) == "wrong"
    zero_based = table.rank(ascending=False) - 1
    assert _kind(w.check_ranks(zero_based, table)) == "wrong"
    assert _kind(w.check_ranks(None, table)) == "waiting"


def test_check_completeness_prints_the_error_and_names_the_usual_mistake():
    right = w.check_completeness(-1.25, f_x=2.0, f_baseline_measured=-1.25, attribution_sum=3.2495)
    text = repr(right)
    assert right and "F(baseline) = -1.2500" in text and "3.2500" in text and "-0.0005" in text
    took_fx = w.check_completeness(2.0, f_x=2.0, f_baseline_measured=-1.25, attribution_sum=3.2495)
    assert _kind(took_fx) == "wrong" and "is F(x)" in repr(took_fx)
    assert _kind(w.check_completeness(0.3, 2.0, -1.25, 3.25)) == "wrong"
    assert _kind(w.check_completeness("x", 2.0, -1.25, 3.25)) == "wrong"
    assert _kind(w.check_completeness(None, 2.0, -1.25, 3.25)) == "waiting"


def test_check_chance_corrected_explains_a_large_negative_value():
    observed, chance = 0.8, 0.99663
    expected = (observed - chance) / (1 - chance)
    assert expected < -50
    right = w.check_chance_corrected(expected, observed, chance)
    assert right and "1 − chance" in repr(right)
    assert _kind(w.check_chance_corrected(observed - chance, observed, chance)) == "wrong"


def test_check_set_and_overlap():
    truth = ["1.1", "1.3", "0.0", "0.2"]
    assert _kind(w.check_set(["0.0", "0.2", "1.1", "1.3"], truth)) == "right"
    wrong = w.check_set(["0.0", "0.1"], truth)
    assert _kind(wrong) == "wrong" and "missing" in repr(wrong) and "0.1" in repr(wrong)
    assert _kind(w.check_set("0.0", truth)) == "wrong"
    assert w.head_names([0, 2, 5, 7], n_heads=4) == ["0.0", "0.2", "1.1", "1.3"]
    found = ["23.3", "5.1", "29.1"]
    assert _kind(w.check_overlap(2, found, w.SMOLLM2_IOI_TRUTH["name mover"])) == "right"
    assert _kind(w.check_overlap(3, found, w.SMOLLM2_IOI_TRUTH["name mover"])) == "wrong"


def test_smollm2_truth_is_the_readme_list():
    heads = [h for group in w.SMOLLM2_IOI_TRUTH.values() for h in group]
    assert len(heads) == len(set(heads)) == 12
    assert all(0 <= int(h.split(".")[0]) < 30 and 0 <= int(h.split(".")[1]) < 9 for h in heads)


def test_versions_and_memory():
    found = w.versions(("numpy", "surely-not-a-package-xyz"))
    assert found["numpy"] == np.__version__ and found["surely-not-a-package-xyz"] == "missing" and "python" in found
    assert 0.001 < w.memory_gb() < 1000
    assert "fine" in w.memory_advice(1.1) and "Restart" in w.memory_advice(3.0) and "Restart" in w.memory_advice(1.0, 2)


def test_workshop_stays_pure():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(w.__file__).read_text())
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "os", "resource", "sys", "dataclasses", "importlib", "typing", "numpy"}, imported


def test_check_top_share_and_count():
    scores, total = [0.5, 0.1, 0.3, 0.1], 1.0
    assert _kind(w.check_top_share(0.9, scores, total, k=2)) == "wrong"
    assert _kind(w.check_top_share(0.8, scores, total, k=2)) == "right"
    percent = w.check_top_share(80, scores, total, k=2)
    assert _kind(percent) == "wrong" and "percentage" in repr(percent)
    flags = pd.Series([True, False, True])
    assert _kind(w.check_count(2, flags)) == "right" and _kind(w.check_count(3, flags)) == "wrong"
    assert _kind(w.check_count(None, flags)) == "waiting"


# ---------------------------------------------------------------------------- lesson 05's heat map, the loader
def _jsd_circuit():
    from xattr_lab.results import CircuitResult

    scores = np.array([[0.8731, 0.0412, 0.9104, 0.0033], [0.0521, 0.6688, 0.012, 0.7012]])  # JSD scores in [0, 1]
    edges = np.zeros((8, 8))
    edges[0, 5] = edges[5, 0] = 0.4375
    return CircuitResult(node_scores=scores, edge_scores=edges, codes_positive=np.zeros((3, 8), int),
                         codes_negative=np.ones((3, 8), int), n_layers=2, n_heads=4, positive=["p"] * 3,
                         negative=["n"] * 3)


def test_circuit_heat_map_writes_decimals_not_0_and_1():
    """Regression (issue 32, 05): the SAE grid wrote JSD node scores with "{:.0f}", so 0.87 read "1" and 0.04 "0";
    the top-edge table did the same to 0.4375."""
    from xattr_lab.widgets.views.circuit_view import CircuitView

    view = CircuitView(_jsd_circuit())
    labels = view.statistics["circuit node score"]["labels"]
    assert labels[0][:3] == ["0.87", "0.04", "0.91"] and labels[1][1] == "0.67", labels
    assert "<td>0.44</td>" in view.edges_html(), view.edges_html()
    assert view.png_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("values, places", [([0.8731, 0.2], 2), ([4.1, -0.5], 1), ([0.0031], 4), ([37.0, 2.5], 0),
                                            ([3.0, 5.0], 0), ([0.0, float("nan")], 0), ([], 0)])
def test_significant_decimals(values, places):
    from xattr_lab.widgets.export import significant_decimals

    assert significant_decimals(values) == places


def test_bokeh_loader_is_sent_once_per_front_end_and_never_saved(monkeypatch):
    """Regression (issue 32, item 4): the loader cell saved BokehJS twice (application/javascript and
    bokehjs_load, ~4 MB each) in every executed notebook. Now each front-end session gets it once, under a
    display id whose output is replaced at once by an empty one: what a notebook saves holds no script."""
    import IPython.display

    from xattr_lab.widgets import bundle

    sent: list[tuple[str, dict, dict]] = []
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, metadata=None, *, transient=None, **kw: sent.append(("show", data, transient)))
    monkeypatch.setattr(IPython.display, "update_display",
                        lambda obj, *, display_id, **kw: sent.append(("update", obj, {"display_id": display_id})))
    monkeypatch.setattr(bundle, "in_kernel", lambda: True)
    monkeypatch.setattr(bundle, "_loaded_sessions", set())
    session = {"id": "page-1"}
    monkeypatch.setattr(bundle, "_client_session", lambda: session["id"])

    assert bundle.ensure_bokeh_loaded() and not bundle.ensure_bokeh_loaded()  # once per front end
    assert [kind for kind, _, _ in sent] == ["show", "update"]
    (_, shown, first), (_, saved, second) = sent
    assert set(shown) == {"application/javascript", bundle.BOKEH_LOADER_MIME}
    assert all(len(js) > 1_000_000 and "cdn.bokeh.org" not in js for js in shown.values())  # INLINE, offline
    assert first["display_id"] == second["display_id"] and saved == {"text/plain": ""}  # saved: an empty text
    session["id"] = "page-2"  # a reload or a second tab: a new session gets it again
    assert bundle.ensure_bokeh_loaded() and len(sent) == 4
    assert sent[2][2]["display_id"] != first["display_id"]


def test_smollm2_ioi_truth_is_the_committed_path_patching_truth():
    """Lesson 05 checks SmolLM2's top heads against ``workshop.SMOLLM2_IOI_TRUTH``: it must be, role by role, the
    path-patching truth committed under results/data/circuits (scripts/circuits_report.py truth --task ioi)."""
    import json
    from pathlib import Path

    path = REPO_ROOT / "results" / "data" / "circuits" / "ioi_smollm2_truth.json"
    truth = json.loads(path.read_text(encoding="utf-8"))["truth"]
    L, H = truth["shape"]
    committed = {role: sorted(w.head_names(heads, H)) for role, heads in truth["classes"].items()}
    ours = {role: sorted(heads) for role, heads in w.SMOLLM2_IOI_TRUTH.items()}
    assert sorted(map(sorted, committed.values())) == sorted(map(sorted, ours.values())), (committed, ours)
    assert sorted(h for heads in ours.values() for h in heads) == sorted(w.head_names(truth["nodes"], H))
    assert (L, H) == (30, 9)


def test_export_drops_the_sent_loaders_empty_output(recwarn):
    """``xattr export`` of a notebook executed since issue 32: the empty output that replaced the BokehJS loader
    is dropped (regression: nbconvert warned "mimetype(s) dict_keys([]) is not able to be represented"), other
    outputs, including an empty stream, stay."""
    import nbformat

    from xattr_lab.widgets.notebook_html import notebook_html

    cell = nbformat.v4.new_code_cell("x = 1")
    cell.outputs = [nbformat.v4.new_output("display_data", data={}),
                    nbformat.v4.new_output("display_data", data={"text/plain": ""}),
                    nbformat.v4.new_output("stream", name="stdout", text="kept 42\n")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    page = notebook_html(nb)
    assert [o.output_type for o in nb.cells[0].outputs] == ["stream"] and "kept 42" in page
    assert not [w for w in recwarn if "not able to be represented" in str(w.message)]


def _assets():
    import importlib.util
    from pathlib import Path

    path = REPO_ROOT / "scripts" / "workshop_assets.py"
    spec = importlib.util.spec_from_file_location("workshop_assets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_assets_size_parts_count_loaders_widget_state_and_outputs():
    """scripts/workshop_assets.py sizes: a loader output (either MIME type), the saved widget state and the
    other outputs are counted apart; an xattr output is never counted as a loader."""
    assets = _assets()
    loader = {"output_type": "display_data", "metadata": {}, "data": {"application/javascript": "x" * 5000}}
    xattr = {"output_type": "display_data", "metadata": {},
             "data": {"application/vnd.xattr.v2+json": {"kind": "flow"}, "text/plain": "y" * 300}}
    nb = {"cells": [{"cell_type": "code", "outputs": [loader, xattr]}], "metadata": {"widgets": {"s": "z" * 700}}}
    parts = assets.size_parts(nb)
    assert 5000 < parts["bokehjs_loaders"] < 5200 and 300 < parts["other_outputs"] < 500
    assert 700 < parts["widget_state"] < 800


def test_slide_heat_map_has_numbers_colour_bar_and_boxes():
    assets = _assets()
    values = np.array([[0.64, 0.0], [0.12, 0.54]])
    fig = assets.heatmap(values, ["L0", "L1"], [0, 1], title="t", colour_label="node score", outline=[(0, 0)],
                         numbers=100 * values, fmt="{:.1f}")
    ax, bar = fig.axes
    assert sorted(t.get_text() for t in ax.texts) == ["0.0", "12.0", "54.0", "64.0"]
    assert bar.get_ylabel() == "node score" and len(ax.patches) == 1 and ax.patches[0].get_edgecolor()[0] > 0.8
