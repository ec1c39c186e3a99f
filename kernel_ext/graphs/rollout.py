"""Residual mixing and attention rollout (Abnar & Zuidema 2020), numpy only.

docs/ARCHITECTURE.md, section "Rollout and attention flow". This module imports no torch, so the
torch-free widgets can compute rollouts for display.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_layers, check_residual


def mix_residual(A: Any, residual: float | None = 0.5) -> np.ndarray:
    """Â_l = r·I + (1−r)·A_l with rows renormalised. (L, n, n) -> (L, n, n).

    docs/ARCHITECTURE.md, section "Rollout and attention flow". Rows that are all zero (masked
    tokens) stay zero when r = 0, and become the identity row otherwise. ``residual=None`` means
    r = 0 (then only the renormalisation applies).
    """
    A = check_layers(A, "A")
    r = check_residual(residual)
    n = A.shape[1]
    mixed = r * np.eye(n)[None] + (1.0 - r) * A
    sums = mixed.sum(axis=2, keepdims=True)
    return np.divide(mixed, sums, out=np.zeros_like(mixed), where=sums > 0)


def mix_residual_capacity(C: Any, residual: float | None) -> np.ndarray:
    """Residual mixing for capacities whose rows need not sum to 1 (GF, AGF).

    Ĉ_l[i] = (1−r)·C_l[i] + r·(Σ_j C_l[i, j])·e_i: a fraction r of each row's total moves to the
    self edge, row totals are kept. For row-stochastic AF this equals :func:`mix_residual`.
    ``residual=None`` (or 0) returns C unchanged.
    """
    C = check_layers(C, "C")
    r = check_residual(residual)
    if r == 0.0:
        return C
    n = C.shape[1]
    totals = C.sum(axis=2)
    return (1.0 - r) * C + r * totals[:, :, None] * np.eye(n)[None]


def rollout(A: Any, residual: float | None = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020).

    A: (L, n, n) head-averaged attention, ``A[l-1][i, j]`` = query i -> key j in layer l.
    Returns R (L, n, n) float64 with R_1 = Â_1 and R_l = Â_l · R_{l−1}; ``R[-1][i, j]`` is how
    much of top token i's rolled-out attention lands on input token j.
    """
    mixed = mix_residual(A, residual)
    out = np.empty_like(mixed)
    out[0] = mixed[0]
    for layer in range(1, mixed.shape[0]):
        out[layer] = mixed[layer] @ out[layer - 1]
    return out
