"""The v2 saved-output payload (xattr_lab.payload): schema, stated precision, what is kept, sizes."""
from __future__ import annotations

import base64
import importlib.util
import json

import jsonschema
import numpy as np
import pytest

from tests.support import REPO_ROOT
from xattr_lab.constants import SCHEMA, SCHEMA_V2
from xattr_lab.payload import (F16_ABS, F16_REL, attention_budget, decode_array, float16_array, from_payload, schema,
                               to_payload)
from xattr_lab.results import Attribution, CircuitResult, FlowResult, HeadStats

ROOT = REPO_ROOT
HOSTILE = ["<img src=x onerror=alert(1)>", "$$\\href{javascript:alert(1)}{x}$$", "</script>", "\u2028"]
ITEMSIZE = {"float16": 2, "float32": 4, "uint8": 1, "uint16": 2, "int32": 4, "uint32": 4}
VALIDATOR = jsonschema.Draft202012Validator(schema())


def packed_arrays(node):
    """Every packed array descriptor inside a payload."""
    if isinstance(node, dict):
        if {"dtype", "shape", "data"} <= node.keys():
            yield node
        else:
            for value in node.values():
                yield from packed_arrays(value)
    elif isinstance(node, list):
        for value in node:
            yield from packed_arrays(value)


def check(payload: dict) -> dict:
    """Valid JSON (no NaN), valid against the schema, every array's bytes = prod(shape) * itemsize."""
    text = json.dumps(payload, allow_nan=False)
    VALIDATOR.validate(json.loads(text))
    for desc in packed_arrays(payload):
        assert len(base64.b64decode(desc["data"])) == int(np.prod(desc["shape"])) * ITEMSIZE[desc["dtype"]]
    return payload


class FakeExplorer:
    """Duck-typed like widgets.Explorer for to_payload."""

    view_type = "explorer"

    def __init__(self, results):
        self.model_name, self.text, self.method, self.target = "fake", "a text", "attention", (1, 2)
        self._results = results

    def view_results(self):
        return self._results


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    n, L, H = 24, 3, 4
    tokens = ["[CLS]", *HOSTILE, *[f"t{i}" for i in range(n - 6)], "[SEP]"]
    scores = rng.normal(size=n) * np.logspace(-6, 4, n)
    attribution = Attribution(tokens=tokens, scores=scores, raw=scores * 3, target=(1, 2), method="ig",
                              options={"converged": False, "relative_completeness_error": 0.5})
    E = rng.random((L, n, n)) * (rng.random((L, n, n)) > 0.3)
    flow = FlowResult(tokens=tokens, attributions=rng.random(n), edge_flow=E, value=2.5, capacities=rng.random((L, n, n)))
    A = rng.random((L, H, n, n)) ** 6
    A /= A.sum(axis=-1, keepdims=True)
    heads = HeadStats(tokens=tokens, entropy=rng.random((L, H)), cone_index=rng.random(L + 1) * n,
                      cone_index_normalised=rng.random(L + 1), patterns=[["diagonal"] * H] * L, attentions=A)
    S = rng.random((L * H, L * H))
    S = S + S.T
    np.fill_diagonal(S, 0)
    circuit = CircuitResult(node_scores=rng.integers(0, 9, (L, H)).astype(float), edge_scores=S,
                            codes_positive=rng.integers(0, 5000, (6, L * H)).astype(float),
                            codes_negative=rng.integers(0, 5000, (6, L * H)).astype(float), n_layers=L, n_heads=H,
                            unique_codes={"1": [3, 4]}, positive=HOSTILE, negative=["x"] * 4)
    return {"attribution": attribution, "flow": flow, "heads": heads, "circuit": circuit}


@pytest.mark.parametrize("kind", ["attribution", "flow", "heads", "circuit"])
def test_every_kind_validates_and_names_its_schema(results, kind):
    payload = check(to_payload(results[kind], model_id="abc"))
    assert payload["schema"] == SCHEMA_V2 and payload["kind"] == kind and payload["model_id"] == "abc"
    assert results[kind].to_dict()["schema"] == SCHEMA  # the public JSON stays v1, full precision
    assert "model_id" not in to_payload(results[kind], model_id=False)


def test_the_schema_rejects_bad_shapes(results):
    good = to_payload(results["flow"])
    for broken in ({**good, "schema": "xattr.v1"}, {**good, "kind": "evaluation"}, {**good, "edges": None},
                   {**good, "attributions": [0.1, 0.2]}, {**good, "tokens": [1, 2]},
                   {**good, "attributions": {**good["attributions"], "dtype": "float64"}},
                   {**good, "attributions": {**good["attributions"], "data": "<script>"}}):
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(broken)


def test_float16_meets_its_stated_precision():
    rng = np.random.default_rng(1)
    for x in (rng.normal(size=1000) * np.logspace(-9, 6, 1000), rng.random((3, 5)) * 1e-7, np.array([0.0, -3.0, 7e5])):
        desc = float16_array(x)
        assert desc["precision"] == {"rel": F16_REL, "abs": F16_ABS * desc["scale"]}
        error = np.abs(decode_array(desc) - x)
        assert np.all(error <= F16_REL * np.abs(x) + desc["precision"]["abs"]), error.max()
        assert np.log2(desc["scale"]) == int(np.log2(desc["scale"])) and desc["scale"] >= np.abs(x).max()
    special = decode_array(float16_array([np.nan, np.inf, -np.inf, 1.0]))
    assert np.isnan(special[0]) and special[1] == np.inf and special[2] == -np.inf and special[3] == 1.0


def test_attribution_round_trip(results):
    a = results["attribution"]
    back = from_payload(check(to_payload(a)))
    assert back.tokens == a.tokens  # hostile strings: exact
    assert np.all(np.abs(back.scores - a.scores) <= F16_REL * np.abs(a.scores) + F16_ABS * 2 ** 14)
    assert back.target == (1, 2) and back.options["converged"] is False
    assert to_payload(Attribution(tokens=["a"], scores=np.array([1.0])))["raw"] is None  # raw == scores: once


def test_flow_keeps_the_strongest_edges_and_counts_the_rest(results):
    f = results["flow"]
    payload = check(to_payload(f, max_edges=100))
    assert payload["capacities"] is None  # only on request
    edges = payload["edges"]
    # independent reference: every positive edge, sorted by flow in plain Python
    E = f.edge_flow
    ranked = sorted(((E[l, i, j], l + 1, i, j) for l in range(E.shape[0]) for i in range(E.shape[1])
                     for j in range(E.shape[2]) if E[l, i, j] > 0), reverse=True)
    assert edges["total"] == len(ranked) and edges["hidden"] == len(ranked) - 100
    kept = list(zip(decode_array(edges["layer"]), decode_array(edges["from"]), decode_array(edges["to"])))
    assert kept == [(l, i, j) for _, l, i, j in ranked[:100]]
    flows = np.array([v for v, *_ in ranked])
    assert np.allclose(decode_array(edges["flow"]), flows[:100], rtol=F16_REL, atol=1e-6)
    assert edges["hidden_flow"] == pytest.approx(flows[100:].sum() / flows.sum())
    back = from_payload(payload)
    assert np.count_nonzero(back.edge_flow) == 100 and back.value == f.value
    np.testing.assert_allclose(back.node_flow[0], E.sum(axis=1)[0], rtol=1e-3)  # throughput from all edges
    with_capacities = check(to_payload(f, capacities=True))
    np.testing.assert_allclose(from_payload(with_capacities).capacities, f.capacities, rtol=1e-3)


def test_attention_maps_keep_the_largest_weights_within_budget(results):
    s = results["heads"]
    A = s.attentions
    L, H, n, _ = A.shape
    budget = 2 * L * H * n * 3  # about 2 keys per query
    payload = check(to_payload(s, attention_bytes=budget))
    att = payload["attentions"]
    stored = sum(len(base64.b64decode(att[k]["data"])) for k in ("counts", "keys", "values"))
    assert stored <= budget
    back = from_payload(payload).attentions
    kept = back > 0
    assert np.all(np.abs(back - A)[kept] <= 0.5 / 255 + 1e-9)  # stated precision of what is kept
    assert np.all(A[~kept] <= att["threshold"] + 1e-7)  # everything left out is at most the threshold
    strongest = np.zeros_like(kept)
    np.put_along_axis(strongest, A.argmax(-1)[..., None], True, axis=-1)
    assert att["threshold"] <= A[kept & ~strongest].min() + 1e-7  # greedy: no weight left out beats one kept
    assert np.all(kept[np.arange(L)[:, None, None], np.arange(H)[None, :, None], np.arange(n), A.argmax(-1)])
    share = np.where(kept, A, 0).sum(-1) / A.sum(-1)
    assert att["kept_mass"]["mean"] == pytest.approx(share.mean(), abs=1e-6)
    assert att["kept_mass"]["min"] == pytest.approx(share.min(), abs=1e-6)
    assert att["hidden"] == np.count_nonzero(A) - np.count_nonzero(kept)
    generous = from_payload(to_payload(s, attention_bytes=10 ** 9)).attentions
    assert np.all(np.abs(generous - A) <= 0.5 / 255 + 1e-9)  # with room for all: everything that quantises


def test_attention_budget_grows_with_tokens_up_to_a_cap():
    assert attention_budget(128) == 512_000 and attention_budget(512) == 1_800_000 == attention_budget(4096)


def test_circuit_keeps_top_pairs_and_exact_codes(results):
    c = results["circuit"]
    payload = check(to_payload(c, max_pairs=5))
    assert payload["codes_positive"]["dtype"] == "uint16"
    back = from_payload(payload)
    np.testing.assert_array_equal(back.codes_positive, c.codes_positive)
    N = c.edge_scores.shape[0]
    upper = sorted(((c.edge_scores[a, b], a, b) for a in range(N) for b in range(a + 1, N)), reverse=True)
    assert payload["pairs"]["total"] == len(upper) and payload["pairs"]["hidden"] == len(upper) - 5
    assert [(a, b) for _, a, b in upper[:5]] == list(zip(decode_array(payload["pairs"]["a"]),
                                                         decode_array(payload["pairs"]["b"])))
    assert back.positive == HOSTILE and back.unique_codes == {"1": [3, 4]}


def test_explorer_keeps_every_linked_view(results):
    views = {"strip": results["attribution"], "flow": results["flow"], "heads": results["heads"]}
    payload = check(to_payload(FakeExplorer(views), model_id=None))
    assert set(payload["views"]) == {"strip", "flow", "heads"} and payload["target"] == [1, 2]
    assert all("model_id" not in v and v["schema"] == SCHEMA_V2 for v in payload["views"].values())
    back = from_payload(payload)
    assert back["strip"].tokens == results["attribution"].tokens and back["heads"].attentions.shape == (3, 4, 24, 24)
    with pytest.raises(TypeError):
        to_payload(object())
    with pytest.raises(ValueError):
        from_payload(results["flow"].to_dict())


def test_the_display_bundle_carries_v2_and_v1_for_kinds_v2_does_not_define(results):
    from dataclasses import dataclass

    from xattr_lab.constants import MIME_TYPE, MIME_TYPE_V2
    from xattr_lab.results import Result
    from xattr_lab.widgets import bundle

    class View:
        widget = None

        def png_bytes(self):
            return b"png"

    @dataclass
    class Other(Result):
        kind = "payload-test-other"
        text: str = "x"

    shown = bundle.mime_bundle(results["flow"], View(), widget=False)
    assert shown[MIME_TYPE_V2] == to_payload(results["flow"], model_id=None) and MIME_TYPE not in shown
    other = bundle.mime_bundle(Other(), View(), widget=False)
    assert other[MIME_TYPE] == {**Other().to_dict(), "model_id": None} and MIME_TYPE_V2 not in other


# ---------------------------------------------------------------------------- real models (slow)
def _sizes_script():
    spec = importlib.util.spec_from_file_location("payload_sizes", ROOT / "scripts" / "payload_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("model,n,limit", [("minilm-rt", 128, 1_000_000), ("smollm2-135m", 512, 3_000_000)])
def test_saved_outputs_fit_the_size_targets_on_real_models(model, n, limit):
    """Attribution and heads (with every attention map) computed on the model; the flow is the worst
    case for its shape (every edge positive: a v2 flow's size depends on L, n and MAX_EDGES only), so
    the test stays fast (scripts/payload_sizes.py measures the real flow and circuit, and v1)."""
    import xattr_lab as xa

    script = _sizes_script()
    ex = xa.load(model, device="cpu")
    text = script.text_of_tokens(ex.tokenizer, n)
    assert n - 8 <= len(ex.tokenizer(text)["input_ids"]) <= n
    found = {"attribution": ex.attribute(text, method="attention"), "heads": ex.heads(text, max_map_tokens=n)}
    tokens = found["heads"].tokens
    L = found["heads"].entropy.shape[0]
    E = np.random.default_rng(0).random((L, len(tokens), len(tokens))) + 1e-3
    found["flow"] = FlowResult(tokens=tokens, attributions=E[0].sum(axis=0), edge_flow=E, value=float(E[-1].sum()))
    found["explorer"] = script.SavedExplorer(found, model)
    for kind, result in found.items():  # the v2 bytes a notebook stores (scripts/payload_sizes.py: v1 too)
        assert script.nbytes(to_payload(result)) <= limit, kind
    heads = to_payload(found["heads"])["attentions"]
    assert heads["kept_mass"]["mean"] > 0.5  # what the head view draws still holds most of the attention


# ---------------------------------------------------------------------------- what the TS renderer reads
FIXTURES = ROOT / "labextension" / "test" / "fixtures" / "payloads.json"


def renderer_fixtures() -> dict:
    """Small v1 and v2 payloads of the same results (labextension/test/render-v2.test.ts draws both)."""
    rng = np.random.default_rng(7)
    n, L, H = 6, 2, 2
    tokens = ["[CLS]", HOSTILE[0], HOSTILE[1], "film", "\u0120great", "[SEP]"]
    scores = np.round(rng.normal(size=n), 3)
    attribution = Attribution(tokens=tokens, scores=scores, raw=scores * 2, method="ig", model="tiny",
                              prediction={"POSITIVE": 0.75, "NEGATIVE": 0.25}, target_label="POSITIVE")
    E = np.round(rng.random((L, n, n)), 3)
    flow = FlowResult(tokens=tokens, attributions=E[0].sum(axis=0), edge_flow=E, value=float(E[-1].sum()), model="tiny")
    A = rng.random((L, H, n, n)) + 0.05
    A /= A.sum(axis=-1, keepdims=True)
    heads = HeadStats(tokens=tokens, entropy=np.round(rng.random((L, H)), 3), cone_index=np.arange(L + 1.0),
                      patterns=[["diagonal", "broad"], ["previous", "unknown"]], attentions=A, model="tiny")
    S = np.round(rng.random((L * H, L * H)), 2)
    S = S + S.T
    np.fill_diagonal(S, 0)
    circuit = CircuitResult(node_scores=rng.integers(0, 5, (L, H)).astype(float), edge_scores=S,
                            codes_positive=np.array([[1, 7, 2, 0], [1, 8, 2, 0]], float),
                            codes_negative=np.array([[1, 5, 2, 0], [1, 5, 3, 0]], float), n_layers=L, n_heads=H,
                            unique_codes={"1": [7, 8]}, positive=["p1", "p2"], negative=["n1", "n2"],
                            metrics={"node_roc_auc": 0.75})
    found = {"attribution": attribution, "flow": flow, "heads": heads, "circuit": circuit}
    explorer = FakeExplorer({"strip": attribution, "flow": flow, "heads": heads})
    v2 = {kind: to_payload(r, model_id=None, attention_bytes=10 ** 6) for kind, r in found.items()}
    v2["explorer"] = to_payload(explorer, model_id=None, attention_bytes=10 ** 6)
    return {"v1": {kind: {**r.to_dict(), "model_id": None} for kind, r in found.items()}, "v2": v2}


def test_renderer_fixtures_are_what_the_writer_writes():
    """The TS tests draw payloads written by this version (regenerate: python -m tests.widgets.test_payload)."""
    fixtures = renderer_fixtures()
    for payload in fixtures["v2"].values():
        check(payload)
    assert json.loads(FIXTURES.read_text()) == json.loads(json.dumps(fixtures, allow_nan=False))


# ---------------------------------------------------------------------------- right-to-left tokens (issue 27)
BIDI_FIXTURES = ROOT / "labextension" / "test" / "fixtures" / "bidi-labels.json"
#: tokens as models and word spans hold them: Hebrew, Arabic and Persian with their marks, hostile overrides
BIDI_TOKENS = [
    "\u200f\u05de\u05e6\u05d5\u05d9\u05df", "\u05d4\u05e1\u05e8\u05d8", "\u061c\u0631\u0627\u0626\u0639\u0627",
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645\u200e", "\u202eevil\u202c", "\u202dgood\u202c",
    "\u202b\u05d8\u05d5\u05d1\u202c", "\u202aok\u202c", "\u2067\u05d0\u2069", "\u2066a\u2069", "\u2068x\u2069",
    "\u0120\u202efilm", "##\u200f", "<img src=x onerror=alert(1)>\u202e", "\u200e", "plain",
]


def bidi_fixtures() -> dict:
    """What the Python labels make of BIDI_TOKENS (labextension/test/bidi.test.ts checks the TypeScript
    labels give the same): ``visible`` = widgets.core.visible_controls, ``label`` = widgets.core.pretty_token."""
    from xattr_lab.widgets import core

    return {"cases": [{"token": t, "visible": core.visible_controls(t), "label": core.pretty_token(t)}
                      for t in BIDI_TOKENS]}


def test_bidi_fixtures_are_what_the_python_labels_give():
    """The cross-language check of issue 27: the TS test reads this file (regenerate: python -m tests.widgets.test_payload)."""
    assert json.loads(BIDI_FIXTURES.read_text(encoding="utf-8")) == bidi_fixtures()


def test_the_escape_table_names_each_character_as_unicode_does():
    import unicodedata

    from xattr_lab.widgets import core

    table = json.loads(core.BIDI_ESCAPES_PATH.read_text(encoding="utf-8"))["escapes"]
    assert len(table) == 12 and len({row["label"] for row in table}) == 12
    for row in table:
        char = chr(int(row["code"][2:], 16))
        assert unicodedata.name(char) == row["name"] and unicodedata.bidirectional(char) in {
            "LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI", "L", "R", "AL"}
        assert unicodedata.category(char) == "Cf" and row["label"].startswith("\u27e8")
    # every explicit bidi formatting character of Unicode is in the table (the marks too)
    formatting = {c for c in map(chr, range(0x110000)) if unicodedata.bidirectional(c) in
                  {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}}
    assert formatting | {"\u200e", "\u200f", "\u061c"} == {chr(int(r["code"][2:], 16)) for r in table}


def test_visible_controls_leave_no_control_and_keep_everything_else():
    from xattr_lab.widgets import core

    controls = {chr(int(r["code"][2:], 16)) for r in json.loads(core.BIDI_ESCAPES_PATH.read_text("utf-8"))["escapes"]}
    for case in bidi_fixtures()["cases"]:
        assert not controls & set(case["visible"]) and not controls & set(case["label"])
    assert core.visible_controls("\u05d4\u200f\u05d0 \u200c") == "\u05d4\u27e8RLM\u27e9\u05d0 \u200c"  # ZWNJ is a letter joiner: kept
    assert core.token_html("<\u202e>") == '<bdi class="xattr-token">&lt;\u27e8RLO\u27e9&gt;</bdi>'


if __name__ == "__main__":
    FIXTURES.parent.mkdir(parents=True, exist_ok=True)
    FIXTURES.write_text(json.dumps(renderer_fixtures(), allow_nan=False, indent=1) + "\n")
    print("wrote", FIXTURES)
    BIDI_FIXTURES.write_text(json.dumps(bidi_fixtures(), ensure_ascii=True, indent=1) + "\n", encoding="utf-8")
    print("wrote", BIDI_FIXTURES)
