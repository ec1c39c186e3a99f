"""Attention flow (Abnar & Zuidema 2020): all-pairs max-flow values, by scipy's integer max-flow.

docs/ARCHITECTURE.md, section "Rollout and attention flow". numpy and scipy only.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .rollout import mix_residual


def _layered_csr(C: np.ndarray, scale: float):
    """Integer CSR graph of the layered DAG: node (l, i) is l*n + i; capacities floor(scale*C)."""
    import scipy.sparse as sp

    L, n, _ = C.shape
    rows, cols, caps = [], [], []
    for k in range(L):  # edges (k+1, i) -> (k, j)
        ints = np.floor(C[k] * scale).astype(np.int64)
        i, j = np.nonzero(ints)
        rows.append((k + 1) * n + i)
        cols.append(k * n + j)
        caps.append(ints[i, j])
    rows, cols, caps = (np.concatenate(x) for x in (rows, cols, caps))
    N = (L + 1) * n
    graph = sp.csr_matrix((caps.astype(np.int32), (rows, cols)), shape=(N, N))
    graph.sort_indices()
    return graph


def attention_flow(
    A: Any, residual: float | None = 0.5, *, sources: Sequence[int] | None = None, return_bound: bool = False
):
    """Attention flow (Abnar & Zuidema 2020): all-pairs max-flow values of the layered graph.

    A: (L, n, n) head-averaged attention; the graph has edges (l, i) -> (l−1, j) with capacity
    Â_l[i, j] (:func:`~xattr_lab.graphs.rollout.mix_residual`). Returns F (n, n) float64,
    F[i, j] = max-flow value from top node (L, i) to input node (0, j) (rows not in ``sources``
    are left 0 when given).

    Method: one scipy ``maximum_flow`` (Dinic) per pair on one shared integer graph with
    capacities floor(S·Â), S = (2^31 − 1) / (1 + the largest out-capacity of a top node) so no
    flow value overflows int32. Flooring lowers every capacity by less than 1/S, so
    F'[i, j] / S ≤ F[i, j] ≤ (F'[i, j] + |K|) / S, where |K| is the number of edges of the min cut
    found (certified per pair from the residual graph; |K| ≤ L·n² in general). With
    ``return_bound=True`` the function also returns that per-pair bound (n, n): the exact value
    lies in [F, F + bound]. For row-stochastic Â, S ≈ 1.07e9, so the bound is ~|K|·1e-9.
    """
    from scipy.sparse.csgraph import maximum_flow

    mixed = mix_residual(A, residual)
    L, n, _ = mixed.shape
    top_out = mixed[-1].sum(axis=1).max() if n else 0.0
    scale = float((2**31 - 1) // (1 + math.ceil(top_out)) - 1)
    graph = _layered_csr(mixed, scale)
    rows = range(n) if sources is None else [int(s) for s in sources]
    values = np.zeros((n, n))
    bound = np.zeros((n, n))
    indptr, indices = graph.indptr, graph.indices
    for i in rows:
        src = L * n + i
        for j in range(n):
            res = maximum_flow(graph, src, j)
            values[i, j] = res.flow_value / scale
            if return_bound:
                bound[i, j] = _cut_edge_count(graph, res.flow, src, indptr, indices) / scale
    return (values, bound) if return_bound else values


def _cut_edge_count(graph, flow, source: int, indptr, indices) -> int:
    """Edges leaving the source side of the min cut (reachable set in the residual graph)."""
    from scipy.sparse.csgraph import breadth_first_order

    residual = graph - flow  # forward residual; flow holds -f on reverse entries (which adds back f)
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    side = np.zeros(graph.shape[0], dtype=bool)
    side[reach] = True
    tails = np.repeat(np.arange(graph.shape[0]), np.diff(indptr))
    return int(np.count_nonzero(side[tails] & ~side[indices]))
