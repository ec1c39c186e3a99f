"""Circuit graph view of patching circuits (issue 31, view half): live view, linking, payload, fixtures.

Results are built from synthetic arrays whose expected outputs are computed by hand here.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from tests.support import REPO_ROOT
from xattr_lab.payload import decode_array, from_payload, schema, to_payload
from xattr_lab.results import PatchingCircuitResult
from xattr_lab.widgets.views import circuit_figures as cf
from xattr_lab.widgets import mime_bundle
from xattr_lab.widgets.select import view_for
from xattr_lab.widgets.views import CircuitGraphView, HeadGrid, LinkedState
from xattr_lab.widgets.views.circuit_graph import faithfulness_at

ROOT = REPO_ROOT
FIXTURE = ROOT / "labextension" / "test" / "fixtures" / "patching.json"
HOSTILE = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "$$x$$ \"'&", "\u202eevil"]
VALIDATOR = jsonschema.Draft202012Validator(schema())
L, H, P = 3, 2, 4


def eap_result(faithfulness: dict | None = None, **kw) -> PatchingCircuitResult:
    """3 layers x 2 heads, 4 prompt pairs; edges only from earlier layers (and every head -> logits)."""
    rng = np.random.default_rng(3)
    per_prompt = np.round(rng.normal(size=(P, L, H)), 3)
    E = np.zeros((L * H, L * H + 1))
    for s in range(L * H):
        for r in range(L * H + 1):
            if r == L * H or s // H < r // H:
                E[s, r] = np.round(rng.normal(), 3)
    E[0, 2] = 5.0   # the strongest edge, 0.0 -> 1.0
    E[1, 6] = -4.0  # second, negative: 0.1 -> logits
    prompt_edges = {"0->2": [5.5, 4.5, 5.0, 5.0], "1->6": [-4.0, -3.0, -5.0, -4.0]}
    args = dict(node_scores=per_prompt.mean(axis=0), edge_scores=E, prompt_node_scores=per_prompt,
                prompt_edge_scores=prompt_edges, n_layers=L, n_heads=H, method="eap-ig", metric="logit difference",
                positive=[HOSTILE[0], "clean two", HOSTILE[1], "clean four"],
                negative=["corrupt one", HOSTILE[2], "corrupt three", HOSTILE[3]], truth=[[0, 0], [1, 0]],
                model="toy")
    args["faithfulness"] = {"unit": "edges", "sizes": [1, 2, 4, 8], "faithfulness": [0.1, 0.5, 0.8, 0.95],
                            "cpr": 0.71, "cmd": 0.12} if faithfulness is None else faithfulness
    args.update(kw)
    return PatchingCircuitResult(**args)


def atp_result() -> PatchingCircuitResult:
    per_prompt = np.arange(P * L * H, dtype=float).reshape(P, L, H) - 10
    return PatchingCircuitResult(node_scores=per_prompt.mean(axis=0), edge_scores=np.zeros((0, 0)),
                                 prompt_node_scores=per_prompt, n_layers=L, n_heads=H, method="atp",
                                 positive=["a"] * P, negative=["b"] * P)


# ---------------------------------------------------------------------------- pure helpers
def test_edges_ranked_by_absolute_score_with_logits_at_the_end():
    s, r, v = cf.ranked_edges(eap_result().edge_scores)
    assert (s[0], r[0], v[0]) == (0, 2, 5.0) and (s[1], r[1], v[1]) == (1, 6, -4.0)
    assert np.all(np.diff(np.abs(v)) <= 0) and np.all(v != 0)
    assert all(b == L * H or a // H < b // H for a, b in zip(s, r))  # never to the same or an earlier layer
    x, y = cf.node_xy([0, 3, L * H], L, H)  # 0.0, 1.1, logits
    assert x.tolist() == [0, 1, L] and y.tolist() == [0, -1, -(H - 1) / 2]
    assert cf.head_name(L * H, L, H) == "logits" and cf.head_name(5, L, H) == "2.1"
    data = cf.edge_data(s[:2], r[:2], v[:2], L, H)
    assert data["name"] == ["0.0 -> 1.0", "0.1 -> logits"] and data["text"] == ["5.0000", "-4.0000"]
    assert data["colour"][0] != data["colour"][1]  # sign is visible
    assert data["width"][0] > data["width"][1] > 0
    assert cf.circuit_nodes(1, "edges", np.zeros((L, H)), s, r) == {0, 2}
    assert cf.circuit_nodes(2, "nodes", np.array([[0.1, -3.0], [2.0, 0.0], [0.0, 0.0]]), s, r) == {1, 2}
    assert cf.circuit_edges(3, "edges", s, r, set()).tolist() == [0, 1, 2]
    between = cf.circuit_edges(99, "nodes", s, r, {0, 1, 2, L * H})  # heads 0.0, 0.1, 1.0 and the logits
    assert [(s[i], r[i]) for i in between] and all(s[i] in {0, 1, 2} and r[i] in {0, 1, 2, L * H} for i in between)
    assert (0, 2) in [(s[i], r[i]) for i in between] and (1, 6) in [(s[i], r[i]) for i in between]


def test_faithfulness_at_uses_the_largest_computed_size_not_above_k():
    f = {"sizes": [1, 2, 4, 8], "faithfulness": [0.1, 0.5, 0.8, 0.95]}
    assert faithfulness_at(f, 4) == (4, 0.8)
    assert faithfulness_at(f, 7) == (4, 0.8)
    assert faithfulness_at(f, 100) == (8, 0.95)
    assert faithfulness_at({}, 3) is None and faithfulness_at({"sizes": [1], "faithfulness": []}, 1) is None


# ---------------------------------------------------------------------------- the live view
def test_select_picks_the_graph_view_and_the_slider_reads_out_faithfulness():
    v = view_for(eap_result())
    assert isinstance(v, CircuitGraphView) and v.unit == "edges"
    v.widget  # build
    assert v.sizes == [1, 2, 4, 8] and v._slider.options == (1, 2, 4, 8)
    v._slider.value = 2
    assert "faithfulness 0.5000" in v._readout.value and "CPR 0.7100" in v._readout.value
    assert len(v._edges.data["x0"]) == 2
    v._slider.value = 8
    assert "faithfulness 0.9500" in v._readout.value and len(v._edges.data["x0"]) == 8
    in_circuit = {i for i, a in enumerate(v._nodes.data["alpha"]) if a == 1.0}
    s, r, _ = cf.ranked_edges(v.result.edge_scores)
    assert in_circuit == set(s[:8].tolist()) | set(r[:8].tolist())


def test_not_computed_faithfulness_is_said_and_the_slider_still_sizes_the_circuit():
    v = CircuitGraphView(eap_result(faithfulness={}))
    v.widget
    assert "faithfulness: not computed" in v._readout.value
    v._slider.value = 3
    assert len(v._edges.data["x0"]) == 3 and "top 3 edges" in v._readout.value


def test_clicking_a_head_shows_its_effect_per_prompt_escaped_and_selects_it_in_the_head_grid():
    r = eap_result()
    v = CircuitGraphView(r)
    v.widget
    v._nodes.selected.indices = [1 * H + 0]  # a Bokeh tap on node 1.0
    assert tuple(v.state.head) == (1, 0)
    assert v.detail["effects"] == r.prompt_node_scores[:, 1, 0].tolist()
    html = v._effects.value
    assert "head 1.0" in html and html.count("xattr-prompt-row") == P
    assert "<img" not in html and "<script>" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert (v.grid.detail["layer"], v.grid.detail["head"]) == (1, 0) and v.grid._cells.selected.indices == [1 * H]  # linked grid follows
    v.grid._cells.selected.indices = [2 * H + 1]  # and a tap in the grid selects the graph's node
    assert v.detail == {"kind": "head", "layer": 2, "head": 1, "effects": r.prompt_node_scores[:, 2, 1].tolist()}
    assert v._nodes.selected.indices == [2 * H + 1]


def test_a_head_grid_on_the_same_state_is_linked_both_ways():
    r, state = eap_result(), LinkedState()
    graph, grid = CircuitGraphView(r, state=state), HeadGrid(r, state=state)
    graph.select_head(0, 1)
    assert grid.detail["head"] == 1 and grid.detail["layer"] == 0
    grid.select_head(2, 0)
    assert graph.detail["layer"] == 2 and graph.detail["head"] == 0


def test_clicking_an_edge_shows_its_stored_per_prompt_effects():
    v = CircuitGraphView(eap_result())
    v.widget
    v._edges.selected.indices = [1]  # 0.1 -> logits
    assert v.edge == (1, L * H) and v.detail["effects"] == [-4.0, -3.0, -5.0, -4.0]
    assert "edge 0.1 -&gt; logits" in v._effects.value and v._effects.value.count("xattr-prompt-row") == P
    v.select_edge(4, 6)  # not among the stored top edges
    assert v.detail["effects"] is None and "top 2 edges only" in v._effects.value


def test_edge_circuit_sized_by_nodes_draws_the_edges_among_its_heads():
    """Regression: with a node-level faithfulness curve (what ex.circuit computes for eap-ig) the graph
    drew no edges at all."""
    r = eap_result(faithfulness={"unit": "nodes", "sizes": [1, 2, 3], "faithfulness": [0.2, 0.4, 0.9]})
    v = CircuitGraphView(r, size=3)
    v.widget
    heads = {int(i) for i in cf.ranked_nodes(r.node_scores)[:3]}
    drawn = list(zip(v._edges.data["sender"], v._edges.data["receiver"]))
    assert drawn and all(a in heads and (b in heads or b == L * H) for a, b in drawn)
    s, rr, _ = cf.ranked_edges(r.edge_scores)
    expected = [(a, b) for a, b in zip(s.tolist(), rr.tolist()) if a in heads and (b in heads or b == L * H)]
    assert drawn == expected and "top 3 nodes · faithfulness 0.9000" in v._readout.value


def test_atp_has_no_edges_and_sizes_the_circuit_by_nodes():
    v = view_for(atp_result())
    v.widget
    assert v.unit == "nodes" and v._edges.data["x0"] == [] and "not computed" in v._readout.value
    v._slider.value = 2
    top = {i for i, a in enumerate(v._nodes.data["alpha"]) if a == 1.0}
    assert top == {4, 5}  # the two largest |node score| (the last heads: means 8, 9)
    assert v.png_bytes().startswith(b"\x89PNG")


def test_header_says_how_many_edges_are_not_drawn(monkeypatch):
    monkeypatch.setattr(cf, "MAX_DRAWN", 5)
    r = eap_result()
    v = CircuitGraphView(r)
    total = int(np.count_nonzero(r.edge_scores))
    assert f"{total - 5:,} more edges not drawn" in v.header_html() and v.max_size == 5


def test_head_grid_labels_patching_scores_as_plain_decimals():
    """Regression: the grid wrote node scores with "{:.0f}" (SAE code counts), so 0.31 showed as "0"."""
    grid = HeadGrid(eap_result(node_scores=np.full((L, H), 0.3125)))
    assert grid.statistics["circuit node score"]["labels"][0][0] == "0.312"


def test_exports_html_and_png_without_clipping_data(tmp_path):
    v = CircuitGraphView(eap_result())
    v.select_head(1, 1)
    page = Path(v.to_html(tmp_path / "c.html")).read_text()
    assert "alert(1)>" not in page.replace("&lt;", "<").split("<body")[0]  # no raw prompt in the head
    assert "cdn.bokeh.org" not in page
    assert v.png_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------------------- saved output
def test_payload_validates_and_round_trips_within_float16_precision():
    r = eap_result()
    p = to_payload(r, model_id=None)
    VALIDATOR.validate(p)
    assert p["kind"] == "patching-circuit" and p["faithfulness"]["cpr"] == 0.71
    back = from_payload(json.loads(json.dumps(p)))
    assert isinstance(back, PatchingCircuitResult) and back.positive == r.positive
    for name in ("node_scores", "edge_scores", "prompt_node_scores"):
        a, b = getattr(r, name), getattr(back, name)
        assert a.shape == b.shape and np.allclose(a, b, rtol=2 ** -10, atol=1e-6), name
    assert back.prompt_edge_scores.keys() == r.prompt_edge_scores.keys()
    assert np.allclose(back.prompt_edge_scores["1->6"], r.prompt_edge_scores["1->6"], rtol=2 ** -10)


def test_payload_caps_edges_and_says_how_many_were_left_out():
    r = eap_result()
    total = int(np.count_nonzero(r.edge_scores))
    p = to_payload(r, max_pairs=1)
    VALIDATOR.validate(p)
    assert p["edges"]["total"] == total and p["edges"]["hidden"] == total - 1
    assert decode_array(p["edges"]["sender"]).tolist() == [0] and decode_array(p["edges"]["receiver"]).tolist() == [2]
    assert decode_array(p["prompt_edges"]["sender"]).tolist() == [0]  # only stored edges keep per-prompt scores
    atp = to_payload(atp_result())
    VALIDATOR.validate(atp)
    assert atp["edges"]["shape"] == [0, 0] and from_payload(atp).edge_scores.shape == (0, 0)


def test_schema_rejects_a_patching_payload_without_its_edges():
    p = to_payload(eap_result())
    del p["edges"]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(p)


def test_mime_bundle_carries_the_payload_the_player_and_a_png():
    bundle = mime_bundle(eap_result(), widget=False)
    assert bundle["application/vnd.xattr.v2+json"]["kind"] == "patching-circuit"
    assert "xattr-lab-payload" in bundle["text/html"] and "<img src=x" not in bundle["text/html"]
    assert bundle["image/png"]


# ---------------------------------------------------------------------------- what the TS renderer reads
def patching_fixtures() -> dict:
    """v2 payloads for labextension/test/render-graph.test.ts (regenerate: python -m tests.widgets.test_circuit_graph_view)."""
    return {"eap": to_payload(eap_result(), model_id=None), "atp": to_payload(atp_result(), model_id=None),
            "not-computed": to_payload(eap_result(faithfulness={}), model_id=None),
            "capped": to_payload(eap_result(), model_id=None, max_pairs=3),
            "eap-nodes": to_payload(eap_result(faithfulness={"unit": "nodes", "sizes": [1, 2, 3],
                                                             "faithfulness": [0.2, 0.4, 0.9]}), model_id=None)}


def test_renderer_fixture_is_what_the_writer_writes():
    fixtures = patching_fixtures()
    for payload in fixtures.values():
        VALIDATOR.validate(payload)
    assert json.loads(FIXTURE.read_text()) == json.loads(json.dumps(fixtures, allow_nan=False))


# ---------------------------------------------------------------------------- the real API
def test_a_real_eap_ig_circuit_of_the_toy_draws_clicks_and_saves():
    """``ex.circuit(method="eap-ig")`` on the toy induction model, shown and saved by this view."""
    import xattr_lab as xa
    from xattr_lab.evaluation.tasks import induction_task

    ex = xa.load("toy-induction", device="cpu")
    task = induction_task(ex.tokenizer, n=6)
    r = ex.circuit(task.positive, task.negative, method="eap-ig", metric=task.metric, ig_steps=2, progress=False)
    v = view_for(r)
    assert isinstance(v, CircuitGraphView)
    v.widget
    v._nodes.selected.indices = [1]  # head 0.1
    assert v.detail["effects"] == np.asarray(r.prompt_node_scores)[:, 0, 1].tolist() and len(v.detail["effects"]) == 6
    readout = v._readout.value
    assert ("not computed" in readout) == (not r.faithfulness)
    p = to_payload(r)
    VALIDATOR.validate(p)
    back = from_payload(json.loads(json.dumps(p)))
    peak = float(np.abs(r.node_scores).max())
    assert np.allclose(back.node_scores, r.node_scores, rtol=2 ** -10, atol=2 ** -24 * 2 * peak)


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(patching_fixtures(), allow_nan=False, indent=1) + "\n")
