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
from xattr_lab.methods.panels import NESTED_NODES

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
    # the defaults pass the paper's own check (issue 33): IG grows nodes to the tolerance, SIG takes its limit
    assert inspect.signature(G.integrated_gradients).parameters["steps"].default == "auto"
    assert inspect.signature(G.sequential_integrated_gradients).parameters["steps"].default == "exact"


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
    ex = tiny("llama")
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
    tol = 1e-4
    with pytest.warns(RuntimeWarning, match="not converged"):
        fixed = G.integrated_gradients(ex, TEXT, steps=4, baseline="mask", convergence_tol=tol)
    auto = G.integrated_gradients(ex, TEXT, steps="auto", baseline="mask", convergence_tol=tol)
    assert fixed.options["relative_completeness_error"] > tol
    assert auto.options["converged"] and auto.options["relative_completeness_error"] <= tol
    assert auto.options["steps"] == "auto" and auto.options["nodes"] > 4
    assert auto.options["gradient_rows"] >= auto.options["nodes"]
    f_x, f_base, _, _ = _independent_f(ex, TEXT, "mask")
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
    assert I.cache_keyword(ex.model) == "cache"


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


# ---------------------------------------------------------------------------- defaults, time cap, progress (issue 33)
@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_defaults_pass_the_completeness_check(tiny, arch):
    """No steps given: IG grows its panels until completeness holds within 5 %; SIG takes its exact limit."""
    ex = tiny(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # converged: no warning
        ig = G.integrated_gradients(ex, TEXT)
        sig = G.sequential_integrated_gradients(ex, TEXT)
    baseline = "pad" if ig.options["baseline_note"] is None else "mask"  # tiny-llama's zero [PAD] row: see test_gradients
    f_x, f_base, f_one, moving = _independent_f(ex, TEXT, baseline)
    if ig.options["baseline_note"] is None:
        assert abs(ig.raw.sum() - (f_x - f_base)) <= 0.05 * abs(f_x - f_base)
    assert ig.options["steps"] == "auto" and ig.options["converged"] and ig.options["stopped"] is None
    assert ig.options["relative_completeness_error"] <= 0.05 and ig.options["gradient_rows"] >= ig.options["nodes"] >= 4
    f_x, _, f_one, moving = _independent_f(ex, TEXT, "mask")
    np.testing.assert_allclose(sig.raw[moving], f_x - f_one, rtol=1e-4, atol=1e-5 * max(1.0, abs(f_x)))
    assert sig.options["steps"] == "exact" and sig.options["converged"] and sig.options["gradient_rows"] == 0


def test_explicit_50_steps_keeps_the_fixed_rule_and_its_warning(tiny):
    ex = tiny("llama")
    a = G.integrated_gradients(ex, TEXT, steps=50)
    assert a.options["steps"] == 50 and a.options["nodes"] == a.options["gradient_rows"] == 50
    with pytest.warns(RuntimeWarning, match=r"IG \(50 steps\) has not converged.*steps='auto'"):
        b = G.integrated_gradients(ex, TEXT, steps=50, convergence_tol=1e-12, max_seconds=1e-9)
    assert b.options["nodes"] == 50 and b.options["stopped"] is None  # a fixed rule has no refinement to stop
    s = G.sequential_integrated_gradients(ex, TEXT, steps=50)
    assert set(s.options["nodes"]) <= {0, 50} and s.options["steps"] == 50 and s.options["quadrature"] == "gausslegendre"


def test_max_seconds_returns_the_last_complete_result_with_a_warning(tiny):
    ex = tiny("llama")
    with pytest.warns(RuntimeWarning, match=r"not converged.*stopped by max_seconds=1e-09"):
        a = G.integrated_gradients(ex, TEXT, convergence_tol=1e-9, max_seconds=1e-9)
    assert a.options["stopped"] == "max_seconds" and a.options["converged"] is False
    assert a.options["nodes"] == a.options["gradient_rows"] == NESTED_NODES  # the first pass, nothing after
    first = G.integrated_gradients(ex, TEXT, convergence_tol=1e9)  # the first panel passes any check this loose
    assert first.options["gradient_rows"] == NESTED_NODES
    np.testing.assert_allclose(a.raw, first.raw, rtol=1e-6, atol=1e-9)
    with pytest.warns(RuntimeWarning, match=r"SIG.*not converged.*max_seconds=1e-09 stopped"):
        s = G.sequential_integrated_gradients(ex, TEXT, steps="auto", convergence_tol=1e-9, max_seconds=1e-9)
    assert s.options["stopped"] == "max_seconds" and max(s.options["nodes"]) == 4
    with pytest.raises(InputError, match="max_seconds"):
        G.integrated_gradients(ex, TEXT, max_seconds=-1)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_round_under_way_when_the_cap_passes_is_dropped(monkeypatch):
    """Rows slow down 100x after the first pass: the second round looked affordable, overruns, and is dropped."""
    from xattr_lab.methods import pacing

    clock = _Clock()
    monkeypatch.setattr(pacing.time, "perf_counter", clock)
    pace = pacing.Pace("test", progress=False, max_seconds=5.0)

    def f(alpha):
        return np.tanh((np.asarray(alpha) - 0.3) / 0.01)

    def gradients(paths, alphas):
        for _ in alphas:  # run_chunked's protocol, one row per chunk
            clock.now += 0.1 if pace.done < 8 else 10.0
            pace.update(1)
        return (1 - f(alphas) ** 2) / 0.01

    first = I.integrate_panels(np.array([f(0.0)]), np.array([f(1.0)]), 8, "gausslegendre", gradients, lambda p, a: f(a))
    clock.now = 0.0
    pace.done = pace.planned = 0
    capped = I.integrate_panels(np.array([f(0.0)]), np.array([f(1.0)]), 8, "gausslegendre", gradients, lambda p, a: f(a),
                                tol_abs=np.array([1e-9]), max_nodes=4096, pace=pace)
    assert capped.stopped == "max_seconds" and capped.limited == [0]
    assert capped.rows == 8 and capped.nodes[0] == 8 and pace.done > 8  # the overrun round ran, then was dropped
    np.testing.assert_allclose(capped.integral, first.integral)


def test_progress_bar_for_runs_estimated_over_five_seconds(monkeypatch):
    from xattr_lab.methods import pacing

    clock = _Clock()
    monkeypatch.setattr(pacing.time, "perf_counter", clock)
    for progress, rows, seconds_per_row, shown in ((None, 100, 0.1, True), (None, 10, 0.1, False),
                                                  (False, 100, 0.1, False), (True, 2, 0.001, True)):
        clock.now = 0.0
        with pacing.Pace("IG", progress) as pace:
            pace.plan(rows)
            clock.now += seconds_per_row
            pace.update(1)
            assert (pace.bar is not None) == shown
            assert pace.seconds_left() == pytest.approx((rows - 1) * seconds_per_row)
            if shown:
                assert pace.bar.total == rows and pace.bar.n == 1 and "s left" in str(pace.bar)


@pytest.mark.slow
def test_smollm_defaults_converge(smollm):
    """Issue 33's goals: default IG on a 40-token prompt and default SIG on a 26-token one pass the completeness check
    (scripts/gradient_defaults_time.py times them)."""
    ig40 = ("The old lighthouse keeper climbed the narrow stairs every evening to light the lamp, and on clear nights "
            "he could see the lights of three small fishing villages along the rocky northern coast of the island he "
            "loved.")  # the texts of scripts/gradient_defaults_time.py
    sig26 = ("The committee met on Tuesday morning to discuss the new city budget, but after two long hours of debate "
             "they still could not agree on")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ig = smollm.attribute(ig40, method="ig")
        sig = smollm.attribute(sig26)
    assert len(ig.tokens) == 40 and len(sig.tokens) == 26 and sig.method == "sig"
    f_x, f_base, _, _ = _independent_f(smollm, ig40, "pad")
    assert ig.options["converged"] and abs(ig.raw.sum() - (f_x - f_base)) <= 0.05 * abs(f_x - f_base)
    # nested panels + the signed stop: 181 gradient rows here (the Gauss-Legendre panels before them ran 452 and 56
    # forward passes), results/measured/gradient_defaults_time.md
    assert ig.options["gradient_rows"] == ig.options["nodes"] <= 226 and ig.options["panel_error_sum"] <= 0.2
    f_x, _, f_one, moving = _independent_f(smollm, sig26, "mask")
    np.testing.assert_allclose(sig.raw[moving], f_x - f_one, rtol=1e-3, atol=1e-3)
    assert sig.options["converged"] and sig.options["relative_completeness_error"] == 0.0
