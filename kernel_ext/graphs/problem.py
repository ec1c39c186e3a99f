"""The barrier max-flow problem of GAF on one device: pruned edges, normalised capacities,
a strictly feasible start, and the per-edge barrier terms (torch float64, CPU or GPU).

docs/ARCHITECTURE.md, section "Flows and GAF".
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import SolverError
from .checks import DROP_RELATIVE

__all__ = ["DROP_RELATIVE"]


def solver_error(message: str, residuals: dict[str, Any]) -> SolverError:
    """A :class:`~xattr_lab.errors.SolverError` carrying the solver's ``residuals`` (its history)."""
    err = SolverError(message)
    err.residuals = residuals
    return err


def _widest_path(C: np.ndarray, sources: np.ndarray) -> float:
    """Bottleneck capacity of the widest s -> t path (max over paths of the smallest capacity on
    it): a lower bound on the max-flow value, 0 when no path exists. O(L·n²)."""
    best = np.where(sources, np.inf, 0.0)  # widest s -> (l, i) bottleneck, from the top down
    for k in range(C.shape[0] - 1, -1, -1):
        best = np.minimum(best[:, None], C[k]).max(axis=0)
    return float(best.max())


def _dropped(C: np.ndarray, budget: float) -> np.ndarray:
    """Mask of the smallest positive capacities whose total stays <= ``budget`` (smallest first)."""
    drop = np.zeros(C.shape, dtype=bool)
    candidates = np.flatnonzero((C > 0) & (C <= budget))
    if candidates.size:
        values = C.reshape(-1)[candidates]
        order = np.argsort(values, kind="stable")
        count = int(np.searchsorted(np.cumsum(values[order]), budget, side="right"))
        drop.reshape(-1)[candidates[order[:count]]] = True
    return drop


class Problem:
    """The pruned, normalised barrier problem on one device (float64 tensors).

    Edges: internal (L, n, n) masked by ``keep``; source edges s -> (L, i) masked by ``src``;
    sink edges (0, j) -> t masked by ``snk``; the back edge t -> s. Capacities are divided by
    ``scale`` = W, the bottleneck of the widest s -> t path (a lower bound on the max-flow
    value), so the flow value is of order 1 whatever the spread of C: a bottleneck of edges
    1e-250 times the largest solves like any other. The barrier weight is mu / scale.

    The smallest edges are left out while their total capacity stays <= DROP_RELATIVE·W (so
    <= DROP_RELATIVE times the max-flow value); ``dropped`` holds that total (normalised), which
    every cut certificate adds. Edges on no s -> t path of what is left are pruned too (they
    carry no flow in any feasible flow of the kept graph).
    """

    def __init__(self, C: np.ndarray, sources: np.ndarray, device: torch.device):
        L, n, _ = C.shape
        self.L, self.n, self.device = L, n, device
        self.scale = _widest_path(C, sources)
        self.m = 0
        if self.scale <= 0:  # no s -> t path: every feasible flow is 0
            self.active = np.zeros((L + 1, n), dtype=bool)
            self.snk = torch.zeros(n, dtype=torch.bool)
            self.dropped = 0.0
            return
        cap = C / self.scale
        self.U = float(C.sum()) / self.scale
        drop = _dropped(cap, DROP_RELATIVE)
        self.dropped = float(cap[drop].sum())
        present = (cap > 0) & ~drop
        # prune to edges on some s -> t path: barrier terms need 0 < f < u on every edge
        reach = np.zeros((L + 1, n), dtype=bool)
        reach[L] = sources
        for k in range(L - 1, -1, -1):  # layer k+1 -> k
            reach[k] = (reach[k + 1][:, None] & present[k]).any(axis=0)
        to_t = np.zeros((L + 1, n), dtype=bool)
        to_t[0] = True
        for k in range(L):
            to_t[k + 1] = (present[k] & to_t[k][None, :]).any(axis=1)
        active = reach & to_t
        keep = present & active[1:, :, None] & active[:-1, None, :]
        self.active = active
        self.m = int(keep.sum()) + int(active[L].sum()) + int(active[0].sum()) + 1
        t = lambda a, dt=torch.float64: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
        self.keep = t(keep, torch.bool)
        self.keepf = t(keep)
        self.u = t(np.where(keep, cap, 1.0))  # 1.0 placeholders keep masked arithmetic finite
        self.src = t(active[L], torch.bool)
        self.snk = t(active[0], torch.bool)
        self.srcf, self.snkf = t(active[L]), t(active[0])
        self.cap_np = np.where(keep, cap, 0.0)
        #: current source side (integer part of the potentials), see laplacian.newton_direction
        self.sigma = torch.zeros((L + 1, n), dtype=torch.bool, device=device)
        self.active_t = t(active, torch.bool)

    @property
    def empty(self) -> bool:
        return not bool(self.snk.any())


def initial_flow(P: Problem):
    """A strictly feasible circulation: push 1 unit per active source, split each node's
    inflow over its out-edges in proportion to capacity, then scale so every edge is at most
    half full."""
    keep, u = P.keep, P.u
    capk = torch.where(keep, u, torch.zeros_like(u))
    x = P.src.to(torch.float64)
    fa = x.clone()
    F = torch.zeros_like(u)
    for k in range(P.L - 1, -1, -1):
        rowsum = capk[k].sum(dim=1)
        share = torch.where(rowsum > 0, x / torch.where(rowsum > 0, rowsum, torch.ones_like(rowsum)), torch.zeros_like(x))
        F[k] = share[:, None] * capk[k]
        x = F[k].sum(dim=0)
    fb = x
    fts = fa.sum()
    ratio = torch.max(torch.where(keep, F / u, torch.zeros_like(F)).max(), torch.stack([fa.max(), fb.max(), fts]).max() / P.U)
    theta = 0.5 / ratio
    F, fa, fb, fts = F * theta, fa * theta, fb * theta, fts * theta
    one = torch.ones_like(u)
    F = torch.where(keep, F, 0.5 * one)  # placeholders keep masked arithmetic finite
    fa = torch.where(P.src, fa, torch.full_like(fa, 0.5 * P.U))
    fb = torch.where(P.snk, fb, torch.full_like(fb, 0.5 * P.U))
    return ((F, u - F), (fa, P.U - fa), (fb, P.U - fb), (fts, P.U - fts))


def edge_terms(f, slack, mu, mask):
    """Barrier gradient g, Hessian h and inverse Hessian w = 1/h per edge (w = 0 where masked).

    Slacks u − f are carried as their own variables: near a saturated edge, u − f computed
    from f would keep only eps·u/(u − f) relative accuracy, a floor on the Newton decrement.
    ``mask`` is None or a float 0/1 tensor; masked entries hold finite placeholders, so g and h
    stay finite there and w·g = 0 (w is set to 0 there, not computed as 0/h: a placeholder of
    size U ≫ 1 makes h underflow to 0).
    """
    inv_lo = 1.0 / f
    inv_hi = 1.0 / slack
    g = mu * (inv_hi - inv_lo)
    h = mu * (inv_lo * inv_lo + inv_hi * inv_hi)
    w = 1.0 / h if mask is None else torch.where(mask > 0, 1.0 / h, torch.zeros_like(h))
    return g, h, w


def node_imbalance(F, fa, fb, fts, L):
    """Out-flow minus in-flow at every node: (L+1, n) layers and s (t is implied)."""
    out = torch.zeros((L + 1, F.shape[1]), dtype=F.dtype, device=F.device)
    out[1:] += F.sum(dim=2)  # out-edges of layers 1..L
    out[:-1] -= F.sum(dim=1)  # in-edges of layers 0..L-1
    out[L] -= fa
    out[0] += fb
    s = fa.sum() - fts
    return out, s


def edge_masks(P):
    return (P.keepf, P.srcf, P.snkf, None)
