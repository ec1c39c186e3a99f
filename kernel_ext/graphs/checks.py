"""Input checks shared by the attention-graph algorithms (numpy only: no torch import).

Orientation everywhere in :mod:`xattr_lab.graphs`: ``C[l-1][i, j]`` (and ``A[l-1][i, j]``) is the
capacity of the edge (l, i) -> (l-1, j) of the layered graph, i.e. query token i at layer l takes
from key token j one layer below (transformers' attention orientation). Layer 0 holds the input
tokens, layer L the top. docs/ARCHITECTURE.md, sections "Rollout and attention flow" and
"Flows and GAF", give the definitions.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ..errors import InputError

#: the barrier solver leaves out the smallest capacities while their total stays at or below
#: this fraction of the widest s -> t path's bottleneck (a lower bound on the max-flow value),
#: and adds that total to its cut certificate (docs/ARCHITECTURE.md, section "Flows and GAF")
DROP_RELATIVE = 1e-12


def as_float64(x: Any, name: str) -> np.ndarray:
    """A float64 numpy array from a numpy array, a nested list, or a torch tensor (any device).

    torch is never imported here: a tensor can only be passed when the caller has imported it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a numeric array: {err}") from None
    return array


def check_layers(C: Any, name: str = "C") -> np.ndarray:
    """(L, n, n) finite, non-negative float64 array, L >= 1, n >= 1 — or a clear InputError."""
    array = as_float64(C, name)
    if array.ndim != 3 or array.shape[1] != array.shape[2]:
        raise InputError(
            f"{name} must have shape (L, n, n) (layers, query tokens, key tokens); got {array.shape}. "
            "Average attention over heads first (attn.mean(axis=1)) if you hold (L, H, n, n)."
        )
    if array.shape[0] == 0:
        raise InputError(f"{name} has L = 0 layers: a flow needs at least one layer of edges")
    if array.shape[1] == 0:
        raise InputError(f"{name} has n = 0 tokens: give at least one token")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{name} holds {bad} non-finite entries (NaN/inf); capacities must be finite")
    if np.any(array < 0):
        raise InputError(
            f"{name} holds negative entries (min {array.min():.3g}); capacities must be >= 0 "
            "(use information_tensor, which applies ReLU, for gradient-based capacities)"
        )
    return array


def check_residual(residual: float | None) -> float:
    if residual is None:
        return 0.0
    r = float(residual)
    if not 0.0 <= r <= 1.0 or not math.isfinite(r):
        raise InputError(f"residual must be in [0, 1] (or None for 0), got {residual!r}")
    return r


def resolve_sources(sources: Any, n: int) -> np.ndarray:
    """Boolean mask (n,) of the top-level tokens joined to s: None = all; a bool mask; indices."""
    mask = np.zeros(n, dtype=bool)
    if sources is None:
        mask[:] = True
        return mask
    idx = np.atleast_1d(np.asarray(sources))
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise InputError(f"a boolean sources mask must have shape ({n},), got {idx.shape}")
        return idx.copy()
    if idx.size == 0:
        raise InputError("sources is empty: give at least one top-level token index (or None for all)")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"sources must be token indices (ints), got {idx.dtype}")
    if idx.min() < -n or idx.max() >= n:
        raise InputError(f"sources {idx.tolist()} out of range for n = {n} tokens")
    mask[idx % n] = True
    return mask
