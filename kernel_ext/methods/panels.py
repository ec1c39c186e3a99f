"""Nested composite quadrature for IG's ``steps="auto"``: panels whose nodes
are reused when a panel is halved, and a stop on the paper's signed completeness check.

docs/ARCHITECTURE.md, section "Gradients". :func:`quadrature.integrate_panels` halves Gauss-Legendre
panels: none of a parent's nodes is a node of its halves, so every split throws away the parent's
gradient rows, and each split needs one more forward pass for F at the midpoint. Here a panel [a, b]
carries the closed Newton-Cotes rule on ``nodes`` equally spaced points a, a + h/(nodes-1), ..., b
(5 points: Boole's rule, exact for degree 5). Halving such a panel keeps (nodes+1)/2 of each half's
nodes from the parent (a, the parent's interior points, m, b), so a split of a 5-node panel costs 4
new gradient rows instead of 8, and F at every node comes from the gradient pass itself (no extra
forward pass). Panel endpoints are dyadic fractions, so node positions are exact in float64 and a
node is found again by its alpha.

Per panel the completeness check is the one of :func:`quadrature.integrate_panels`:
e = integral over [a, b] - (F(b) - F(a)), kept with its sign. The e of a path's panels sum to
(scores summed) - (F(1) - F(0)), i.e. to the error the result reports, so a path is done when

- the unsigned sum of |e| is within ``tol_abs`` (every piece passes: as integrate_panels), or
- with ``guard``: the signed sum is within ``tol_abs`` (the paper's completeness check itself) and
  the unsigned sum within ``guard * tol_abs`` (the guard: errors of opposite sign may cancel in
  the total, but not by more than that factor).

Otherwise the panels with the largest |e| are halved, worst first, until those left alone sum to at
most half of the unsigned sum (or ``tol_abs / 2`` without ``guard``), within ``max_nodes`` distinct
nodes per path and panels wider than ``quadrature.MIN_PANEL_WIDTH``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError
from .quadrature import MIN_PANEL_WIDTH, Panels
from .pacing import Pace, timed_round

#: nodes of one nested panel (Boole's rule): IG's steps="auto" default
NESTED_NODES = 5
#: how far |e| summed over a path's panels may exceed tol_abs when the signed total passes
CANCELLATION_GUARD = 4.0


def newton_cotes(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed Newton-Cotes rule on [0, 1] -> (alphas (nodes,), weights (nodes,)), float64.

    ``nodes`` odd and in [3, 9] (so that halving a panel reuses its nodes, and the weights stay
    positive): 3 = Simpson, 5 = Boole. Weights solve sum_i w_i t_i^k = 1/(k+1), k < nodes.
    """
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or not 3 <= nodes <= 9 or nodes % 2 == 0:
        raise InputError(f"nested panels need an odd number of nodes from 3 to 9 (5: Boole's rule), not {nodes!r}")
    t = np.linspace(0.0, 1.0, int(nodes))
    weights = np.linalg.solve(np.vander(t, increasing=True).T, 1.0 / np.arange(1, nodes + 1))
    return t, weights


@dataclass
class NestedPanels(Panels):
    """:class:`~.quadrature.Panels` plus ``error_sum`` (P,): the unsigned sum of the panels' |e|
    (``nodes`` counts distinct nodes, which here equals the gradient rows of the path)."""

    error_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))


def integrate_nested(
    f_start: np.ndarray, f_end: np.ndarray, evaluate: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    *, tol_abs: np.ndarray, nodes: int = NESTED_NODES, max_nodes: int = 1024, guard: float | None = CANCELLATION_GUARD,
    pace: Pace | None = None,
) -> NestedPanels:
    """Integrate each path p's integrand over alpha in [0, 1] with nested panels (module docstring).

    evaluate(paths (R,), alphas (R,)) -> (integrand (R, k), F (R,)): one gradient row per point gives
    both. f_start / f_end (P,): F at alpha = 0 and 1 (used there instead of the rows' F, so the
    signed errors sum exactly to the reported completeness error). tol_abs (P,): absolute tolerance.
    ``pace``: as in integrate_panels (the first round always completes; a later one that would end
    past ``max_seconds`` is not run or is dropped, keeping the panels it would have split).
    """
    t, w = newton_cotes(nodes)
    count = len(f_start)
    known: list[dict[float, tuple[np.ndarray, float]]] = [{} for _ in range(count)]
    ends = [{0.0: float(f_start[p]), 1.0: float(f_end[p])} for p in range(count)]
    done: list[list[list]] = [[] for _ in range(count)]  # per path: [a, b, integral (k,), signed e]
    todo, parents = [(p, 0.0, 1.0) for p in range(count)], []
    rows, limited, stopped = 0, set(), None
    while todo:
        need = sorted({(p, a + (b - a) * s) for p, a, b in todo for s in t} - {(p, a) for p in range(count)
                                                                              for a in known[p]})
        if need:
            ran, gf = timed_round(pace, len(need), bool(parents),
                                  lambda: evaluate(np.array([p for p, _ in need]), np.array([a for _, a in need])))
            if not ran:
                stopped = "max_seconds"
                break
            g, f = gf
            g = np.asarray(g, dtype=np.float64).reshape(len(need), -1)
            for (p, a), row, value in zip(need, g, np.asarray(f, dtype=np.float64)):
                known[p][a] = (row, float(value))
            rows += len(need)
        for p, panel in parents:  # the halves are done: the panels they replace go
            done[p] = [q for q in done[p] if q is not panel]
        for p, a, b in todo:
            integral = (b - a) * (w @ np.stack([known[p][a + (b - a) * s][0] for s in t]))
            fa, fb = (ends[p].get(x, known[p].get(x, (None, np.nan))[1]) for x in (a, b))
            done[p].append([a, b, integral, float(integral.sum()) - (fb - fa)])
        todo, parents = [], []
        for p, panels in enumerate(done):
            chosen = _splits(panels, float(tol_abs[p]), guard, len(known[p]), nodes, max_nodes)
            if chosen is None:
                continue
            if not chosen:
                limited.add(p)
            for j in chosen:
                a, b = panels[j][:2]
                m = (a + b) / 2
                todo += [(p, a, m), (p, m, b)]
                parents.append((p, panels[j]))
    sums = np.array([sum(abs(q[3]) for q in panels) for panels in done])
    if stopped is not None:
        limited |= {p for p, panels in enumerate(done) if not _passes(panels, float(tol_abs[p]), guard)}
    integral = np.stack([np.sum([q[2] for q in panels], axis=0) for panels in done])
    return NestedPanels(integral, np.array([len(k) for k in known]), rows, sorted(limited), stopped, sums)


def _passes(panels: list[list], tol: float, guard: float | None) -> bool:
    """Whether a path's panels pass: unsigned sum within tol, or signed within tol and unsigned within guard·tol."""
    unsigned, signed = sum(abs(q[3]) for q in panels), sum(q[3] for q in panels)
    return unsigned <= tol or (guard is not None and abs(signed) <= tol and unsigned <= guard * tol)


def _splits(panels: list[list], tol: float, guard: float | None, active: int, nodes: int,
            max_nodes: int) -> list[int] | None:
    """Indices of the panels to halve (worst |e| first); None when the path passes, [] when it
    cannot go on (node cap or panel width)."""
    if _passes(panels, tol, guard):
        return None
    unsigned = sum(abs(q[3]) for q in panels)
    target = tol / 2 if guard is None else unsigned / 2
    chosen, left = [], unsigned
    for j in sorted(range(len(panels)), key=lambda j: -abs(panels[j][3])):
        if left <= target:
            break
        if (panels[j][1] - panels[j][0]) / 2 >= MIN_PANEL_WIDTH and active + nodes - 1 <= max_nodes:
            chosen.append(j)
            active += nodes - 1
            left -= abs(panels[j][3])
    return chosen
