"""Faithfulness metrics (docs/ARCHITECTURE.md, section "Faithfulness"), checked against probabilities computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xattr_lab import faithfulness as F
from xattr_lab.results import Attribution

TEXT = "a fine film ."  # [CLS] a fine film . [SEP]
SCORES = np.array([5.0, 0.1, 0.9, -0.5, 0.3, 9.0])  # huge scores on the special tokens: never removed


def _p(ex, ids):
    """p(. | ids) straight from the model, (C,)."""
    with torch.no_grad():
        logits = ex.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
    return torch.softmax(logits[0].double(), -1).numpy()


@pytest.fixture(scope="module")
def case(tiny):
    ex = tiny("bert")
    ids = ex.encode(TEXT).input_ids[0].tolist()
    assert ex.encode(TEXT).tokens == ["[CLS]", "a", "fine", "film", ".", "[SEP]"]
    full = _p(ex, ids)
    y = int(np.argmax(full))
    return ex, ids, full, y


def test_metrics_by_hand(case):
    ex, ids, full, y = case
    cls, a, fine, film, dot, sep = ids
    mask = ex.tokenizer.mask_token_id
    # k = 0.25 of 4 removable tokens -> the single top token, "fine"
    assert F.log_odds(ex, TEXT, SCORES, k=0.25) == pytest.approx(np.log(_p(ex, [cls, a, mask, film, dot, sep])[y]) - np.log(full[y]), abs=1e-6)
    assert F.comprehensiveness(ex, TEXT, SCORES, k=0.25) == pytest.approx(full[y] - _p(ex, [cls, a, film, dot, sep])[y], abs=1e-6)
    assert F.sufficiency(ex, TEXT, SCORES, k=0.25) == pytest.approx(full[y] - _p(ex, [cls, fine, sep])[y], abs=1e-6)
    # k = 0.5 -> "fine" and "."
    assert F.comprehensiveness(ex, TEXT, SCORES, k=0.5) == pytest.approx(full[y] - _p(ex, [cls, a, film, sep])[y], abs=1e-6)
    assert F.sufficiency(ex, TEXT, SCORES, k=2) == pytest.approx(full[y] - _p(ex, [cls, fine, dot, sep])[y], abs=1e-6)
    # AOPC over k = 0.1..0.5 of 4 tokens removes 1, 1, 1, 2, 2 tokens
    one, two = full[y] - _p(ex, [cls, a, film, dot, sep])[y], full[y] - _p(ex, [cls, a, film, sep])[y]
    assert F.aopc(ex, TEXT, SCORES) == pytest.approx((3 * one + 2 * two) / 5, abs=1e-6)
    together = F.scores_all(ex, TEXT, SCORES, k=0.25)
    assert together["comprehensiveness"] == pytest.approx(one, abs=1e-6)
    assert together["aopc"] == pytest.approx((3 * one + 2 * two) / 5, abs=1e-6)


def test_accepts_attributions_and_torch_scores(case):
    ex, *_ = case
    attribution = Attribution(tokens=ex.encode(TEXT).tokens, scores=SCORES, text=TEXT)
    expected = F.comprehensiveness(ex, TEXT, SCORES, k=0.25)
    assert F.comprehensiveness(ex, None, attribution, k=0.25) == pytest.approx(expected)
    assert F.comprehensiveness(ex, TEXT, torch.tensor(SCORES), k=0.25) == pytest.approx(expected)
    gradient = ex.attribute(TEXT, method="grad_x_input")
    assert np.isfinite(F.log_odds(ex, TEXT, gradient))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 60), k=st.floats(0.01, 1.0))
def test_top_count_is_a_bounded_monotone_rounding(m, k):
    count = F.top_count(k, m)
    assert 1 <= count <= m and abs(count - k * m) <= max(0.5, 1 - k * m) + 1e-9
    assert F.top_count(min(1.0, k + 0.1), m) >= count


def test_top_tokens_rank_by_signed_score_and_skip_specials():
    special = [True, False, False, False, False, True]
    np.testing.assert_array_equal(F.top_tokens(SCORES, special, 2), [2, 4])
    np.testing.assert_array_equal(F.top_tokens(-SCORES, special, 1), [3])  # signed, not absolute


def test_bad_input(case, tiny):
    ex, *_ = case
    with pytest.raises(ValueError, match="6 tokens"):
        F.comprehensiveness(ex, TEXT, SCORES[:3])
    with pytest.raises(ValueError, match="k must be"):
        F.sufficiency(ex, TEXT, SCORES, k=1.5)
    with pytest.raises(ValueError, match="k must be"):
        F.sufficiency(ex, TEXT, SCORES, k=0)
    with pytest.raises(ValueError, match="NaN"):
        F.log_odds(ex, TEXT, np.full(6, np.nan))
    with pytest.raises(ValueError, match="need a classifier"):
        F.log_odds(tiny("gpt2"), TEXT, np.ones(4))


def test_evaluate_table_and_cache(tiny, tmp_path, monkeypatch):
    from xattr_lab.evaluation import faithfulness_harness as H

    ex = tiny("bert")
    texts = ["a fine film .", ("a dull , slow film .", 0), "great acting but a weak plot ."]
    options = {"ig[mask]": {"steps": 4}}
    table, per_text = F.evaluate(ex, texts, ("ig[mask]", "grad_x_input", "random"), method_options=options,
                                 cache=tmp_path, progress=False, return_per_text=True, replicates=500)
    assert list(table.columns[:7]) == ["method", "metric", "mean", "ci_low", "ci_high", "std", "n"]
    assert len(table) == 9 and set(table["n"]) == {3}
    assert np.all(table["ci_low"] <= table["mean"] + 1e-12) and np.all(table["mean"] <= table["ci_high"] + 1e-12)
    assert len(per_text) == 9 and set(per_text["top"]) == {1} and list(per_text["m"][:3]) == [4, 4, 4]
    row = per_text[(per_text.method == "grad_x_input") & (per_text.text == texts[0])].iloc[0]
    assert row["comprehensiveness"] == pytest.approx(
        F.comprehensiveness(ex, texts[0], ex.attribute(texts[0], method="grad_x_input")), abs=1e-9)
    means = table.set_index(["method", "metric"])["mean"]
    assert means["grad_x_input", "sufficiency"] == pytest.approx(
        per_text[per_text.method == "grad_x_input"]["sufficiency"].mean())

    def no_work(*args, **kwargs):
        raise AssertionError("a cached rerun must not attribute again")

    monkeypatch.setattr(H, "text_record", no_work)
    again = F.evaluate(ex, texts, ("ig[mask]", "grad_x_input", "random"), method_options=options,
                       cache=tmp_path, progress=False, replicates=500)
    np.testing.assert_allclose(again["mean"], table["mean"])
    with pytest.raises(AssertionError, match="cached rerun"):  # another option value = another key
        F.evaluate(ex, texts, ("ig[mask]",), method_options={"ig[mask]": {"steps": 5}}, cache=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="cached rerun"):  # an option that is the default still counts
        F.evaluate(ex, texts, ("ig[mask]",), method_options={"ig[mask]": {"steps": 4, "quadrature": "gausslegendre"}},
                   cache=tmp_path, progress=False)
    with pytest.raises(AssertionError, match="cached rerun"):  # another k
        F.evaluate(ex, texts, ("random",), k=0.3, cache=tmp_path, progress=False)
    real = H.provenance.code_version
    monkeypatch.setattr(H.provenance, "code_version", lambda modules: real(modules) + "-edited")
    with pytest.raises(AssertionError, match="cached rerun"):  # another code version
        F.evaluate(ex, texts, ("random",), cache=tmp_path, progress=False)
    monkeypatch.setattr(H.provenance, "code_version", real)
    monkeypatch.setattr(H.provenance, "model_fingerprint", lambda ex: "other weights")
    with pytest.raises(AssertionError, match="cached rerun"):  # another model
        F.evaluate(ex, texts, ("random",), cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="not in `methods`"):
        F.evaluate(ex, texts, ("random",), method_options={"sig": {}}, cache=False, progress=False)
    wide = F.wide_table(table)
    assert wide.shape == (3, 3) and "[" in wide.iloc[0, 0]


def test_cache_key_parts():
    spec = {"method": "ig", "baseline": "pad", "steps": 50}
    key = F.spec_key(spec, "model-a", 0.2, code="c1")
    assert key == F.spec_key(dict(reversed(list(spec.items()))), "model-a", 0.2, code="c1")  # order-free
    for other in (F.spec_key({**spec, "steps": 16}, "model-a", 0.2, code="c1"),
                  F.spec_key({**spec, "baseline": "mask"}, "model-a", 0.2, code="c1"),
                  F.spec_key(spec, "model-b", 0.2, code="c1"), F.spec_key(spec, "model-a", 0.3, code="c1"),
                  F.spec_key(spec, "model-a", 0.2, code="c2")):
        assert other != key


def test_code_version_follows_the_imports(tmp_path):
    from xattr_lab.evaluation import provenance as P

    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("def __getattr__(name):\n    from . import lazy\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "a.py").write_text("from ..b import f\n\ndef g():\n    from xattr_lab.sub import c\n")
    (root / "b.py").write_text("import numpy\nf = 1\n")
    (root / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import d\n")
    (root / "d.py").write_text("x = 1\n")
    (root / "lazy.py").write_text("x = 1\n")
    names = {str(p.relative_to(root)) for p in P.closure(["xattr_lab.sub.a"], root)}
    assert names == {"__init__.py", "sub/__init__.py", "sub/a.py", "b.py", "sub/c.py"}  # not d (type only), not lazy
    before = P.code_version(["xattr_lab.sub.a"], root)
    (root / "d.py").write_text("x = 2\n")  # not a dependency
    assert P.code_version(["xattr_lab.sub.a"], root) == before
    (root / "b.py").write_text("import numpy\nf = 2\n")  # a dependency
    assert P.code_version(["xattr_lab.sub.a"], root) != before
    with pytest.raises(ValueError, match="no source file"):
        P.closure(["xattr_lab.missing"], root)


def test_real_code_versions_separate_method_families():
    from xattr_lab.evaluation import faithfulness_harness as H
    from xattr_lab.evaluation import provenance as P

    flows = {p.name for p in P.closure(["xattr_lab.methods.flows"])}
    assert "flows.py" in flows and "gradients.py" not in flows and "explorer.py" not in flows
    assert H.spec_code_version({"method": "gaf"}) != H.spec_code_version({"method": "ig"})
    assert H.spec_code_version({"method": "random"}) == P.code_version([H.METRICS_MODULE])


def test_paired_bootstrap_and_holm():
    rng = np.random.default_rng(1)
    hard = rng.normal(size=200)  # per-text difficulty shared by both methods
    a, b = hard + 0.05 + 0.01 * rng.normal(size=200), hard + 0.01 * rng.normal(size=200)
    (ia, ib) = F.mean_intervals(np.stack([a, b]), replicates=2000)
    assert ia["ci_low"] < a.mean() < ia["ci_high"] and ia["ci_low"] < ib["ci_high"]  # separate CIs overlap
    (pair,) = F.pairwise(np.stack([a, b]), ["a", "b"], replicates=2000)
    assert pair["difference"] == pytest.approx(a.mean() - b.mean())
    assert 0 < pair["ci_low"] < pair["ci_high"] and pair["significant"]  # paired: clearly different
    assert pair["p"] == pytest.approx(2 / 2001)
    (same,) = F.pairwise(np.stack([hard, hard]), ["x", "y"], replicates=200)
    assert same["p"] == 1.0 and not same["significant"]
    np.testing.assert_allclose(F.holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    table = F.compare(__import__("pandas").DataFrame(
        [{"method": m, "item": i, "log_odds": v} for m, vals in (("a", a), ("b", b)) for i, v in enumerate(vals)]),
        metrics=("log_odds",), replicates=500)
    assert table.iloc[0]["better"] == "b"  # lower log-odds is better


@pytest.mark.slow
def test_minilm_gradient_methods_beat_random(minilm):
    from xattr_lab.zoo import rotten_tomatoes

    texts = [t for t, _ in rotten_tomatoes("test")[:12]]
    table = F.evaluate(minilm, texts, ("sig[mask]", "random"), method_options={"sig[mask]": {"steps": "exact"}},
                       cache=False, progress=False)
    means = table.set_index(["method", "metric"])["mean"]
    assert means["sig[mask]", "comprehensiveness"] > means["random", "comprehensiveness"]
    assert means["sig[mask]", "log_odds"] < means["random", "log_odds"]
