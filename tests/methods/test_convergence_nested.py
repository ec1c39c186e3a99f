"""IG's default panels (issue 33 item 2): nested Newton-Cotes panels that reuse their nodes when halved,
and the stop on the paper's signed completeness check within a cancellation guard (methods/panels.py).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from xattr_lab import gradients as G
from xattr_lab.errors import InputError
from xattr_lab.methods import integration as I
from xattr_lab.methods import panels as N

TEXT = "A gripping, beautifully acted film."
WIDTH = 0.002  # F(a) = tanh((a - 0.3) / WIDTH): the integrand is a spike of width ~0.004


def _f(alpha):
    return np.tanh((np.asarray(alpha, dtype=np.float64) - 0.3) / WIDTH)


def _spike(paths, alphas):
    return (1 - _f(alphas) ** 2) / WIDTH


class _Counting:
    """evaluate() for integrate_nested that records every alpha it is asked for."""

    def __init__(self, integrand=_spike, f=_f):
        self.integrand, self.f, self.asked = integrand, f, []

    def __call__(self, paths, alphas):
        self.asked += [(int(p), float(a)) for p, a in zip(paths, alphas)]
        return self.integrand(paths, alphas)[:, None], self.f(alphas)


def test_newton_cotes_is_boole_and_simpson_and_exact_to_its_degree():
    t, w = N.newton_cotes(5)
    np.testing.assert_allclose(t, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(w, np.array([7, 32, 12, 32, 7]) / 90, rtol=1e-12)  # Boole's rule, by hand
    np.testing.assert_allclose(N.newton_cotes(3)[1], np.array([1, 4, 1]) / 6, rtol=1e-12)  # Simpson's
    for degree in range(6):  # exact for degree <= 5 (odd node count: one more than the node count - 1)
        assert np.dot(w, t ** degree) == pytest.approx(1 / (degree + 1), rel=1e-12)
    assert abs(np.dot(w, t ** 6) - 1 / 7) > 1e-4
    for bad in (4, 1, 11, 2.0, True):
        with pytest.raises(InputError, match="odd number of nodes"):
            N.newton_cotes(bad)


def test_nested_panels_reuse_every_node_and_resolve_the_spike():
    change = float(_f(1.0) - _f(0.0))
    tol_abs = np.array([1e-6 * change])
    evaluate = _Counting()
    nested = N.integrate_nested(np.array([_f(0.0)]), np.array([_f(1.0)]), evaluate, tol_abs=tol_abs, guard=None,
                                max_nodes=4096)
    assert abs(nested.integral.sum() - change) <= tol_abs[0] and not nested.limited and nested.stopped is None
    assert len(evaluate.asked) == len(set(evaluate.asked)) == nested.rows == nested.nodes[0]  # no node twice
    assert nested.error_sum[0] <= tol_abs[0]
    # the Gauss-Legendre panels of integrate_panels throw the parent's rows away at every split
    gl = I.integrate_panels(np.array([_f(0.0)]), np.array([_f(1.0)]), 4, "gausslegendre", _spike,
                            lambda p, a: _f(a), tol_abs=tol_abs, max_nodes=4096)
    assert abs(gl.integral.sum() - change) <= tol_abs[0]
    assert gl.rows > gl.nodes[0] and nested.rows < gl.rows


def test_the_guard_rule_by_hand():
    """Signed errors +-0.15 cancel: the paper's check passes (0 <= 0.1), the unsigned sum 0.3 is within 4 x 0.1;
    +-0.9 cancel too, but 1.8 > 0.4: not accepted. Without the guard only the unsigned sum counts."""
    small = [[0, 0.5, None, 0.15], [0.5, 1, None, -0.15]]
    large = [[0, 0.5, None, 0.9], [0.5, 1, None, -0.9]]
    assert N._passes(small, 0.1, 4.0) and not N._passes(small, 0.1, None) and not N._passes(large, 0.1, 4.0)
    assert N._passes([[0, 1, None, -0.09]], 0.1, None)
    assert N._splits(small, 0.1, 4.0, 9, 5, 1024) is None
    assert N._splits(large, 0.1, 4.0, 9, 5, 1024) == [0]  # the worst first, until half the unsigned sum is left
    assert N._splits(large, 0.1, 4.0, 9, 5, 12) == []  # no room for 4 more nodes: limited


def test_signed_stop_within_the_guard_on_a_real_quadrature():
    """Two spikes of opposite sign (F = tanh at 0.3 minus half a tanh at 0.7): with the guard the run stops once the
    signed total passes, never with the unsigned sum over guard x tol, and uses no more rows than without it."""
    def f(a):
        a = np.asarray(a, dtype=np.float64)
        return np.tanh((a - 0.3) / 0.01) - 0.5 * np.tanh((a - 0.7) / 0.013)

    def integrand(paths, a):
        return (1 - np.tanh((a - 0.3) / 0.01) ** 2) / 0.01 - 0.5 * (1 - np.tanh((a - 0.7) / 0.013) ** 2) / 0.013

    change = float(f(1.0) - f(0.0))
    for tol in (0.05, 0.01, 1e-3):
        tol_abs = np.array([tol * abs(change)])
        guarded = N.integrate_nested(np.array([f(0.0)]), np.array([f(1.0)]), _Counting(integrand, f), tol_abs=tol_abs)
        plain = N.integrate_nested(np.array([f(0.0)]), np.array([f(1.0)]), _Counting(integrand, f), tol_abs=tol_abs,
                                   guard=None)
        assert abs(guarded.integral.sum() - change) <= tol_abs[0]  # the paper's check
        assert guarded.error_sum[0] <= N.CANCELLATION_GUARD * tol_abs[0]
        assert plain.error_sum[0] <= tol_abs[0] and abs(plain.integral.sum() - change) <= tol_abs[0]
        assert guarded.rows <= plain.rows


def test_ig_default_is_nested_and_wastes_no_row(tiny):
    ex = tiny("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        a = G.integrated_gradients(ex, TEXT, convergence_tol=1e-4)
    o = a.options
    assert o["quadrature"] == "nested" and o["steps"] == "auto" and o["converged"]
    assert o["nodes"] == o["gradient_rows"] >= N.NESTED_NODES  # every gradient row is a node of the result
    assert o["relative_completeness_error"] <= 1e-4 and o["panel_error_sum"] <= N.CANCELLATION_GUARD * 1e-4
    # the fixed rule and the older panels stay available by name
    b = G.integrated_gradients(ex, TEXT, steps="auto", method="gausslegendre", convergence_tol=1e-4)
    assert b.options["quadrature"] == "gausslegendre" and "panel_error_sum" not in b.options
    np.testing.assert_allclose(a.raw, b.raw, rtol=0.05, atol=1e-3 * np.abs(b.raw).max())
    with pytest.raises(InputError, match="nested"):
        G.integrated_gradients(ex, TEXT, steps=8, method="nested")
    with pytest.raises(InputError, match="cancellation_guard"):
        G.integrated_gradients(ex, TEXT, cancellation_guard=0)


def test_timed_round_runs_skips_or_drops_a_round_and_leaves_it_unstoppable(monkeypatch):
    """The one time-capped round that integrate_panels and integrate_nested share (methods/pacing.py)."""
    from xattr_lab.methods import pacing

    now = [0.0]
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: now[0])
    pace = pacing.Pace("test", progress=False, max_seconds=5.0)
    stoppable_inside = []

    def rows(n, seconds):
        def compute():
            stoppable_inside.append(pace.stoppable)
            for _ in range(n):
                now[0] += seconds
                pace.update(1)
            return "done"
        return compute

    assert pacing.timed_round(None, 3, True, lambda: "plain") == (True, "plain")
    assert pacing.timed_round(pace, 4, False, rows(4, 2.0)) == (True, "done")  # 8 s: past the cap, yet the first pass
    assert pace.stoppable is False and stoppable_inside == [False]
    assert pacing.timed_round(pace, 1, True, rows(1, 0.1)) == (False, None)  # the cap has passed: not started
    assert stoppable_inside == [False] and pace.planned == 4
    now[0], pace.done, pace.planned = 0.0, 0, 0
    pace.update(1)  # no time yet: any round fits
    assert pacing.timed_round(pace, 3, True, rows(3, 3.0)) == (False, None)  # started, overran, dropped
    assert stoppable_inside[-1] is True and pace.stoppable is False and pace.planned == 3


def test_nested_round_under_way_when_the_cap_passes_is_dropped(monkeypatch):
    """As integrate_panels: rows slow down 100x after the first pass, the overrun round is dropped."""
    from xattr_lab.methods import pacing

    now = [0.0]
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: now[0])
    pace = pacing.Pace("test", progress=False, max_seconds=5.0)

    def evaluate(paths, alphas):
        for _ in alphas:
            now[0] += 0.1 if pace.done < N.NESTED_NODES else 10.0
            pace.update(1)
        return _spike(paths, alphas)[:, None], _f(alphas)

    ends = np.array([_f(0.0)]), np.array([_f(1.0)])
    first = N.integrate_nested(*ends, evaluate, tol_abs=np.array([1e9]))
    now[0], pace.done, pace.planned = 0.0, 0, 0
    capped = N.integrate_nested(*ends, evaluate, tol_abs=np.array([1e-9]), pace=pace)
    assert capped.stopped == "max_seconds" and capped.limited == [0]
    assert capped.rows == N.NESTED_NODES == capped.nodes[0] and pace.done > N.NESTED_NODES
    np.testing.assert_allclose(capped.integral, first.integral)
