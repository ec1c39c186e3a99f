"""Result types: JSON round trip, schema checks, shapes."""
from __future__ import annotations

import json

import numpy as np
import pytest

import xattr_lab as xa
from xattr_lab.results import SCHEMA, Attribution, CircuitResult, FlowResult, HeadStats, Result


def _attribution():
    return Attribution(
        tokens=["[CLS]", "<img src=x onerror=alert(1)>", "</script>", "[SEP]"],
        scores=np.array([0.0, 0.5, -0.25, np.nan]),
        raw=np.array([0.0, 1.0, -0.5, 0.0]),
        target=(3, 1),
        method="sig",
        options={"steps": 50},
        prediction={"POSITIVE": 0.8, "NEGATIVE": 0.2},
        text="x",
        model="tiny-bert",
    )


def test_attribution_round_trip():
    a = _attribution()
    text = a.to_json()
    payload = json.loads(text)
    assert payload["schema"] == SCHEMA and payload["kind"] == "attribution"
    assert payload["scores"][3] is None  # NaN travels as null (valid JSON)
    b = xa.Attribution.from_json(text)
    assert b.tokens == a.tokens and b.target == (3, 1) and b.method == "sig"
    np.testing.assert_array_equal(np.isnan(b.scores), np.isnan(a.scores))
    np.testing.assert_allclose(b.scores[:3], a.scores[:3])
    assert b.scores.dtype == np.float64 and b.options == {"steps": 50}


def test_every_result_kind_round_trips():
    rng = np.random.default_rng(0)
    results = [
        _attribution(),
        FlowResult(tokens=["a", "b"], attributions=[0.3, 0.7], edge_flow=rng.random((2, 2, 2)), value=1.0,
                   node_flow=rng.random((3, 2)), target=1),
        HeadStats(tokens=["a", "b"], entropy=rng.random((2, 4)), cone_index=rng.random(3),
                  patterns=[["broad"] * 4, ["diagonal"] * 4]),
        CircuitResult(node_scores=rng.random((2, 4)), edge_scores=np.zeros((8, 8)),
                      codes_positive=rng.integers(0, 5, (3, 8)), codes_negative=rng.integers(0, 5, (3, 8)),
                      n_layers=2, n_heads=4, unique_codes={"3": [1, 2]}),
    ]
    for result in results:
        back = Result.from_json(result.to_json())
        assert type(back) is type(result)
        for name in result.array_fields:
            original = getattr(result, name)
            if original is not None:
                np.testing.assert_allclose(getattr(back, name), original, equal_nan=True)
    codes_pos, _ = results[3].codes
    assert codes_pos.dtype == np.int64


def test_schema_errors():
    payload = _attribution().to_dict()
    with pytest.raises(ValueError, match="unsupported xattr payload schema"):
        Result.from_dict({**payload, "schema": "xattr.v99"})
    with pytest.raises(ValueError, match="unknown result kind"):
        Result.from_dict({**payload, "kind": "mystery"})
    with pytest.raises(ValueError, match="not a 'flow'"):
        FlowResult.from_dict(payload)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must both be"):
        Attribution(tokens=["a", "b"], scores=np.zeros(3))


def test_attribution_from_model_round_trips(tiny):
    a = tiny("gpt2").attribute("the cat sat on the", method="attention", target=(" mat", " dog"))
    b = Attribution.from_json(a.to_json())
    assert b.target == a.target and isinstance(b.target, tuple)
    np.testing.assert_allclose(b.scores, a.scores)
    assert list(a.table().columns) == ["token", "score", "raw"]
