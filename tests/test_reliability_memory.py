"""Issue #20: computations that would not fit in memory are refused before they run (or chunked).

Old code: a smollm2 input of 8,192 tokens built ~32 GB of flow arrays and the kernel died; IG/SIG at
4,096 tokens needed ~35 GB for one row's backward pass.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_lab.core import budget
from xattr_lab.core.capture import head_outputs
from xattr_lab.errors import BudgetError, InputError

TEXT = " ".join(["word"] * 100)


class Forwards:
    """Counts forward passes of a model and their rows: started ones, or ``completed`` ones only
    (a hook, removed on exit)."""

    def __init__(self, model, completed: bool = False):
        self.model, self.completed, self.count, self.rows = model, completed, 0, []

    def __enter__(self):
        def hook(module, args, kwargs, *output):
            self.count += 1
            x = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            self.rows.append(int(x.shape[0]))

        register = self.model.register_forward_hook if self.completed else self.model.register_forward_pre_hook
        self.handle = register(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_a_computation_over_the_limit_is_refused_before_any_forward(tiny, monkeypatch):
    ex = tiny("bert")
    monkeypatch.setenv(budget.ENV, "1M")
    with Forwards(ex.model) as forwards, pytest.raises(BudgetError) as info:
        ex.attribute(TEXT, method="gaf")
    message = str(info.value)
    assert forwards.count == 0
    assert message.startswith("gaf on tiny-bert at 102 tokens needs about ")
    assert "flow solver arrays" in message and f"over the limit of 1.0 MiB ({budget.ENV}=1M)" in message
    assert "use a shorter text (at most " in message and "tokens fit)" in message
    assert info.value.estimate > info.value.limit == 1 << 20 and "shorter text" in info.value.option
    fit = int(message.split("(at most ")[1].split(" tokens")[0])
    assert 0 < fit < 102 and budget.method_estimate(budget.shape_of(ex), "gaf", fit).total <= 1 << 20
    short = " ".join(["word"] * (fit - 2))
    assert ex.attribute(short, method="gaf").scores.shape == (fit,)  # what it says fits, runs


def test_capture_refuses_and_head_outputs_chunk(tiny, monkeypatch):
    ex = tiny("bert")
    prompts = [f"prompt number {i} is here" for i in range(10)]
    full = head_outputs(ex, prompts, progress=False)
    shape = budget.shape_of(ex)
    per_row = budget.forward_bytes(shape, ex.encode(prompts[0]).n, 1, grad=False)
    monkeypatch.setenv(budget.ENV, str(int(3.5 * per_row)))  # three prompts per forward pass fit
    with Forwards(ex.model) as forwards:
        chunked = head_outputs(ex, prompts, progress=False)
    assert forwards.rows == [3, 3, 3, 1]
    torch.testing.assert_close(chunked, full)
    with pytest.raises(BudgetError, match="capturing attention on tiny-bert at 102 tokens"):
        ex.capture(TEXT, attention_grads=True)
    monkeypatch.setenv(budget.ENV, str(per_row // 4))
    with pytest.raises(BudgetError, match="use shorter prompts"):
        head_outputs(ex, prompts, progress=False)


def test_a_batch_too_big_for_memory_is_refused_by_the_forward_guard(tiny, monkeypatch):
    ex = tiny("bert")
    one_row = budget.forward_bytes(budget.shape_of(ex), 102, 1, grad=True)
    monkeypatch.setenv(budget.ENV, str(4 * one_row))  # four rows of 102 tokens fit
    embeds = ex.embed(ex.encode(TEXT).input_ids).detach()
    with ex.restored(), torch.enable_grad():  # even a direct call of the model is guarded there
        with pytest.raises(BudgetError, match=r"a forward and backward pass over 64 row\(s\) of 102 tokens.*lower batch_size"):
            ex.model(inputs_embeds=embeds.expand(64, -1, -1).clone().requires_grad_(True))
    reference = ex.attribute(TEXT, method="ig", steps=8, batch_size=1).scores
    with Forwards(ex.model, completed=True) as forwards:
        try:  # the chunked caller halves a refused chunk (core/batching.run_chunked) or says what to lower
            scores = ex.attribute(TEXT, method="ig", steps=8, batch_size=8).scores
        except BudgetError as error:
            assert "lower batch_size" in str(error)
        else:
            np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-7)
    assert forwards.rows and max(forwards.rows) <= 4  # no pass over what fits ran


def test_the_sae_is_part_of_the_circuit_budget(tiny, monkeypatch):
    ex = tiny("bert")
    monkeypatch.setenv(budget.ENV, "64M")
    with pytest.raises(BudgetError, match=r"SAE weights and Adam state.*fewer SAE features \(features=\)"):
        ex.circuit(["a good film", "a great film"], ["a bad film", "a poor film"], features=1_000_000, epochs=1)


def test_limits():
    assert budget.parse_bytes("8G") == 8 << 30 and budget.parse_bytes("512 MiB") == 512 << 20
    assert budget.parse_bytes("2e9") == 2_000_000_000 and budget.parse_bytes("off") is None
    with pytest.raises(InputError, match="is not a size"):
        budget.parse_bytes("lots")
    assert budget.largest(lambda k: k * k <= 50, 100) == 7 and budget.largest(lambda k: False, 10) == 0


def test_the_limit_can_be_turned_off(tiny, monkeypatch):
    monkeypatch.setenv(budget.ENV, "off")
    assert budget.memory_limit() == (None, f"{budget.ENV}=off (off)")
    budget.check(budget.Estimate("anything", {"part": 1 << 60}))  # no limit: nothing refused


def test_estimates_grow_with_the_text_and_cover_the_parts():
    shape = budget.Shape(layers=30, heads=9, d_model=576, d_ff=1536, vocab=49152)  # smollm2-135m
    gaf = [budget.method_estimate(shape, "gaf", n).total for n in (128, 256, 512)]
    assert gaf[0] < gaf[1] < gaf[2] and gaf[2] / gaf[1] > 3.5  # quadratic in n
    ig = budget.method_estimate(shape, "ig", 4096)
    assert 30 << 30 < ig.total < 40 << 30  # one row's backward pass: ~1.5 x 18 GiB of maps + activations
    assert budget.method_estimate(shape, "gaf", 8192).parts["flow solver arrays (~32 x L·n² float64)"] == \
        32 * 8 * 30 * 8192 ** 2


@pytest.mark.slow
def test_smollm2_gaf_at_8192_tokens_and_ig_sig_at_4096_are_refused_clearly(smollm, monkeypatch):
    text = " ".join(["word"] * 8192)
    with Forwards(smollm.model) as forwards:
        with pytest.raises(BudgetError, match=r"gaf on smollm2-135m at 8,192 tokens needs about .* TiB"):
            smollm.attribute(text, method="gaf")
        monkeypatch.setenv(budget.ENV, "8G")
        for method in ("ig", "sig"):
            with pytest.raises(BudgetError, match=rf"{method} on smollm2-135m at 4,096 tokens.*over the limit of 8.0 GiB"):
                smollm.attribute(" ".join(["word"] * 4096), method=method)
    assert forwards.count == 0
    result = smollm.attribute(" ".join(["word"] * 64), method="ig", steps=4)  # within the limit: runs
    assert np.isfinite(result.scores).all()
