"""Chance levels of the robustness metrics: what two independent random rankings would score.

Two attribution maps that share nothing still overlap by chance, and the chance level grows with k
and with the LENS window w: on a 20-token map, two random top-3 sets meet in 3/20 = 15 % of their
entries, and a random top-3 lands in a random top-3's width-3 neighbourhood about 40 % of the time.
Comparing top-k intersection with LENS, or short texts with long ones, without removing that floor
compares chance levels (docs/ARCHITECTURE.md, section "Robustness").

- :func:`chance_overlap` ``(n, k, w=1)``: the expected top-k intersection (w = 1) or LENS recall =
  LENS precision (w > 1) of two independent uniformly random rankings of n entries. Exact:
  T_k of a uniformly random ranking is a uniformly random k-subset, so each of b's k entries lies in
  N_w(T_k(a)) with probability E|N_w(T_k(a))| / n, and entry j lies in N_w(A) unless none of the
  m_j positions whose window holds j is in A:

      chance = (1/n) Σ_j [1 − C(n − m_j, k) / C(n, k)],   m_j = size of the clipped window at j.

  w = 1 gives k/n (the hypergeometric mean). ``n`` may be a shape (rows, cols) for 2-D maps.
- :func:`chance_corrected` ``(observed, n, k, w=1)``: (observed − chance) / (1 − chance), the
  Cohen's-kappa form: 0 at chance, 1 at perfect agreement, negative below chance; NaN where chance
  is 1 (k = n, or windows covering the map: agreement is forced and says nothing). ``scaled=False``
  gives the plain difference observed − chance. The plain difference subtracts the same number
  from every arm of a paired comparison, so it cannot change a gap between arms; the scaled form
  puts metrics with different floors (top-k vs LENS, w = 1 vs 5) on one 0-to-1 scale, which is
  what a claim "LENS narrows the gap" needs. The choice of the kappa form is ours.
- :func:`chance_div_overlap` ``(n, k, w)``: the same for the diverse top-k sets (``topk_div``,
  ``fill=True``) of 1-D maps, ``kind="intersection"`` or ``"recall"`` (LENS on diverse sets). No
  closed form: by simulation (20,000 seeded random rankings, standard error < 0.005), cached.
- Kendall's τ and Spearman's ρ of two independent random rankings have expectation 0: they are
  already chance-corrected.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from ...errors import InputError

__all__ = ["chance_overlap", "chance_corrected", "chance_div_overlap", "window_counts"]


def _shape(n: Any) -> tuple[int, ...]:
    shape = (n,) if np.isscalar(n) else tuple(n)
    if not shape or len(shape) > 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in shape):
        raise InputError(f"n must be a positive int (map length) or a shape (rows, cols), got {n!r}")
    return tuple(int(s) for s in shape)


def _widths(w: Any, ndim: int) -> tuple[int, ...]:
    widths = tuple(w) if isinstance(w, (tuple, list)) else (w,) * ndim
    if len(widths) != ndim or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1 or x % 2 == 0
                                  for x in widths):
        raise InputError(f"w must be an odd positive int, or one per axis ({ndim}), got {w!r}")
    return tuple(int(x) for x in widths)


def _k(k: Any, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= size:
        raise InputError(f"k must be an int in 1..{size} (the map has {size} entries), got {k!r}")
    return int(k)


def window_counts(n: Any, w: Any = 1) -> np.ndarray:
    """m_j for every entry j: how many entries' clipped width-w windows contain j (= window size at j)."""
    shape = _shape(n)
    widths = _widths(w, len(shape))
    counts = np.ones(shape, dtype=np.int64)
    for axis, (size, width) in enumerate(zip(shape, widths)):
        j = np.arange(size)
        half = width // 2
        per_axis = np.minimum(j, half) + np.minimum(size - 1 - j, half) + 1
        counts = counts * per_axis.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return counts.ravel()


def _miss_probability(size: int, m: np.ndarray, k: int) -> np.ndarray:
    """C(size − m, k) / C(size, k) = Π_{t<k} (size − m − t)/(size − t), 0 when size − m < k."""
    out = np.ones(m.shape, dtype=np.float64)
    for t in range(k):
        out *= np.clip(size - m - t, 0, None) / (size - t)
    return out


def chance_overlap(n: Any, k: int, w: Any = 1) -> float:
    """Expected top-k intersection (w = 1) / LENS recall = precision (w) of two random rankings.

    n: map length (int) or shape (rows, cols). Exact (see the module docstring); k/n when w = 1.
    """
    shape = _shape(n)
    size = int(np.prod(shape))
    k = _k(k, size)
    m = window_counts(shape, w)
    return float(np.mean(1.0 - _miss_probability(size, m, k)))


def chance_corrected(observed: Any, n: Any, k: int, w: Any = 1, *, scaled: bool = True) -> Any:
    """(observed − chance) / (1 − chance) with chance = :func:`chance_overlap` (n, k, w).

    ``scaled=False``: observed − chance. observed may be a float or an array (one n, k, w for all).
    Returns NaN where chance = 1 (scaled form): the agreement is forced.
    """
    chance = chance_overlap(n, k, w)
    observed_array = np.asarray(observed, dtype=np.float64)
    if not scaled:
        result = observed_array - chance
    elif chance >= 1.0 - 1e-12:
        result = np.full_like(observed_array, np.nan)
    else:
        result = (observed_array - chance) / (1.0 - chance)
    return float(result) if result.ndim == 0 else result


def _simulate_div(n: int, k: int, w: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """P(j ∈ D_k), P(j ∈ N_w(D_k)) for the diverse top-k of a uniformly random ranking of n entries.

    Vectorised over draws; the greedy rule of ``robustness.topk_div`` with ``fill=True``: the best
    free entry, then its window leaves the pool; when the pool is empty, the best unchosen entry.
    """
    rng = np.random.default_rng(seed)
    values = rng.random((draws, n))
    half = w // 2
    free = np.ones((draws, n), dtype=bool)
    chosen = np.zeros((draws, n), dtype=bool)
    rows = np.arange(draws)
    for _ in range(k):
        pool = np.where(free.any(1, keepdims=True), free, ~chosen)
        pick = np.where(pool, values, -1.0).argmax(1)
        chosen[rows, pick] = True
        for offset in range(-half, half + 1):
            at = pick + offset
            ok = (at >= 0) & (at < n)
            free[rows[ok], at[ok]] = False
    near = chosen.copy()
    for offset in range(1, half + 1):
        near[:, offset:] |= chosen[:, :-offset]
        near[:, :-offset] |= chosen[:, offset:]
    return chosen.mean(0), near.mean(0)


@lru_cache(maxsize=4096)
def _div_probabilities(n: int, k: int, w: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return _simulate_div(n, k, w, draws, seed)


def chance_div_overlap(n: int, k: int, w: int = 3, kind: str = "intersection", *, draws: int = 20000,
                       seed: int = 0) -> float:
    """Expected ``topk_div_intersection`` (kind="intersection") or ``lens_div_recall`` (kind="recall",
    = ``lens_div_precision`` in expectation) of two independent random rankings of a 1-D map of n
    entries, both with diversity window w. By seeded simulation: E = Σ_j p_j·p_j / k (intersection)
    or Σ_j q_j·p_j / k (recall), with p_j = P(j ∈ D_k), q_j = P(j ∈ N_w(D_k)) estimated from
    ``draws`` random rankings; a and b are independent, so the product is exact given p and q.
    """
    size = _shape(n)
    if len(size) != 1:
        raise InputError("chance_div_overlap covers 1-D maps (token or word maps); give n as an int")
    k = _k(k, size[0])
    (w,) = _widths(w, 1)
    if kind not in ("intersection", "recall"):
        raise InputError(f"kind must be 'intersection' or 'recall', got {kind!r}")
    if w == 1:
        return chance_overlap(size[0], k, 1)
    p, q = _div_probabilities(size[0], k, w, int(draws), int(seed))
    return float((p * p).sum() / k) if kind == "intersection" else float((q * p).sum() / k)


def chance_table(lengths: Sequence[int], ks: Sequence[int], ws: Sequence[int]) -> dict[tuple[str, int, int, int], float]:
    """{(metric, n, k, w): chance} for every length, k ≤ n and w, metric in ("topk", "lens", "div")."""
    table: dict[tuple[str, int, int, int], float] = {}
    for n in sorted(set(int(x) for x in lengths)):
        for k in ks:
            if k > n:
                continue
            for w in ws:
                table[("lens", n, k, w)] = chance_overlap(n, k, w)
                table[("div", n, k, w)] = chance_div_overlap(n, k, w)
            table[("topk", n, k, 1)] = chance_overlap(n, k, 1)
    return table


def corrected_value(observed: float, chance: float) -> float:
    """(observed − chance)/(1 − chance) for one value; NaN when chance is 1 or observed is NaN."""
    if observed is None or math.isnan(observed) or chance >= 1.0 - 1e-12:
        return float("nan")
    return (observed - chance) / (1.0 - chance)
