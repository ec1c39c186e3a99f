"""Targets: predicted class, class index/label, next token, token string, logit differences."""
from __future__ import annotations

import pytest
import torch

from xattr_lab.errors import XattrError

TEXT = "When Mary and John went to the store, John gave a drink to"


def test_classifier_targets(tiny):
    ex = tiny("bert")
    cap = ex.capture("a fine film")
    logits = cap.logits
    assert cap.target.kind == "class" and cap.target.index == int(logits.argmax())
    assert cap.target_score == pytest.approx(float(logits.max()), rel=1e-5)
    by_index = ex.capture("a fine film", target=0)
    by_label = ex.capture("a fine film", target="negative")
    assert by_index.target == by_label.target and by_label.target.label == "NEGATIVE"
    assert by_label.target_score == pytest.approx(float(logits[0]), rel=1e-5)
    diff = ex.capture("a fine film", target=("POSITIVE", "NEGATIVE"))
    assert diff.target.kind == "diff" and diff.target.public == (1, 0)
    assert diff.target_score == pytest.approx(float(logits[1] - logits[0]), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm_targets(tiny, arch):
    ex = tiny(arch)
    cap = ex.capture(TEXT)
    n = len(cap.tokens)
    assert cap.target.position == n - 1
    assert cap.target.index == int(cap.logits.argmax())
    mary = ex.tokenizer.encode(" Mary", add_special_tokens=False)[0]
    john = ex.tokenizer.encode(" John", add_special_tokens=False)[0]
    tok = ex.capture(TEXT, target=" Mary")
    assert tok.target.index == mary and tok.target_score == pytest.approx(float(cap.logits[mary]), rel=1e-5)
    by_id = ex.capture(TEXT, target=mary)
    assert by_id.target == tok.target
    diff = ex.capture(TEXT, target=(" Mary", " John"))
    assert diff.target.public == (mary, john)
    assert diff.target_score == pytest.approx(float(cap.logits[mary] - cap.logits[john]), rel=1e-4, abs=1e-6)
    assert len(cap.prediction) == 5 and abs(sum(cap.prediction.values())) <= 1.0 + 1e-6


def test_target_score_on_batches():
    from xattr_lab.core.targets import Target

    logits = torch.arange(24.0).reshape(2, 3, 4)
    assert Target("token", 2, position=1).score(logits).tolist() == [6.0, 18.0]
    assert Target("diff", (3, 0), position=0).score(logits).tolist() == [3.0, 3.0]
    assert Target("class", 1).score(logits[:, 0, :]).tolist() == [1.0, 13.0]


def test_bad_targets(tiny):
    bert, gpt2 = tiny("bert"), tiny("gpt2")
    with pytest.raises(ValueError, match="out of range"):
        bert.capture("a fine film", target=7)
    with pytest.raises(ValueError, match="unknown label 'neutral'.*NEGATIVE"):
        bert.capture("a fine film", target="neutral")
    with pytest.raises(ValueError, match="not a single token"):
        gpt2.capture(TEXT, target=" Maryanne Johnsonville")
    with pytest.raises(ValueError, match="leading space"):
        gpt2.capture(TEXT, target="drink")
    with pytest.raises(ValueError, match="out of range"):
        gpt2.capture(TEXT, target=10**7)
    with pytest.raises(ValueError, match="pair"):
        bert.capture("a fine film", target=(0, 1, 0))
    assert issubclass(XattrError, ValueError)


def test_numpy_integer_targets(tiny):
    import numpy as np

    cap = tiny("bert").capture("a fine film", target=np.int64(1))
    assert cap.target.index == 1 and isinstance(cap.target.index, int)
    cap = tiny("gpt2").capture(TEXT, target=np.int32(5))
    assert cap.target.index == 5


def test_load_rejects_options_for_a_model_object(tiny):
    import xattr_lab as xa

    with pytest.raises(XattrError, match="unexpected options"):
        xa.load(tiny("bert").model, tiny("bert").tokenizer, trust_remote_code=True)
