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


def _solver_error(message: str, residuals: dict[str, Any]) -> SolverError:
    """A :class:`~xattr_lab.errors.SolverError` carrying the solver's ``residuals`` (its history)."""
    err = SolverError(message)
    err.residuals = residuals
    return err


class _Problem:
    """The pruned, normalised barrier problem on one device (float64 tensors).

    Edges: internal (L, n, n) masked by ``keep``; source edges s -> (L, i) masked by ``src``;
    sink edges (0, j) -> t masked by ``snk``; the back edge t -> s. Capacities are divided by
    ``cmax`` (so internal ones are <= 1); the barrier weight is mu / cmax.
    """

    def __init__(self, C: np.ndarray, sources: np.ndarray, device: torch.device):
        L, n, _ = C.shape
        self.L, self.n, self.device = L, n, device
        self.cmax = float(C.max())
        self.U = float(C.sum()) / self.cmax
        cap = C / self.cmax
        present = cap > DROP_RELATIVE
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
        #: current source side (integer part of the potentials), see laplacian._newton_direction
        self.sigma = torch.zeros((L + 1, n), dtype=torch.bool, device=device)
        self.active_t = t(active, torch.bool)

    @property
    def empty(self) -> bool:
        return not bool(self.snk.any())


def _initial_flow(P: _Problem):
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


def _edge_terms(f, slack, mu, mask):
    """Barrier gradient g, Hessian h and inverse Hessian w = 1/h per edge (w = 0 where masked).

    Slacks u − f are carried as their own variables: near a saturated edge, u − f computed
    from f would keep only eps·u/(u − f) relative accuracy, a floor on the Newton decrement.
    ``mask`` is None or a float 0/1 tensor; masked entries hold finite placeholders, so g and h
    stay finite there and w·g = 0.
    """
    inv_lo = 1.0 / f
    inv_hi = 1.0 / slack
    g = mu * (inv_hi - inv_lo)
    h = mu * (inv_lo * inv_lo + inv_hi * inv_hi)
    w = 1.0 / h if mask is None else mask / h
    return g, h, w


def _imbalance(F, fa, fb, fts, L):
    """Out-flow minus in-flow at every node: (L+1, n) layers and s (t is implied)."""
    out = torch.zeros((L + 1, F.shape[1]), dtype=F.dtype, device=F.device)
    out[1:] += F.sum(dim=2)  # out-edges of layers 1..L
    out[:-1] -= F.sum(dim=1)  # in-edges of layers 0..L-1
    out[L] -= fa
    out[0] += fb
    s = fa.sum() - fts
    return out, s


def _masks(P):
    return (P.keepf, P.srcf, P.snkf, None)
