"""Attribution patching circuits (issue 31): AtP, EAP, EAP-IG and their result class."""
from __future__ import annotations

import numpy as np
import pytest

import xattr_lab as xa
from xattr_lab.results import PatchingCircuitResult, Result


def _result(method: str = "eap") -> PatchingCircuitResult:
    L, H, P = 2, 3, 4
    rng = np.random.default_rng(0)
    edges = rng.normal(size=(L * H, L * H + 1)) if method != "atp" else np.zeros((0, 0))
    return PatchingCircuitResult(
        node_scores=rng.normal(size=(L, H)), edge_scores=edges, prompt_node_scores=rng.normal(size=(P, L, H)),
        prompt_edge_scores={"0->6": [1.0, 2.0, 3.0, 4.0]} if method != "atp" else {},
        faithfulness={"unit": "edges", "sizes": [1, 2], "faithfulness": [0.5, 0.9], "cpr": 0.7, "cmd": 0.2},
        n_layers=L, n_heads=H, method=method, metric="logit_difference", positive=["a"] * P, negative=["b"] * P,
        truth=[[1, 0, 0], [0, 1, 0]], metrics={"node_roc_auc": 0.9}, model="tiny", options={"ig_steps": 5})


@pytest.mark.parametrize("method", ["atp", "eap", "eap-ig"])
def test_patching_circuit_result_round_trips_through_json(method):
    result = _result(method)
    back = Result.from_json(result.to_json())
    assert type(back) is PatchingCircuitResult and back.kind == "patching-circuit"
    np.testing.assert_allclose(back.node_scores, result.node_scores)
    np.testing.assert_allclose(back.prompt_node_scores, result.prompt_node_scores)
    assert back.edge_scores.shape == result.edge_scores.shape
    np.testing.assert_allclose(back.edge_scores, result.edge_scores)
    assert back.prompt_edge_scores == result.prompt_edge_scores and back.faithfulness == result.faithfulness
    assert back.truth == result.truth and back.method == method and back.options == {"ig_steps": 5}
    assert xa.PatchingCircuitResult is PatchingCircuitResult


def test_patching_circuit_result_checks_its_shapes():
    with pytest.raises(ValueError, match="edge_scores"):
        PatchingCircuitResult(node_scores=np.zeros((2, 3)), edge_scores=np.zeros((6, 6)),
                              prompt_node_scores=np.zeros((1, 2, 3)), n_layers=2, n_heads=3)
    with pytest.raises(ValueError, match="node_scores"):
        PatchingCircuitResult(node_scores=np.zeros((3, 2)), edge_scores=np.zeros((0, 0)),
                              prompt_node_scores=np.zeros((1, 2, 3)), n_layers=2, n_heads=3)


def test_top_edges_names_heads_and_logits():
    result = _result("eap")
    result.edge_scores[:] = 0
    result.edge_scores[4, 6] = -5.0  # head 1.1 -> logits
    result.edge_scores[0, 4] = 2.0  # head 0.0 -> head 1.1
    assert result.top_edges(2) == [("1.1", "logits", -5.0), ("0.0", "1.1", 2.0)]
