"""Cut certificates and flow clean-up for the barrier max-flow (numpy only).

:func:`sweep_cut` turns node potentials into an s-t cut whose capacity bounds the max-flow value
from above; :func:`repair_conservation` makes a Newton iterate conserve flow exactly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .problem import Problem


def sweep_cut(P: "Problem", nu: np.ndarray, nus: float) -> float:
    """Best s-t cut among the level sets of node potentials (normalised units).

    Nodes sorted by potential; cut k puts the k lowest on the source side. An edge a -> b is cut
    for k in (rank a, rank b]; summed with a difference array. Valid for any potentials: every
    sweep cut is an s-t cut, so its capacity bounds the max-flow value from above.
    """
    L, n = P.L, P.n
    active = P.active
    ids = -np.ones((L + 1, n), dtype=np.int64)
    count = int(active.sum())
    ids[active] = np.arange(count)
    s_id, t_id = count, count + 1
    pot = np.concatenate([nu[active], [nus, 0.0]])
    order = np.argsort(pot, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    tails, heads, caps = [], [], []
    keep = P.cap_np > 0
    for k in range(L):
        i, j = np.nonzero(keep[k])
        tails.append(ids[k + 1][i])
        heads.append(ids[k][j])
        caps.append(P.cap_np[k][i, j])
    top = np.nonzero(active[L])[0]
    bottom = np.nonzero(active[0])[0]
    tails += [np.full(top.size, s_id), ids[0][bottom]]
    heads += [ids[L][top], np.full(bottom.size, t_id)]
    caps += [np.full(top.size, P.U), np.full(bottom.size, P.U)]
    tails, heads, caps = (np.concatenate(x) for x in (tails, heads, caps))
    ra, rb = rank[tails], rank[heads]
    fwd = ra < rb
    size = order.size + 2
    diff = np.bincount(ra[fwd] + 1, weights=caps[fwd], minlength=size) - np.bincount(
        rb[fwd] + 1, weights=caps[fwd], minlength=size
    )
    cut = np.cumsum(diff)[: order.size + 1]  # cut[k]: k lowest nodes on the source side
    lo, hi = rank[s_id] + 1, rank[t_id]
    if lo > hi:  # s above t in potential: fall back to the trivial cut {s}
        return float(caps[tails == s_id].sum())
    return float(cut[lo : hi + 1].min())


def repair_conservation(F, fa, keep):
    """Make conservation exact (to round-off) by rescaling each node's out-edges top-down so its
    out-flow equals its in-flow. Newton iterates satisfy conservation only to the accuracy of the
    Laplacian solve (≈ eps·cond); the rescaling moves each flow by that relative amount."""
    F = F.copy()
    inflow = fa
    for k in range(F.shape[0] - 1, -1, -1):
        out = F[k].sum(axis=1)
        ratio = np.divide(inflow, out, out=np.zeros_like(out), where=out > 0)
        F[k] *= ratio[:, None]
        F[k] = np.where(keep[k], F[k], 0.0)
        inflow = F[k].sum(axis=0)
    return F, inflow
