"""ex.attribute_generation: greedy/teacher-forced generation, one attribution row per generated token."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_lab.errors import InputError, ModelError
from xattr_lab.methods.gradients import Cancelled
from xattr_lab.results import GenerationResult, Result

PROMPT = "The film was"


def _model_greedy(ex, prompt, n):
    ids = ex.encode(prompt).input_ids
    with torch.no_grad():
        out = ex.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                pad_token_id=ex.tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def _logit(ex, ids, token, baseline_id=None, special=()):
    """F at the last position of ``ids`` for ``token``, from plain embeddings (optionally the baseline's)."""
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        x = ex.model.get_input_embeddings()(ids_t)
        if baseline_id is not None:
            row = ex.model.get_input_embeddings()(torch.tensor([[baseline_id]]))[0, 0]
            for i in range(len(ids)):
                if i not in special:
                    x[0, i] = row
        return float(ex.model(inputs_embeds=x, attention_mask=torch.ones_like(ids_t)).logits[0, -1, token])


def _check_rows(ex, result: GenerationResult):
    p, T = result.prompt_length, len(result.generated)
    assert result.matrix.shape == (T, p + T) == result.raw.shape and len(result.tokens) == p + T
    for t in range(T):  # row t sees positions 0 .. p+t-1 only
        assert np.all(np.isfinite(result.matrix[t, :p + t])) and np.all(np.isnan(result.matrix[t, p + t:]))


def test_greedy_ig_rows_on_tiny_gpt2(tiny):
    ex = tiny("gpt2")
    result = ex.attribute_generation(PROMPT, max_new_tokens=3, method="ig", steps=16)
    assert result.generated_ids == _model_greedy(ex, PROMPT, 3)
    assert result.generated == [ex.tokenizer.decode([i]) for i in result.generated_ids]
    _check_rows(ex, result)
    ids = ex.encode(PROMPT).input_ids[0].tolist() + result.generated_ids
    special = {i for i, s in enumerate(ex.encode(PROMPT).special_mask) if s}
    for t, row in enumerate(result.options["rows"]):  # completeness, against independent forward passes
        m = result.prompt_length + t
        f_x = _logit(ex, ids[:m], result.generated_ids[t])
        baseline = ex.tokenizer.convert_tokens_to_ids(row["baseline_token"])
        f_base = _logit(ex, ids[:m], result.generated_ids[t], baseline, special)
        assert row["f_x"] == pytest.approx(f_x, rel=1e-4, abs=1e-5)
        assert result.raw[t, :m].sum() == pytest.approx(f_x - f_base, rel=0.02, abs=1e-3)
    again = Result.from_json(result.to_json())
    assert isinstance(again, GenerationResult) and again.generated == result.generated
    np.testing.assert_array_equal(np.isnan(again.matrix), np.isnan(result.matrix))
    row = again.row(1)
    assert row.tokens == result.tokens[:result.prompt_length + 1] and row.target == result.generated_ids[1]


@pytest.mark.parametrize("method", ["attention", "rollout", "sig", "gaf"])
def test_other_methods_and_teacher_forcing(tiny, method):
    ex = tiny("gpt2")
    options = {"steps": 4} if method == "sig" else {}
    result = ex.attribute_generation(PROMPT, method=method, target=" a good one", **options)
    assert result.generated_ids == ex.tokenizer(" a good one", add_special_tokens=False)["input_ids"]
    assert result.options["mode"] == "teacher_forced" and result.target == " a good one"
    _check_rows(ex, result)
    if method in ("attention", "rollout"):  # each row is a distribution over the earlier tokens
        np.testing.assert_allclose(np.nansum(result.matrix, axis=1), 1.0, atol=1e-6)


def test_streaming_rows_and_cancel(tiny):
    ex = tiny("gpt2")
    seen = []

    def callback(partial):
        seen.append(partial.options["rows_done"])
        assert np.all(np.isnan(partial.matrix[partial.options["rows_done"]:]))
        return len(seen) < 2

    with pytest.raises(Cancelled, match="after 2 of 3"):
        ex.attribute_generation(PROMPT, max_new_tokens=3, method="attention", callback=callback)
    assert seen == [1, 2]


def test_bad_requests(tiny):
    with pytest.raises(ModelError, match="causal"):
        tiny("bert").attribute_generation(PROMPT, method="attention")
    ex = tiny("gpt2")
    with pytest.raises(InputError, match="attention_flow"):
        ex.attribute_generation(PROMPT, method="attention_flow")
    with pytest.raises(InputError, match="max_new_tokens"):
        ex.attribute_generation(PROMPT, max_new_tokens=0)
    with pytest.raises(InputError, match="granularity"):
        ex.attribute_generation(PROMPT, method="attention", granularity="word")
    with pytest.raises(TypeError, match="target"):
        ex.attribute_generation(PROMPT, target=3)


@pytest.mark.slow
def test_smollm2_greedy_generation_and_ig_completeness(smollm):
    result = smollm.attribute_generation("The capital of France is", max_new_tokens=4, method="ig", steps="auto")
    assert result.generated_ids == _model_greedy(smollm, "The capital of France is", 4)
    _check_rows(smollm, result)
    for t, row in enumerate(result.options["rows"]):
        m = result.prompt_length + t
        assert abs(result.raw[t, :m].sum() - (row["f_x"] - row["f_baseline"])) <= 0.05 * abs(row["f_x"] - row["f_baseline"])
