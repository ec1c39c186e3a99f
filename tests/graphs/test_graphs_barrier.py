"""The barrier max-flow (xattr_lab.graphs.barrier) on capacities of very different sizes.

Issue 16: edges below 1e-12·max C used to be dropped and left out of ``upper_bound``, so a graph
whose bottleneck is made of such edges solved to value 0 with bound 0 while its max-flow is
positive. The reference is networkx's max-flow on every positive capacity.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from xattr_lab.graphs import DROP_RELATIVE, VALUE_RTOL, barrier_max_flow


def exact_value(C, sources=None):
    L, n, _ = C.shape
    U = float(C.sum())
    G = nx.DiGraph()
    for k in range(L):
        for i, j in zip(*np.nonzero(C[k] > 0)):
            G.add_edge((k + 1, int(i)), (k, int(j)), capacity=float(C[k, i, j]))
    for i in range(n) if sources is None else sources:
        G.add_edge("s", (L, i), capacity=U)
    for j in range(n):
        G.add_edge((0, j), "t", capacity=U)
    return nx.maximum_flow_value(G, "s", "t")


def tiny_bottleneck(seed, tiny, kind, L=4, n=6):
    """Random capacities with one layer scaled by ``tiny``: all of it ("layer"), or a random
    half of its edges with the rest 0 ("sparse")."""
    rng = np.random.default_rng(seed)
    C = rng.random((L, n, n)) ** 2
    k = rng.integers(L)
    if kind == "layer":
        C[k] *= tiny
    else:
        C[k] = np.where(rng.random((n, n)) < 0.5, C[k] * tiny, 0.0)
    return C


def assert_certified(C, sol, exact):
    assert exact > 0
    assert sol.value <= exact * (1 + 1e-9)  # a feasible flow
    assert sol.upper_bound >= exact * (1 - 1e-9)  # a real cut of the whole graph
    assert sol.value >= exact * (1 - VALUE_RTOL)  # the stated accuracy
    assert sol.gap <= VALUE_RTOL * sol.value * (1 + 1e-9)


@pytest.mark.parametrize("tiny", [1e-14, 1e-30, 1e-100, 1e-250])
@pytest.mark.parametrize("kind", ["layer", "sparse"])
def test_bottleneck_of_tiny_edges_solves_to_the_max_flow(tiny, kind):
    for seed in range(10):
        C = tiny_bottleneck(seed, tiny, kind)
        sol = barrier_max_flow(C, None)
        assert_certified(C, sol, exact_value(C))
        assert np.all(sol.edge_flow <= C * (1 + 1e-9)) and np.all(sol.edge_flow >= 0)


def test_dropped_capacity_is_in_the_upper_bound():
    # one source with a unit edge and a parallel 1e-13 edge: the small one is dropped from the
    # barrier problem (its total is <= DROP_RELATIVE times the flow), so the bound must add it
    C = np.array([[[1.0, 1e-13], [0.0, 0.0]]])
    exact = exact_value(C, [0])
    assert exact == 1.0 + 1e-13
    sol = barrier_max_flow(C, None, [0])
    assert sol.upper_bound >= exact
    assert sol.upper_bound - sol.value <= VALUE_RTOL * sol.value
    assert sol.edge_flow[0, 0, 1] == 0.0  # dropped: no flow
    assert 1e-13 <= DROP_RELATIVE


def test_many_small_edges_are_kept_when_together_they_matter():
    # 20 edges of 1e-13 each: together 2e-12 of the flow, above the drop budget (1e-12), so only
    # some are dropped and the bound adds them
    n = 21
    C = np.zeros((2, n, n))
    C[1, 0, 1:] = 1e-13  # top token 0 -> 20 middle tokens through tiny edges
    C[0, 1:, 0] = 1.0
    C[1, 0, 0] = 1.0
    C[0, 0, 0] = 1.0
    exact = exact_value(C, [0])
    sol = barrier_max_flow(C, None, [0])
    assert_certified(C, sol, exact)


@pytest.mark.parametrize("seed", range(6))
def test_peaked_attention_with_underflowing_entries(seed):
    # entries spread over hundreds of orders of magnitude: the smallest are dropped, the rest solve
    rng = np.random.default_rng(seed)
    C = rng.random((4, 8, 8)) ** 40
    C /= C.sum(axis=2, keepdims=True)
    sol = barrier_max_flow(C, None)
    assert_certified(C, sol, exact_value(C))


# ----------------------------------------------------------------------------- automatic μ: the cut certifies


@pytest.mark.parametrize("rtol", [1e-1, 1e-2, 1e-4, VALUE_RTOL])
def test_auto_mu_value_is_certified_by_a_cut(rtol):
    for seed in range(8):
        rng = np.random.default_rng(seed)
        L, n = int(rng.integers(1, 6)), int(rng.integers(2, 10))
        C = rng.random((L, n, n)) ** (1 + 3 * (seed % 2))
        sol = barrier_max_flow(C, None, rtol=rtol)
        exact = exact_value(C)
        assert sol.value <= exact * (1 + 1e-9) and sol.upper_bound >= exact * (1 - 1e-9)
        assert sol.gap <= rtol * sol.value * (1 + 1e-9)  # the cut itself certifies rtol


def test_auto_mu_never_accepts_on_the_duality_gap_alone(monkeypatch):
    # Issue 16: with μ chosen automatically the solver accepted once 2·m·μ <= rtol·value, a bound
    # that holds only at the exact centre, and returned a cut that did not certify the value.
    # Make every sweep cut 1% loose: no cut can certify 1e-6, so the answer must be an error.
    from xattr_lab.errors import SolverError
    from xattr_lab.graphs import barrier, cut

    monkeypatch.setattr(barrier, "sweep_cut", lambda P, nu, nus: 1.01 * cut.sweep_cut(P, nu, nus))
    rng = np.random.default_rng(3)
    C = rng.random((3, 5, 5))
    with pytest.raises(SolverError, match="no cut certified") as info:
        barrier_max_flow(C, None)
    assert info.value.residuals["upper_bound"] > info.value.residuals["value"]
    monkeypatch.undo()
    sol = barrier_max_flow(C, None)
    assert sol.gap <= VALUE_RTOL * sol.value


# ----------------------------------------------------------------------------- issue 33: the first μ stage


def causal_attention_like(L, n, spread, seed):
    """Causal softmax attention with logits of standard deviation ``spread``: peaked rows whose
    entries span 10-25 orders of magnitude, like a decoder LM's (rows sum to 1, j <= i)."""
    rng = np.random.default_rng(seed)
    logits = np.where(np.tril(np.ones((n, n), bool)), rng.normal(size=(L, n, n)) * spread, -np.inf)
    A = np.exp(logits - logits.max(axis=2, keepdims=True))
    return A / A.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("L, n, spread, seed", [(8, 24, 8.0, 0), (8, 24, 8.0, 1), (6, 32, 10.0, 2)])
def test_peaked_causal_attention_certifies_in_few_newton_steps(L, n, spread, seed):
    # Issue 33: from the proportional-split start most edges sat orders of magnitude below the
    # centre of the first μ stage, and primal Newton steps grow a flow by a bounded factor each:
    # these graphs took 124-174 Newton steps (smollm2 at 512 tokens: 400, then SolverError). The
    # primal-dual start reaches the first stage in ~35 steps; all steps together stay under 80.
    C = causal_attention_like(L, n, spread, seed)
    assert C[C > 0].min() < 1e-18 * C.max()
    sol = barrier_max_flow(C, None, [n - 1], max_iter=80)
    assert_certified(C, sol, exact_value(C, [n - 1]))
    assert 0 < sol.residuals["primal_dual_iterations"] < sol.iterations <= 80


@pytest.mark.parametrize("mu", [None, 1e-4])
def test_primal_dual_start_reaches_the_same_centre(monkeypatch, mu):
    # The start changes how the first stage is reached, not the answer: the centre at each μ is
    # unique, so the old start (proportional split, primal steps) gives the same μ, value and flows.
    from xattr_lab.graphs import barrier

    C = causal_attention_like(6, 16, 4.0, 3)
    new = barrier_max_flow(C, mu, [15])
    monkeypatch.setattr(barrier, "PRIMAL_DUAL_START", False)
    old = barrier_max_flow(C, mu, [15])
    assert new.residuals["primal_dual_iterations"] > 0 and old.residuals["primal_dual_iterations"] == 0
    assert new.mu == old.mu
    assert new.value == pytest.approx(old.value, rel=1e-9)
    assert np.abs(new.edge_flow - old.edge_flow).max() <= 1e-7 * old.value
    assert new.iterations < old.iterations


def test_primal_dual_phase_gives_a_strictly_feasible_conserving_start():
    import torch

    from xattr_lab.graphs.primal_dual import primal_dual_centre
    from xattr_lab.graphs.problem import node_imbalance, edge_masks, Problem

    C = causal_attention_like(5, 12, 6.0, 4)
    P = Problem(C, np.arange(12) == 11, torch.device("cpu"))
    state, iterations = primal_dual_centre(P, 1e-3)
    assert state is not None and 0 < iterations < 80
    flows = [f if m is None else f * m for (f, _), m in zip(state, edge_masks(P))]
    r, rs = node_imbalance(*flows, P.L)
    assert float(r.abs().max()) <= 1e-6 * float(state[3][0]) and abs(float(rs)) <= 1e-6 * float(state[3][0])
    F, S = state[0]
    keep = P.keep
    assert bool((F[keep] > 0).all()) and bool((S[keep] > 0).all())
    assert float((F + S - P.u)[keep].abs().max()) <= 1e-12


def test_a_frozen_newton_step_keeps_exactly_the_negligible_flows():
    """newton_direction(freeze=True) leaves every edge whose flow or slack is below NEGLIGIBLE_FLOW of the
    value where it is, and steps every other edge as freeze=False does."""
    import torch

    from xattr_lab.graphs import laplacian
    from xattr_lab.graphs.problem import Problem, initial_flow

    C = causal_attention_like(4, 10, 4.0, 2)
    C[1, 5:, :3] = 1e-16  # edges of negligible capacity: their flow and slack are below 1e-11 of the value
    P = Problem(C, np.ones(10, bool), "cpu")
    state = initial_flow(P)
    mu = 1e-3 * float(state[3][0])
    free, _, _ = laplacian.newton_direction(P, state, mu)
    P.sigma[:] = False
    frozen, _, _ = laplacian.newton_direction(P, state, mu, freeze=True)
    value = float(state[3][0])
    negligible = torch.minimum(state[0][0], state[0][1]) < laplacian.NEGLIGIBLE_FLOW * value
    kept = P.keep if torch.is_tensor(P.keep) else torch.from_numpy(P.keep)
    assert bool((negligible & kept).any())
    assert torch.all(frozen[0][negligible] == 0)
    assert torch.allclose(frozen[0][~negligible], free[0][~negligible], rtol=1e-6, atol=1e-14 * value)
    assert bool((free[0][negligible & kept] != 0).any())  # unfrozen, they move


def test_centring_keeps_negligible_flows_only_after_an_ascent_direction(monkeypatch):
    """Primal centring from a primal-dual iterate steps every edge until a Newton direction is not a descent
    direction (round-off on edges of negligible flow); from then on those edges keep their flow."""
    from xattr_lab.graphs import barrier

    flags, directional = [], barrier._directional
    original = barrier.newton_direction

    def recorded(P, state, mu, *args, freeze=False, **kwargs):
        flags.append(freeze)
        return original(P, state, mu, *args, freeze=freeze, **kwargs)

    ascents = []

    def first_is_ascent(state, step, t, mu):
        d1, d2 = directional(state, step, t, mu)
        if t == 0.0 and not ascents:
            ascents.append(d1)
            return abs(d1) + 1.0, d2  # as round-off made it on smollm2's 1,024-token graph
        return d1, d2

    monkeypatch.setattr(barrier, "newton_direction", recorded)
    monkeypatch.setattr(barrier, "_directional", first_is_ascent)
    C = causal_attention_like(6, 16, 4.0, 3)
    sol = barrier_max_flow(C, 1e-4, [15])
    assert ascents and flags[0] is False and flags[1] is True and all(flags[1:])
    monkeypatch.setattr(barrier, "_directional", directional)
    flags.clear()
    plain = barrier_max_flow(C, 1e-4, [15])
    assert not any(flags)  # no ascent: no edge is kept
    assert sol.value == pytest.approx(plain.value, rel=1e-9)
