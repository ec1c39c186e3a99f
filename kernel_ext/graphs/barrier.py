"""The log-barrier max-flow of Generalized Attention Flow, solved by path following.

docs/ARCHITECTURE.md, section "Flows and GAF". The μ grid (20× per stage) is followed by
primal-dual (Mehrotra) steps (:mod:`.primal_dual`), each stage's sweep cut (:mod:`.cut`) checked on
the iterate near its μ; where that cut nearly certifies the value (and at a fixed μ), Newton steps
on the equality-constrained barrier problem (:mod:`.laplacian`, exact line searches on the
derivative) centre exactly and the cut of the centre decides. torch float64, CPU or GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import InputError
from .checks import check_layers, resolve_sources
from .cut import repair_conservation, sweep_cut
from .laplacian import newton_direction
from .primal_dual import PrimalDual
from .heap import retained_heap
from .threads import cpu_threads
from .problem import node_imbalance, initial_flow, Problem, solver_error

#: relative accuracy ``explain_flow`` certifies for ``value`` against the exact max-flow value
VALUE_RTOL = 1e-6
#: Newton decrement at which an intermediate μ stage stops centring (the accepted μ, or a fixed
#: one, is centred to ``tol``). The optimum at a given μ is unique, so this only sets how many
#: Newton steps reach it: 2.0 took 15% fewer than 0.5 on minilm-rt capacities, at the same μ.
STAGE_DECREMENT = 2.0
#: with mu=None, μ stages (each 20× smaller) tried after the duality gap 2mμ alone is within
#: rtol, waiting for a sweep cut to certify the value, before SolverError
UNCERTIFIED_STAGES = 4
#: reach the first μ stage by primal-dual (Mehrotra) steps from the box centres (:mod:`.primal_dual`)
#: instead of primal Newton steps from the proportional split; False restores the old start
PRIMAL_DUAL_START = True
#: follow the μ grid by primal-dual steps too, centring by primal Newton steps only where a stage's
#: cut nearly certifies the value (and at a fixed μ); False: primal Newton centring at every stage
PRIMAL_DUAL_PATH = True
#: relative distance to a stage's μ at which the primal-dual iterate's cut is checked
STAGE_REL = 1.0
#: steps of < 10% in a row after which a later stage is centred by primal steps and re-seeded
STAGE_STALL = 4


@dataclass
class FlowSolution:
    """Optimum of the GAF log-barrier max-flow problem, in the units of C (docs/ARCHITECTURE.md,
    section "Flows and GAF").

    value: f on t -> s (the flow value). edge_flow: (L, n, n), ``edge_flow[l-1][i, j]`` = f on
    (l, i) -> (l−1, j). attributions: (n,) f on (0, j) -> t; sums to ``value``.
    node_flow: (L+1, n) throughput of node (l, i) (layer 0 = inputs = attributions).
    source_flow: (n,) f on s -> (L, i). mu: the barrier weight solved for.
    upper_bound: capacity of the best sweep cut of the final node potentials plus every dropped
    edge — the exact max-flow value lies in [value, upper_bound]. iterations: Newton steps in all. residuals: final Newton
    decrement ("decrement", scale-free), relative conservation and capacity residuals, and the
    per-iteration history ([μ, Newton decrement]; NaN decrement for a primal-dual step).
    """

    value: float
    edge_flow: np.ndarray
    attributions: np.ndarray
    node_flow: np.ndarray
    source_flow: np.ndarray
    mu: float
    upper_bound: float
    iterations: int
    residuals: dict[str, Any] = field(default_factory=dict)
    sources: list[int] = field(default_factory=list)

    @property
    def gap(self) -> float:
        """Certified bound on (max-flow value − value), in the units of C."""
        return max(self.upper_bound - self.value, 0.0)


def _max_step(state, step):
    """Largest t with f + t·Δ > 0 and slack − t·Δ > 0 on every edge (masked steps are 0)."""
    worst = 0.0
    for (f, s), d in zip(state, step):
        worst = max(worst, float((-d / f).max()), float((d / s).max()))
    return math.inf if worst <= 0 else 1.0 / worst


def _directional(state, step, t, mu):
    """ψ'(t), ψ''(t) of ψ(t) = objective(state + t·step) (masked entries have zero step)."""
    d1 = d2 = 0.0
    for (f, s), d in zip(state, step):
        lo, hi = 1.0 / (f + t * d), 1.0 / (s - t * d)
        d1 += float(((hi - lo) * d).sum())
        d2 += float(((lo * lo + hi * hi) * (d * d)).sum())
    return mu * d1 - float(step[3]), mu * d2  # −f_ts term


def _line_search(P, state, step, mu, dec):
    """Step length along the Newton step: safeguarded Newton on ψ'(t) = 0 for the convex 1-D
    barrier function, stopped at |ψ'(t)| ≤ 0.1·|ψ'(0)| (strong Wolfe). Uses derivatives only,
    which stay accurate when the objective's changes fall below round-off of its value."""
    slope0 = mu * dec * dec  # −ψ'(0) for a conserving step
    hi = min(1.0, 0.99 * _max_step(state, step))
    d1, d2 = _directional(state, step, hi, mu)
    if d1 <= 0.1 * slope0:
        return hi
    lo, t = 0.0, hi
    for _ in range(30):
        t_new = t - d1 / d2 if d2 > 0 else 0.5 * (lo + hi)
        t = t_new if lo < t_new < hi else 0.5 * (lo + hi)
        d1, d2 = _directional(state, step, t, mu)
        if abs(d1) <= 0.1 * slope0:
            break
        if d1 > 0:
            hi = t
        else:
            lo = t
    return t


def _take(state, step, t):
    return tuple((f + t * d, s - t * d) for (f, s), d in zip(state, step))


_threads = cpu_threads


def _certificate(P: Problem, nu, nus) -> float:
    """An upper bound on the max-flow value of the whole graph (normalised units): the best
    sweep cut of the potentials over the kept edges, plus every dropped edge's capacity."""
    return sweep_cut(P, nu.cpu().numpy(), float(nus)) + P.dropped


def _solve(*args, device: Any = None, threads: int | None = None, retain_heap: bool = True, **kwargs) -> FlowSolution:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    L, n = args[0].shape[:2]
    with _threads(threads, dev), retained_heap(8 * L * n * n if retain_heap else 0, on_cpu=dev.type == "cpu"):
        return _solve_on(*args, device=dev, **kwargs)


def _solve_on(
    C: np.ndarray,
    mu: float | None,
    sources: np.ndarray,
    *,
    rtol: float = VALUE_RTOL,
    tol: float = 1e-9,
    accept: float = 1e-5,
    max_iter: int = 400,
    shrink: float = 0.05,
    device: Any = None,
) -> FlowSolution:
    L, n, _ = C.shape
    src_list = np.nonzero(sources)[0].tolist()
    P = Problem(C, sources, device) if np.any(C > 0) else None
    if P is None or P.empty:
        # no s -> t path: the max flow and every feasible flow are 0
        return FlowSolution(
            value=0.0, edge_flow=np.zeros((L, n, n)), attributions=np.zeros(n), node_flow=np.zeros((L + 1, n)),
            source_flow=np.zeros(n), mu=float(mu) if mu else 0.0, upper_bound=0.0, iterations=0,
            residuals={"decrement": 0.0, "conservation": 0.0, "capacity": 0.0, "history": []}, sources=src_list,
        )
    state = initial_flow(P)
    auto = mu is None
    target = 0.0 if auto else float(mu) / P.scale
    # start where the central path's duality gap (2 m μ) matches the gap to a layer cut
    layer_cut = float(min(P.cap_np.reshape(L, -1).sum(axis=1).min(), P.U))
    gap0 = max(layer_cut - float(state[3][0]), 1e-12 * layer_cut)
    mu_k = max(gap0 / (2 * P.m), target)
    # The μ grid above is set by the proportional split; the first stage starts from a point near
    # its centre found by primal-dual steps (the split itself lies orders of magnitude below the
    # centre on most edges: hundreds of primal steps, see .primal_dual). Same grid, same centres.
    # (Tried: starting it from the conserving split with f·z = s·w = 1e3·μ_k reached the first stage
    # of smollm2 AGF at 255 / 511 tokens in 21 / 16 steps instead of 46 / 84, but left it so poorly
    # centred that the next stages crawled (steps of < 1%) and primal centring from it stalled.
    # Measured on the 255-token graph, first stage 46 steps from the box centres: the conserving
    # split with least-squares potentials (one Laplacian solve) did not get there in 150; the box
    # centres projected onto circulations stay interior only as 1.5e-6 of a blend with the split;
    # box flows shrunk node by node to near conservation (imbalance 1.9e4 -> 266) with fitted
    # potentials: 39-40, with −1 potentials on the smallest layer cut: 43-62; an intermediate μ
    # ladder: 46. What is kept: Gondzio's correctors in .primal_dual, 30.)
    pd = PrimalDual(P, mu_k) if PRIMAL_DUAL_START else None
    history: list[list[float]] = []
    iterations = pd_iterations = 0

    def advance(mu_c: float, rel: float = 0.25, stall: int = 0) -> bool:
        """Primal-dual steps to μ_c; on failure the primal method goes on from the last good state."""
        nonlocal pd, state, iterations, pd_iterations
        before = pd.iterations
        reached = pd.advance(mu_c, max_iter=max(min(150, max_iter - iterations), 1), rel=rel, stall=stall)
        iterations += pd.iterations - before
        pd_iterations += pd.iterations - before
        # primal-dual steps enter the history as [duality measure μ, NaN] (no Newton decrement)
        history.extend([m * P.scale, math.nan] for m in pd.trace[before:])
        if reached:
            state = pd.state()
            # newton_direction solves for potentials around an integer cut pattern, which it takes from
            # its own last potentials; a primal step after primal-dual ones takes it from theirs, not
            # from no cut (the split is exact either way; around the right cut the remainder is small)
            P.sigma = (pd.potentials()[0] < -0.5) & P.active_t
        return reached

    if pd is not None and not advance(mu_k):
        pd = None
    on_path = pd is not None and PRIMAL_DUAL_PATH  # stages checked on primal-dual iterates
    pd_ok = on_path

    def center(mu_c: float, stage_tol: float):
        """Newton steps at fixed μ until the decrement is below stage_tol. Below ``accept`` a
        decrement that stops falling is the round-off floor (≈ eps/μ: potentials of size 1 set
        flows through conductances of size 1/μ) and counts as converged."""
        nonlocal state, iterations
        best = math.inf
        stalled = 0
        freeze = False
        while True:
            step, dec, potentials = newton_direction(P, state, mu_c, freeze=freeze)
            if not freeze and on_path and dec >= 0.25 and _directional(state, step, 0.0, mu_c)[0] >= 0:
                # not a descent direction: round-off on edges of negligible flow, whose steps float64
                # potentials cannot resolve; from here on they keep their flow (laplacian.NEGLIGIBLE_FLOW)
                freeze = True
                continue
            history.append([mu_c * P.scale, dec])
            if dec <= stage_tol:
                return potentials, dec
            if dec <= accept:
                stalled = stalled + 1 if dec > 0.5 * best else 0
                if stalled >= 3:
                    return potentials, dec
            best = min(best, dec)
            if iterations >= max_iter:
                raise solver_error(
                    f"barrier max-flow did not converge in {max_iter} Newton steps at mu={mu_c * P.scale:.3g} "
                    f"(scale-free Newton decrement {dec:.3g} > {stage_tol:.3g}); see .residuals['history']",
                    {"decrement": dec, "history": history},
                )
            # inside the Dikin ellipsoid (decrement < 1/4) the full step is feasible and decreasing
            # for a self-concordant barrier; a derivative search there sees only round-off
            t = 1.0 if dec < 0.25 else _line_search(P, state, step, mu_c, dec)
            state = _take(state, step, t)
            iterations += 1

    upper = math.inf
    uncertified = 0  # stages whose duality gap 2mμ is within rtol but whose cut is not
    while True:
        if not auto and mu_k <= target:
            (nu, nus), dec = center(target, tol)
            break
        if pd_ok:  # the primal-dual iterate near μ_k stands in for the stage's centre
            (nu, nus), dec, value = pd.potentials(), math.nan, pd.value
        else:  # primal centring (where primal-dual steps stalled: re-seeded from the centre)
            (nu, nus), dec = center(mu_k, STAGE_DECREMENT)
            value = float(state[3][0])
            if on_path:
                pd.reseed(state, (nu, nus), mu_k)
        if auto:
            upper = _certificate(P, nu, nus)
            if upper - value <= 0.5 * rtol * value or 2 * P.m * mu_k <= 0.5 * rtol * value:
                (nu, nus), dec = center(mu_k, tol)
                value = float(state[3][0])
                upper = min(upper, _certificate(P, nu, nus))
                # accept only on the cut: value <= max-flow <= upper holds for any iterate,
                # while the duality gap 2mμ bounds the error only at the exact centre
                if upper - value <= rtol * value:
                    target = mu_k
                    break
                if on_path:
                    pd.reseed(state, (nu, nus), mu_k)
                if 2 * P.m * mu_k <= rtol * value:
                    uncertified += 1
                    if uncertified > UNCERTIFIED_STAGES:
                        raise solver_error(
                            f"no cut certified the flow value within rtol={rtol:g}: value {value * P.scale:.9g}, "
                            f"best cut {upper * P.scale:.9g} after {uncertified} stages down to mu="
                            f"{mu_k * P.scale:.3g}; pass a larger rtol, or a fixed mu (not certified)",
                            {"decrement": dec, "value": value * P.scale, "upper_bound": upper * P.scale,
                             "history": history},
                        )
            mu_k *= shrink
        else:
            mu_k = max(mu_k * shrink, target)
        if on_path:  # a stage's check needs μ within 2× (rel 0.25: 13 steps, not 12, at (12, 256))
            pd_ok = advance(mu_k, STAGE_REL, STAGE_STALL)
    if not auto:
        upper = _certificate(P, nu, nus)
    keep = P.cap_np > 0
    F = np.where(keep, state[0][0].cpu().numpy(), 0.0)
    fa = np.where(P.active[L], state[1][0].cpu().numpy(), 0.0)
    drift = node_imbalance(torch.from_numpy(F), *(f.cpu() for f, _ in state[1:]), L)
    conservation_before = float(max(drift[0].abs().max(), abs(drift[1]))) / max(float(state[3][0]), 1e-300)
    F, fb = repair_conservation(F, fa, keep)
    fts = float(fa.sum())
    over = np.where(keep, F - P.cap_np, -np.inf).max()
    if upper < fts * (1 - 1e-9) or over > 1e-9 * fts:  # a cut below a flow: the flow is not feasible
        raise solver_error(
            f"solution failed its feasibility check (flow value {fts * P.scale:.6g}, cut {upper * P.scale:.6g}, "
            f"capacity excess {over * P.scale:.3g})",
            {"decrement": dec, "conservation": conservation_before, "history": history},
        )
    c = P.scale
    node_flow = np.zeros((L + 1, n))
    node_flow[1:] = F.sum(axis=2) * c
    node_flow[0] = fb * c
    return FlowSolution(
        value=fts * c,
        edge_flow=F * c,
        attributions=fb * c,
        node_flow=node_flow,
        source_flow=fa * c,
        mu=target * c,
        upper_bound=max(upper, fts) * c,
        iterations=iterations,
        residuals={
            "decrement": dec,
            "conservation": conservation_before,
            "capacity": float(max(over, 0.0)),
            "history": history,
            "primal_dual_iterations": pd_iterations,
        },
        sources=src_list,
    )


def barrier_max_flow(
    C: Any,
    mu: float | None,
    sources: Sequence[int] | None = None,
    *,
    rtol: float = VALUE_RTOL,
    tol: float = 1e-9,
    max_iter: int = 400,
    device: Any = None,
    threads: int | None = None,
    retain_heap: bool = True,
) -> FlowSolution:
    """Generalized Attention Flow: the log-barrier max-flow of docs/ARCHITECTURE.md,
    section "Flows and GAF".

    C: (L, n, n) capacities, ``C[l-1][i, j]`` for the edge (l, i) -> (l−1, j), numpy or torch.
    mu: barrier weight (> 0, in the units of C), or None to pick it: μ is lowered twentyfold per
    stage until an s -> t cut (a sweep cut of the node potentials, plus the dropped edges)
    certifies the value: value ≤ max-flow value ≤ upper_bound and upper_bound − value ≤
    rtol·value. The certificate holds for the returned flow whether or not it is exactly
    centred. If no cut certifies it within a few stages after the duality gap 2·m·μ alone would,
    :class:`~xattr_lab.errors.SolverError` is raised rather than an uncertified value returned.
    With a fixed mu, ``upper_bound`` still bounds the max-flow value from above, and the value
    is within 2·m·μ of it (the duality gap at the centre, which Newton reaches to ``tol``).
    sources: top-level token indices joined to s (default: all).

    Solves  min −f_ts − μ Σ_e [log f_e + log(u_e − f_e)]  subject to flow conservation, over the
    edges: the positive entries of C, s -> (L, i) for the sources, (0, j) -> t, and t -> s, the
    last three with capacity U = sum(C). The optimum is unique; efficiency holds (sum of
    attributions = value) and at the optimum the duality gap is 2·m·μ for m edges. The smallest
    entries are left out while their total stays ≤ DROP_RELATIVE (1e-12) times the widest s -> t
    path's bottleneck (so ≤ 1e-12 of the max-flow value); they get flow 0 and their total is
    added to ``upper_bound``, which is therefore a cut of the whole graph. Capacities are
    normalised by that bottleneck, so a graph whose bottleneck edges are 1e-250 times its
    largest solves like any other.

    Edges that lie on no s -> t path can carry no flow, so no barrier point exists with them; they
    are left out and get flow 0 (well defined: their flow is 0 in every feasible flow). So are
    all-zero layers / capacities with no path: value 0, all flows 0. n = 1 is a path graph.

    Method: barrier path following (μ from the scale of the initial gap down by 20× per stage),
    the stages followed by Mehrotra primal-dual steps from the centre of every edge's box
    (:mod:`xattr_lab.graphs.primal_dual`; primal steps from a flow that lies orders of magnitude
    below the centre on most edges stall), and Newton steps on the
    equality-constrained problem centring exactly where a stage's cut nearly certifies the value
    (or at the fixed mu); each step solves the weighted graph
    Laplacian B·H⁻¹·Bᵀ by a block-tridiagonal Cholesky over layers (O(L·n³)), in float64 torch
    on ``device`` (default cpu; "cuda" runs the same code on a GPU; ``threads``: CPU threads,
    default 1, see :class:`cpu_threads`; ``retain_heap``: on CPU with glibc, keep freed
    edge vectors in the heap during the solve, :mod:`xattr_lab.graphs.heap`: 2.5× less CPU at
    (6, 1,024), more peak memory). Steps are exact line searches on the derivative. Converged when
    the scale-free Newton decrement is ≤ ``tol`` (then the relative error of every flow ≲ tol);
    otherwise :class:`~xattr_lab.errors.SolverError` with the residual history in
    ``.residuals``. ``iterations`` counts the primal-dual steps too (``residuals
    ["primal_dual_iterations"]``), and ``max_iter`` bounds them all. Raises
    :class:`~xattr_lab.errors.InputError` for bad input.
    """
    C = check_layers(C, "C")
    if mu is not None:
        try:
            mu = float(mu)
        except (TypeError, ValueError):
            raise InputError(f"mu must be a positive number (or None to choose), got {mu!r}") from None
        if not (mu > 0) or not math.isfinite(mu):
            raise InputError(f"mu must be a positive finite number, got {mu!r}; smaller mu = closer to max flow")
    src = resolve_sources(sources, C.shape[1])
    return _solve(C, mu, src, rtol=rtol, tol=tol, max_iter=max_iter, device=device, threads=threads,
                  retain_heap=retain_heap)
