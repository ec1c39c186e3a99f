"""The μ grid followed by primal-dual steps (issue 33: ``barrier.PRIMAL_DUAL_PATH``).

Each stage's cut is checked on the Mehrotra iterate near the stage's μ; primal Newton centring runs
only where that cut nearly certifies the value (and at a fixed μ). The centre at a given μ is unique,
so the answer must be the one the stage-by-stage primal path gives (``PRIMAL_DUAL_PATH = False``),
in fewer Newton steps, and certified against networkx's exact max-flow.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_graphs_barrier import assert_certified, causal_attention_like, exact_value  # tests/ is on sys.path
from xattr_lab.graphs import barrier, barrier_max_flow
from xattr_lab.graphs.primal_dual import _PrimalDual
from xattr_lab.graphs.problem import _Problem


def attention_like(L, n, seed):
    A = np.random.default_rng(seed).random((L, n, n)) ** 4
    return A / A.sum(axis=2, keepdims=True)


CASES = {
    "dense": (lambda: attention_like(6, 24, 0), None),
    "causal-peaked": (lambda: causal_attention_like(8, 24, 8.0, 1), [23]),
    "causal": (lambda: causal_attention_like(6, 16, 4.0, 3), [15]),
}


def _both(monkeypatch, C, mu, sources):
    new = barrier_max_flow(C, mu, sources)
    monkeypatch.setattr(barrier, "PRIMAL_DUAL_PATH", False)
    old = barrier_max_flow(C, mu, sources)
    monkeypatch.setattr(barrier, "PRIMAL_DUAL_PATH", True)
    return new, old


def _same_centre(new, old):
    assert new.mu == old.mu
    assert new.value == pytest.approx(old.value, rel=1e-9)
    assert np.abs(new.edge_flow - old.edge_flow).max() <= 1e-7 * old.value
    assert np.abs(new.attributions - old.attributions).max() <= 1e-7 * old.value


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mu", [None, 1e-4])
def test_primal_dual_path_reaches_the_same_centre_in_fewer_steps(monkeypatch, case, mu):
    make, sources = CASES[case]
    C = make()
    new, old = _both(monkeypatch, C, mu, sources)
    _same_centre(new, old)
    if mu is None:
        assert new.iterations < old.iterations
        # the path's steps are mostly primal-dual ones; the stage path's only reach the first stage
        assert new.residuals["primal_dual_iterations"] > old.residuals["primal_dual_iterations"] > 0
        assert_certified(C, new, exact_value(C, sources))
    else:  # a fixed μ above the first stage's: both reach it by primal-dual steps, then centre
        assert new.iterations <= old.iterations


def test_stalled_primal_dual_stages_are_centred_by_primal_steps_and_reseeded(monkeypatch):
    # every other later stage "stalls": that stage is centred by primal Newton steps and the
    # primal-dual iterate is re-seeded from that centre; the answer is unchanged
    C, sources = CASES["causal-peaked"][0](), [23]
    _, old = _both(monkeypatch, C, None, sources)
    calls = {"advance": 0, "reseed": 0}
    advance, reseed = _PrimalDual.advance, _PrimalDual.reseed

    def flaky(self, mu, **kw):
        calls["advance"] += 1
        return advance(self, mu, **kw) and calls["advance"] % 2 == 1

    def counted(self, *args):
        calls["reseed"] += 1
        return reseed(self, *args)

    monkeypatch.setattr(_PrimalDual, "advance", flaky)
    monkeypatch.setattr(_PrimalDual, "reseed", counted)
    new = barrier_max_flow(C, None, sources)
    assert calls["reseed"] >= 2
    _same_centre(new, old)
    assert_certified(C, new, exact_value(C, sources))


def test_reseed_round_trips_flows_slacks_and_potentials():
    C = causal_attention_like(5, 12, 6.0, 4)
    P = _Problem(C, np.arange(12) == 11, torch.device("cpu"))
    pd = _PrimalDual(P, 1e-3)
    assert pd.advance(1e-3)
    other = _PrimalDual(P, 1.0)
    other.reseed(pd.state(), pd.potentials(), 1e-3)
    assert torch.equal(other.f, pd.f) and torch.equal(other.s, pd.s)
    assert torch.allclose(other.nu, pd.nu, rtol=0, atol=1e-15)
    assert torch.allclose(other.f * other.z, torch.full_like(pd.f, 1e-3), rtol=1e-12)
    # ν_s near −1 and t grounded: the sign convention of the primal solver's potentials
    assert pd.potentials()[1] == pytest.approx(-1.0, abs=0.5) and float(pd.nu[-1]) == 0.0
