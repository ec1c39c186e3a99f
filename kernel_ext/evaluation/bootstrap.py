"""Paired bootstrap confidence intervals and tests for per-text scores of several methods.

Every method is scored on the same texts, so methods are compared **paired**: one bootstrap
replicate draws n texts with replacement (seeded) and takes every method's mean over the *same*
draw. Hence

- the 95% interval of a method's mean is the 2.5th and 97.5th percentile of its replicate means
  (percentile bootstrap);
- the interval of a difference a - b is the percentile interval of the replicate differences,
  which keeps the correlation between methods on the same text (a much narrower interval than two
  separate intervals would suggest when methods agree on which texts are hard);
- the two-sided p-value of "mean a = mean b" is 2 · min(#(d* ≤ 0) + 1, #(d* ≥ 0) + 1) / (B + 1),
  capped at 1 (the smallest level at which the percentile interval excludes 0; never 0);
- multiple comparisons: :func:`holm` (Holm 1979, step-down, controls the family-wise error rate);
  :func:`pairwise` applies it within each family it is given (here: all pairs of one metric);
  :func:`benjamini_hochberg` (1995, controls the false discovery rate; ``scipy.stats.false_discovery_control``);
- equivalence: :func:`tost` (two one-sided tests at level alpha, margin stated by the caller): the difference is
  declared within ±margin when the (1 − 2·alpha) percentile interval lies inside it. An interval that merely
  contains 0 is "no significant difference", not equivalence.

Pure numpy, no model.
"""
from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

#: replicates and seed of every interval in the README
REPLICATES = 10_000
SEED = 0
LEVEL = 0.95


def resample_indices(n: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """(replicates, n) indices drawn with replacement; the same draw pairs every method."""
    if n < 1:
        raise ValueError("the bootstrap needs at least one text")
    return np.random.default_rng(seed).integers(0, n, size=(replicates, n))


def replicate_means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Means over each replicate's draw: (methods, texts) -> (methods, replicates)."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if not np.all(np.isfinite(values)):
        raise ValueError("per-text values contain NaN or inf")
    out = np.empty((values.shape[0], indices.shape[0]))
    for row, method_values in enumerate(values):
        # chunked so (replicates, n) floats never exist at once for large n
        for start in range(0, indices.shape[0], 2000):
            out[row, start:start + 2000] = method_values[indices[start:start + 2000]].mean(axis=1)
    return out


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of a 1-D array of replicate statistics."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the mean difference is 0" (never 0, at most 1)."""
    differences = np.asarray(differences)
    count = differences.size
    below, above = int(np.sum(differences <= 0)), int(np.sum(differences >= 0))
    return float(min(1.0, 2 * (min(below, above) + 1) / (count + 1)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (same order as given): step-down, monotone, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def bootstrap_p_values(replicates: np.ndarray) -> np.ndarray:
    """:func:`p_value` of each column of (replicates, cells), NaN replicates ignored: (cells,) float64."""
    r = np.asarray(replicates, dtype=np.float64)
    valid = ~np.isnan(r)
    below, above = np.sum(valid & (r <= 0), axis=0), np.sum(valid & (r >= 0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (valid.sum(axis=0) + 1))
    return np.where(valid.any(axis=0), p, np.nan)


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (same order as given; NaN stays NaN), by scipy."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


def tost(replicates: np.ndarray, margin: float, alpha: float = 0.05) -> dict[str, float | bool]:
    """Bootstrap two one-sided tests of |difference| < ``margin`` from replicate differences (1-D).

    Returns low, high (the (1 − 2·alpha) percentile interval) and equivalent (that interval inside
    (−margin, margin)): equivalence at level alpha (Schuirmann 1987, percentile-bootstrap version)."""
    if margin <= 0:
        raise ValueError("the equivalence margin must be > 0")
    low, high = percentile_interval(np.asarray(replicates, dtype=np.float64), 1 - 2 * alpha)
    return {"low": low, "high": high, "margin": float(margin), "equivalent": bool(-margin < low and high < margin)}


def mean_intervals(values: np.ndarray, replicates: int = REPLICATES, seed: int = SEED,
                   level: float = LEVEL) -> list[dict[str, float]]:
    """For each row of (methods, texts): mean, ci_low, ci_high (percentile bootstrap), n."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    means = replicate_means(values, resample_indices(values.shape[1], replicates, seed))
    rows = []
    for observed, boot in zip(values.mean(axis=1), means):
        low, high = percentile_interval(boot, level)
        rows.append({"mean": float(observed), "ci_low": low, "ci_high": high, "n": int(values.shape[1])})
    return rows


def pairwise(values: np.ndarray, names: Sequence[str], replicates: int = REPLICATES, seed: int = SEED,
             level: float = LEVEL, alpha: float = 0.05) -> list[dict]:
    """Every pair (a, b) of rows of (methods, texts): the paired difference mean(a) - mean(b).

    Returns one dict per pair: a, b, difference, ci_low, ci_high, p (unadjusted), p_holm (Holm
    over all pairs given), significant (p_holm < alpha), n.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if len(names) != values.shape[0]:
        raise ValueError(f"{len(names)} names for {values.shape[0]} rows of values")
    means = replicate_means(values, resample_indices(values.shape[1], replicates, seed))
    observed = values.mean(axis=1)
    rows = []
    for i, j in combinations(range(len(names)), 2):
        boot = means[i] - means[j]
        low, high = percentile_interval(boot, level)
        rows.append({"a": names[i], "b": names[j], "difference": float(observed[i] - observed[j]),
                     "ci_low": low, "ci_high": high, "p": p_value(boot), "n": int(values.shape[1])})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = float(adjusted)
        row["significant"] = bool(adjusted < alpha)
    return rows
