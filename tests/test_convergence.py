"""Gradient attributions say when they have not converged (docs/ARCHITECTURE.md, section "Gradients").

Every IG and SIG result carries ``relative_completeness_error`` / ``converged``; an unconverged
one warns with the fix; ``steps="auto"`` grows panels until the tolerance is met or the cap is
hit; the key/value cache goes through the supported ``cache`` keyword of transformers.
"""
from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

from xattr_lab import gradients as G
from xattr_lab.errors import InputError
from xattr_lab.methods import integration as I

TEXT = "A gripping, beautifully acted film."


def _independent_f(ex, text, baseline, target=None):
    """F(x), F(x') and F(x with token i at the baseline) from plain forward passes on token ids."""
    encoding = ex.encode(text)
    moving = [i for i, s in enumerate(encoding.special_mask) if not s]
    ids = encoding.input_ids
    base_ids = ids.clone()
    base_ids[0, moving] = G.baseline_token(ex.tokenizer, baseline)
    one = ids.repeat(len(moving), 1)
    one[torch.arange(len(moving)), moving] = G.baseline_token(ex.tokenizer, baseline)
    position = ex.readout_position(encoding)
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=ids, attention_mask=encoding.attention_mask).logits
        t = ex.resolve_target(target, ex.target_logits(logits, position), position)
        f = [t.score(ex.forward(input_ids=batch, attention_mask=encoding.attention_mask.expand(len(batch), -1)).logits)
             for batch in (ids, base_ids, one)]
    return float(f[0][0]), float(f[1][0]), f[2].double().numpy(), moving


# ---------------------------------------------------------------------------- the numbers
def test_ig_records_relative_completeness_error_and_converged(tiny):
    ex = tiny("bert")
    a = G.integrated_gradients(ex, TEXT, steps=50, baseline="mask")
    f_x, f_base, _, _ = _independent_f(ex, TEXT, "mask")
    floor = I.CHANGE_FLOOR * max(1.0, abs(f_x), abs(f_base))
    expected = abs(a.raw.sum() - (f_x - f_base)) / max(abs(f_x - f_base), floor)
    o = a.options
    assert o["relative_completeness_error"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert o["converged"] is True and o["convergence_tol"] == 0.05 and o["completeness_floor"] == pytest.approx(floor)
    assert inspect.signature(G.integrated_gradients).parameters["steps"].default == 50  # the paper's rule stays
    assert inspect.signature(G.sequential_integrated_gradients).parameters["steps"].default == 50


def test_sig_records_per_token_errors_and_their_maximum(tiny):
    ex = tiny("gpt2")
    a = G.sequential_integrated_gradients(ex, TEXT, steps=3)
    f_x, f_base, f_one, moving = _independent_f(ex, TEXT, "mask")
    floor = I.CHANGE_FLOOR * max(1.0, abs(f_x), abs(f_base))
    change = f_x - f_one
    expected = np.abs(a.raw[moving] - change) / np.maximum(np.abs(change), floor)
    per_token = np.array(a.options["relative_completeness_error_per_token"])
    np.testing.assert_allclose(per_token[moving], expected, rtol=1e-3, atol=1e-5)  # float32 passes
    assert a.options["relative_completeness_error"] == pytest.approx(per_token.max())
    assert a.options["converged"] == (per_token.max() <= 0.05)
    exact = G.sequential_integrated_gradients(ex, TEXT, steps="exact")
    assert exact.options["relative_completeness_error"] == 0.0 and exact.options["converged"] is True


def test_guard_when_the_output_change_is_zero(tiny):
    """logit(a) - logit(a) is 0 everywhere: the change is 0 and the error must read 0, not 0/0."""
    ex = tiny("gpt2")
    for fn in (G.integrated_gradients, G.sequential_integrated_gradients):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            a = fn(ex, TEXT, target=(" the", " the"), steps=4)
        assert a.options["relative_completeness_error"] == 0.0 and a.options["converged"] is True
        assert a.options["completeness_floor"] == pytest.approx(I.CHANGE_FLOOR)
    # a change below the floor is measured against the floor
    assert I.relative_errors([0.002], [0.0001], 0.01)[0] == pytest.approx(0.19)
    assert I.relative_errors([3.0], [2.0], 0.01)[0] == pytest.approx(0.5)
    assert I.change_floor(-250.0, 3.0) == pytest.approx(2.5)


# ---------------------------------------------------------------------------- warnings
def test_unconverged_ig_warns_with_the_error_and_the_fix(tiny):
    ex = tiny("llama")  # its [PAD] embedding is all zeros: RMSNorm(a v) jumps near a = 0
    with pytest.warns(RuntimeWarning, match=r"IG \(4 steps\) has not converged: relative completeness error") as seen:
        a = G.integrated_gradients(ex, TEXT, steps=4, baseline="pad", convergence_tol=1e-4)
    message = str(seen[0].message)
    assert "steps='auto'" in message and "more steps" in message
    assert f"{100 * a.options['relative_completeness_error']:,.0f}%".rstrip("%") in message
    assert a.options["converged"] is False and a.options["relative_completeness_error"] > 1e-4


def test_unconverged_sig_warns_and_suggests_exact(tiny):
    ex = tiny("gpt2")
    with pytest.warns(RuntimeWarning, match="SIG.*has not converged") as seen:
        a = G.sequential_integrated_gradients(ex, TEXT, steps=1, convergence_tol=1e-6)
    assert "steps='exact'" in str(seen[0].message) and "on token" in str(seen[0].message)
    assert a.options["converged"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # converged: silent
        G.sequential_integrated_gradients(ex, TEXT, steps=16)


# ---------------------------------------------------------------------------- steps="auto"
def test_ig_auto_meets_the_tolerance_where_fixed_steps_do_not(tiny):
    ex = tiny("llama")
    tol = 2e-3
    with pytest.warns(RuntimeWarning, match="not converged"):
        fixed = G.integrated_gradients(ex, TEXT, steps=16, baseline="pad", convergence_tol=tol)
    auto = G.integrated_gradients(ex, TEXT, steps="auto", baseline="pad", convergence_tol=tol)
    assert fixed.options["relative_completeness_error"] > tol
    assert auto.options["converged"] and auto.options["relative_completeness_error"] <= tol
    assert auto.options["steps"] == "auto" and auto.options["nodes"] > 8
    assert auto.options["gradient_rows"] >= auto.options["nodes"]
    f_x, f_base, _, _ = _independent_f(ex, TEXT, "pad")
    assert abs(auto.raw.sum() - (f_x - f_base)) <= 2 * tol * abs(f_x - f_base)  # against independent passes


def test_auto_stops_at_the_cap_and_says_so(tiny):
    ex = tiny("llama")
    with pytest.warns(RuntimeWarning, match=r"max_steps=16"):
        a = G.integrated_gradients(ex, TEXT, steps="auto", baseline="pad", convergence_tol=1e-9, max_steps=16)
    assert a.options["nodes"] <= 16 and a.options["converged"] is False
    with pytest.warns(RuntimeWarning, match=r"max_steps=8"):
        s = G.sequential_integrated_gradients(ex, TEXT, steps="auto", convergence_tol=1e-12, max_steps=8)
    assert max(s.options["nodes"]) <= 8 and s.options["converged"] is False


def test_sig_auto_meets_the_tolerance_per_token(tiny):
    ex = tiny("gpt2")
    a = G.sequential_integrated_gradients(ex, TEXT, steps="auto", convergence_tol=1e-4)
    assert max(a.options["relative_completeness_error_per_token"]) <= 1e-4 and a.options["converged"]
    b = G.sequential_integrated_gradients(ex, TEXT, steps="auto", tol=1e-4)  # the older name
    np.testing.assert_allclose(b.raw, a.raw, rtol=1e-6, atol=1e-9)
    assert b.options["convergence_tol"] == 1e-4


def test_panels_resolve_a_steep_step_that_one_rule_cannot():
    """F(a) = tanh((a - 0.3) / 0.002): the integrand is a spike of width ~0.004."""
    width = 0.002

    def f(alpha):
        return np.tanh((np.asarray(alpha) - 0.3) / width)

    def gradients(paths, alphas):
        return (1 - f(alphas) ** 2) / width

    change = float(f(1.0) - f(0.0))
    for nodes in (50, 100, 200, 400):  # one Gauss-Legendre rule: 1 % to 88 % off, not improving
        one = I.integrate_panels(np.array([f(0.0)]), np.array([f(1.0)]), nodes, "gausslegendre", gradients,
                                 lambda p, a: f(a))
        assert one.nodes[0] == one.rows == nodes and abs(one.integral.sum() - change) > 0.01 * change
    tol_abs = np.array([1e-6 * change])
    auto = I.integrate_panels(np.array([f(0.0)]), np.array([f(1.0)]), 8, "gausslegendre", gradients, lambda p, a: f(a),
                              tol_abs=tol_abs, max_nodes=4096)
    assert abs(auto.integral.sum() - change) <= tol_abs[0] and not auto.limited
    assert auto.nodes[0] <= 128 and auto.rows <= 256
    capped = I.integrate_panels(np.array([f(0.0)]), np.array([f(1.0)]), 8, "gausslegendre", gradients,
                                lambda p, a: f(a), tol_abs=tol_abs, max_nodes=32)
    assert capped.limited == [0] and capped.nodes[0] <= 32


def test_panels_without_tolerance_are_the_plain_rule():
    alphas, weights = I.quadrature(7)
    got = I.integrate_panels(np.zeros(2), np.ones(2), 7, "gausslegendre",
                             lambda p, a: np.stack([np.cos(a) * (p + 1), a ** 3], 1), lambda p, a: a)
    np.testing.assert_allclose(got.integral[1], [2 * np.dot(weights, np.cos(alphas)), np.dot(weights, alphas ** 3)])
    assert math.isclose(got.integral[0, 1], 0.25, rel_tol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda ex: G.integrated_gradients(ex, TEXT, steps="exact"), "exact"),
    (lambda ex: G.integrated_gradients(ex, TEXT, steps="often"), "auto"),
    (lambda ex: G.integrated_gradients(ex, TEXT, convergence_tol=0), "convergence_tol"),
    (lambda ex: G.sequential_integrated_gradients(ex, TEXT, convergence_tol=-1), "convergence_tol"),
    (lambda ex: G.integrated_gradients(ex, TEXT, steps="auto", max_steps=2), "max_steps"),
])
def test_bad_convergence_options(tiny, call, match):
    with pytest.raises(InputError, match=match):
        call(tiny("bert"))


# ---------------------------------------------------------------------------- transformers' cache API
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_no_deprecated_transformers_api(tiny, arch, monkeypatch):
    """Every gradient method, SIG's prefix reuse included, with transformers' FutureWarnings and
    DeprecationWarnings as errors and the deprecated ``past_key_values`` output name forbidden."""
    from transformers.utils import generic

    def forbidden(*args, **kwargs):
        raise AssertionError("the deprecated past_key_values/cache_params name was used")

    original = generic.ModelOutput._replace_old_cache_name

    def checked(self, key):
        if key in ("past_key_values", "cache_params"):
            forbidden()
        return original(self, key)

    monkeypatch.setattr(generic.ModelOutput, "past_key_values", property(forbidden))
    monkeypatch.setattr(generic.ModelOutput, "_replace_old_cache_name", checked)
    ex = tiny(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence is not what this test is about
        reused = G.sequential_integrated_gradients(ex, TEXT, steps=4, batch_size=3)
        plain = G.sequential_integrated_gradients(ex, TEXT, steps=4, batch_size=3, prefix_reuse=False)
        G.sequential_integrated_gradients(ex, TEXT, steps="auto", batch_size=5)
        G.sequential_integrated_gradients(ex, TEXT, steps="exact")
        G.integrated_gradients(ex, TEXT, steps=4)
        G.integrated_gradients(ex, TEXT, steps="auto")
        G.grad_x_input(ex, TEXT)
    assert reused.options["prefix_reuse"] and not plain.options["prefix_reuse"]
    np.testing.assert_allclose(reused.raw, plain.raw, rtol=1e-5, atol=1e-6 * np.abs(plain.raw).max())
    assert I._cache_keyword(ex.model) == "cache"


# ---------------------------------------------------------------------------- a real model (slow)
@pytest.mark.slow
def test_smollm_ig_at_50_steps_warns_and_auto_converges(smollm):
    """The issue's case: on SmolLM2 the paper's 50 nodes leave IG far from completeness."""
    from xattr_lab.tasks import ioi_prompts

    text = ioi_prompts(smollm.tokenizer, n=2, seed=0).positive[1]
    with pytest.warns(RuntimeWarning, match="IG \\(50 steps\\) has not converged"):
        fixed = smollm.attribute(text, method="ig", baseline="mask", steps=50)
    assert fixed.options["relative_completeness_error"] > 0.05 and not fixed.options["converged"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        auto = smollm.attribute(text, method="ig", baseline="mask", steps="auto")
    assert auto.options["converged"] and auto.options["relative_completeness_error"] <= 0.05
    exact = smollm.attribute(text, method="sig", steps="exact")
    assert exact.options["converged"] and exact.options["relative_completeness_error"] == 0.0
