"""Robustness metrics over attribution maps: top-k sets, LENS, top-k-div, rank correlations.

Metrics (Kamath et al. 2024, "Rethinking Robustness of Model Attributions"; docs/ARCHITECTURE.md,
section "Robustness") take two attribution maps of the same shape — 1-D token maps (n,) or 2-D
maps (rows, cols) such as images or attention matrices — as numpy arrays or torch tensors:

- ``T_k(a)``: flat indices of the k largest values of ``a``. Ties are broken by index: among equal
  values the smaller flat (row-major) index ranks first, so a constant map gives ``0..k-1``.
- ``N_w(S)``: the union of windows of width ``w`` centred on the indices in ``S``, per axis (a
  ``w x w`` square on 2-D maps), clipped at the borders: nothing wraps from the end of one row to
  the start of the next, or from the last token to the first.
- top-k intersection = |T_k(a) ∩ T_k(b)| / k
- LENS recall        = |N_w(T_k(a)) ∩ T_k(b)| / k
- LENS precision     = |T_k(a) ∩ N_w(T_k(b))| / k
- ``topk_div(a, k, w)``: greedy diverse top-k: take the best remaining index, then remove its
  whole window from the pool, until k are chosen (every pick, including the second, respects the
  windows of all earlier picks; no wrap-around).
- Div variants replace T_k by the diverse set D_k = topk_div(·, k, w):
  ``topk_div_intersection`` = |D_k(a) ∩ D_k(b)| / k, ``lens_div_recall`` = |N_w(D_k(a)) ∩ D_k(b)| / k,
  ``lens_div_precision`` = |D_k(a) ∩ N_w(D_k(b))| / k.

``w`` is an odd positive int (same width on every axis) or a tuple with one odd width per axis;
``w = 1`` makes LENS equal to top-k intersection. Bad input (different shapes, 0-D/3-D maps, NaN,
k outside 1..size, even or non-positive w) raises :class:`xattr_lab.errors.InputError`. Infinite
values are allowed and rank as the largest/smallest. Everything is vectorised: top-k is an
``argpartition`` (O(size)), windows are a separable running maximum (``scipy.ndimage``), so a
224x224 map with k = 1000 takes a few milliseconds.

This module is pure numpy/scipy. The text perturbations that keep the prediction live in
:mod:`.perturbations`, the report that tabulates these metrics over them in :mod:`.report`;
:mod:`xattr_lab.robustness` re-exports all three.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ...errors import InputError

__all__ = [
    "topk_indices", "topk_intersection", "spearman", "kendall", "neighbourhood", "lens_recall",
    "lens_precision", "topk_div", "topk_div_intersection", "lens_div_recall", "lens_div_precision",
]


# ---------------------------------------------------------------------------- input checks
def _as_map(a: Any, name: str = "a") -> np.ndarray:
    """A 1-D or 2-D float64 numpy copy of a numpy array / torch tensor / sequence; NaN raises."""
    if hasattr(a, "detach"):  # torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    array = np.asarray(a, dtype=np.float64)
    if array.ndim not in (1, 2):
        raise InputError(
            f"{name} has shape {array.shape}: robustness metrics take a 1-D token map (n,) or a 2-D map "
            "(rows, cols); reduce other axes first (e.g. sum over channels)"
        )
    if array.size == 0:
        raise InputError(f"{name} is empty: give an attribution map with at least one value")
    if np.isnan(array).any():
        raise InputError(
            f"{name} holds {int(np.isnan(array).sum())} NaN value(s): NaN cannot be ranked; "
            "replace them (e.g. np.nan_to_num) or recompute the attribution"
        )
    return array


def _as_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_map(a, "a"), _as_map(b, "b")
    if a.shape != b.shape:
        raise InputError(f"the maps must have the same shape to be compared, got {a.shape} and {b.shape}")
    return a, b


def _check_k(k: Any, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InputError(f"k must be an int number of entries, got {k!r}")
    if not 1 <= k <= size:
        raise InputError(f"k = {k} is out of range: the map has {size} entries, so pick 1 <= k <= {size}")
    return int(k)


def _check_w(w: Any, ndim: int) -> tuple[int, ...]:
    widths = tuple(w) if isinstance(w, (tuple, list)) else (w,) * ndim
    if len(widths) != ndim:
        raise InputError(f"w gives {len(widths)} window widths for a {ndim}-D map; give one int or {ndim}")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1 or width % 2 == 0:
            raise InputError(
                f"window width {width!r} must be an odd positive int (1, 3, 5, ...) so the window is centred"
            )
    return tuple(int(x) for x in widths)


# ---------------------------------------------------------------------------- core sets
def topk_indices(a: Any, k: int) -> np.ndarray:
    """Flat (row-major) indices of the k largest values of ``a``, best first; ties -> smaller index.

    a: (n,) or (rows, cols). Returns int64 (k,). O(size) via ``np.argpartition``.
    """
    a = _as_map(a)
    flat = a.ravel()
    k = _check_k(k, flat.size)
    if k == flat.size:
        chosen = np.arange(flat.size)
    else:
        # value of the k-th largest: strictly larger values are all in; ties at it fill by index
        kth = np.partition(flat, flat.size - k)[flat.size - k]
        above = np.flatnonzero(flat > kth)
        at = np.flatnonzero(flat == kth)[: k - above.size]
        chosen = np.concatenate([above, at])
    order = np.lexsort((chosen, -flat[chosen]))  # by value desc, then index asc
    return chosen[order].astype(np.int64)


def _mask_of(indices: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(int(np.prod(shape)), dtype=bool)
    mask[indices] = True
    return mask.reshape(shape)


def _dilate(mask: np.ndarray, widths: tuple[int, ...]) -> np.ndarray:
    """Union of per-axis windows around every True entry, clipped at the borders (no wrap)."""
    from scipy.ndimage import maximum_filter1d

    out = mask.astype(np.uint8)
    for axis, width in enumerate(widths):
        if width > 1:
            out = maximum_filter1d(out, size=width, axis=axis, mode="constant", cval=0)
    return out.astype(bool)


def neighbourhood(indices: Any, shape: Sequence[int] | int, w: Any) -> np.ndarray:
    """N_w(S) as a boolean mask of ``shape``: windows of width w around flat ``indices``, clipped."""
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    widths = _check_w(w, len(shape))
    indices = np.asarray(indices, dtype=np.int64).ravel()
    size = int(np.prod(shape))
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        raise InputError(f"indices must lie in 0..{size - 1} for a map of shape {shape}")
    return _dilate(_mask_of(indices, shape), widths)


def topk_intersection(a: Any, b: Any, k: int) -> float:
    """|T_k(a) ∩ T_k(b)| / k for two maps of the same shape (1-D or 2-D). In [0, 1]."""
    a, b = _as_pair(a, b)
    ta, tb = topk_indices(a, k), topk_indices(b, k)
    return float(np.isin(ta, tb, assume_unique=True).sum() / len(ta))


def _lens(first: np.ndarray, second: np.ndarray, shape: tuple[int, ...], widths: tuple[int, ...]) -> float:
    """|N_w(first) ∩ second| / |second| with first, second flat index sets of equal size k."""
    around = _dilate(_mask_of(first, shape), widths).ravel()
    return float(around[second].sum() / len(second))


def lens_recall(a: Any, b: Any, k: int, w: Any = 3) -> float:
    """LENS recall = |N_w(T_k(a)) ∩ T_k(b)| / k: how many of b's top-k lie near a's top-k. In [0, 1]."""
    a, b = _as_pair(a, b)
    widths = _check_w(w, a.ndim)
    return _lens(topk_indices(a, k), topk_indices(b, k), a.shape, widths)


def lens_precision(a: Any, b: Any, k: int, w: Any = 3) -> float:
    """LENS precision = |T_k(a) ∩ N_w(T_k(b))| / k: how many of a's top-k lie near b's top-k."""
    a, b = _as_pair(a, b)
    widths = _check_w(w, a.ndim)
    return _lens(topk_indices(b, k), topk_indices(a, k), a.shape, widths)


def topk_div(a: Any, k: int, w: Any = 3, *, fill: bool = False) -> np.ndarray:
    """Diverse top-k: flat indices (int64, (k,)) in pick order.

    Greedy: take the best index still in the pool (ties -> smaller index), add it, remove its
    window N_w({index}) (clipped at the borders, no wrap) from the pool; repeat until k are chosen.
    When the pool empties first, ``fill=False`` raises; ``fill=True`` completes the set with the
    best unchosen indices in rank order (ignoring windows), so the result always has k entries.

    Cost: one O(size log size) sort, then O(k * w^ndim) work — the loop runs over the k picks
    (inherently sequential), never over all entries.
    """
    a = _as_map(a)
    flat = a.ravel()
    k = _check_k(k, flat.size)
    widths = _check_w(w, a.ndim)
    order = np.lexsort((np.arange(flat.size), -flat))  # rank -> flat index
    rank = np.empty_like(order)
    rank[order] = np.arange(flat.size)
    free = np.ones(flat.size, dtype=bool)  # free[r]: the index of rank r is still in the pool
    halves = [width // 2 for width in widths]
    picks: list[int] = []
    cursor = 0
    while len(picks) < k:
        # next free rank at or after the cursor (cursor only moves forward: amortised O(size))
        ahead = free[cursor:]
        if not ahead.any():
            break
        cursor += int(np.argmax(ahead))
        index = int(order[cursor])
        picks.append(index)
        coords = np.unravel_index(index, a.shape)
        window = tuple(slice(max(c - h, 0), min(c + h + 1, s)) for c, h, s in zip(coords, halves, a.shape))
        blocked = np.ravel_multi_index(np.indices([sl.stop - sl.start for sl in window]).reshape(a.ndim, -1)
                                       + np.array([sl.start for sl in window])[:, None], a.shape)
        free[rank[blocked]] = False
    if len(picks) < k:
        if not fill:
            raise InputError(
                f"top-k-div ran out of entries after {len(picks)} picks: windows of width {w} cover the whole "
                f"map of shape {a.shape}. Lower k or w, or pass fill=True to complete with the best remaining entries."
            )
        chosen = np.zeros(flat.size, dtype=bool)
        chosen[picks] = True
        rest = order[~chosen[order]][: k - len(picks)]
        picks.extend(int(i) for i in rest)
    return np.asarray(picks, dtype=np.int64)


def topk_div_intersection(a: Any, b: Any, k: int, w: Any = 3, *, fill: bool = False) -> float:
    """|D_k(a) ∩ D_k(b)| / k with D_k = :func:`topk_div` (window w for diversity)."""
    a, b = _as_pair(a, b)
    da, db = topk_div(a, k, w, fill=fill), topk_div(b, k, w, fill=fill)
    return float(np.isin(da, db, assume_unique=True).sum() / k)


def lens_div_recall(a: Any, b: Any, k: int, w: Any = 3, *, fill: bool = False) -> float:
    """|N_w(D_k(a)) ∩ D_k(b)| / k: LENS recall on diverse top-k sets (same w for both)."""
    a, b = _as_pair(a, b)
    widths = _check_w(w, a.ndim)
    return _lens(topk_div(a, k, w, fill=fill), topk_div(b, k, w, fill=fill), a.shape, widths)


def lens_div_precision(a: Any, b: Any, k: int, w: Any = 3, *, fill: bool = False) -> float:
    """|D_k(a) ∩ N_w(D_k(b))| / k: LENS precision on diverse top-k sets (same w for both)."""
    a, b = _as_pair(a, b)
    widths = _check_w(w, a.ndim)
    return _lens(topk_div(b, k, w, fill=fill), topk_div(a, k, w, fill=fill), a.shape, widths)


def _rank_correlation(a: Any, b: Any, function: Callable) -> float:
    a, b = _as_pair(a, b)
    x, y = a.ravel(), b.ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # undefined for constant maps
    return float(function(x, y)[0])


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation over all entries (scipy.stats.spearmanr). NaN if a map is constant."""
    from scipy.stats import spearmanr

    return _rank_correlation(a, b, spearmanr)


def kendall(a: Any, b: Any) -> float:
    """Kendall's tau-b over all entries (scipy.stats.kendalltau). NaN if a map is constant."""
    from scipy.stats import kendalltau

    return _rank_correlation(a, b, kendalltau)

