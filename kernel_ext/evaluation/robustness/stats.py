"""Metrics, chance levels and paired bootstrap intervals over the records of the paired experiment.

Maps (docs/ARCHITECTURE.md, section "Robustness"): token level = |scores| of the non-special
tokens; word level = |sum of the signed scores of a word's tokens| per word (the tokenizer's words;
our choice). Per kept perturbation and level: top-k intersection ("topk", w = 1), LENS recall and
precision and top-k-div intersection ("lens_recall", "lens_precision", "topk_div") for w > 1 (at
w = 1 all three equal top-k intersection), and Kendall's τ-b over the whole map ("kendall").

Chance (:mod:`.chance`): each value is stored with the chance level of its map length, k and w.
Chance-corrected cell values are pooled over texts (ours): (mean observed − mean chance) / (1 − mean chance),
kappa-style, so texts where chance is near 1 do not blow up a per-text ratio; Kendall's chance is 0, so it is
its own correction. A paired gap between two arms on the same texts is mean(observed_a − observed_b) raw,
divided by (1 − mean chance) corrected. "Narrowing" of a gap by a metric M at the same k is the corrected
top-k gap minus the corrected M gap: positive = M shows a smaller gap than top-k. Methods are compared the
same way: the paired difference between two methods' values of one cell on the snippets both ran.

Intervals: percentile bootstrap over texts, one set of resamples per method shared by every cell,
so all intervals of a method are paired (B = 2,000 by default, seeded).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..bootstrap import benjamini_hochberg, bootstrap_p_values, holm
from .chance import chance_div_overlap, chance_overlap
from .metrics import kendall, lens_precision, lens_recall, topk_div_intersection, topk_intersection

__all__ = ["level_map", "metric_frame", "drop_table", "summarise", "paired_gaps", "narrowing", "method_gaps",
           "METRICS"]

METRICS = ("topk", "lens_recall", "lens_precision", "topk_div", "kendall")
_CELL = ["permission", "arm", "level", "metric", "k", "w"]


def level_map(record: dict, scores: Sequence[float], level: str) -> np.ndarray:
    """The 1-D map compared at ``level`` ("token" or "word") for one text's scores."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    special = np.asarray(record["special"], dtype=bool)
    if level == "token":
        return np.abs(scores[~special])
    words = record["word_ids"]
    order = sorted({w for w in words if w is not None})
    totals = np.zeros(len(order))
    where = {w: j for j, w in enumerate(order)}
    for i, w in enumerate(words):
        if w is not None:
            totals[where[w]] += scores[i]
    return np.abs(totals)


def _values(a: np.ndarray, b: np.ndarray, ks: Sequence[int], ws: Sequence[int]) -> Iterable[tuple]:
    """(metric, k, w, observed, chance) for one pair of maps."""
    n = a.size
    tau = kendall(a, b) if n >= 2 else float("nan")
    yield "kendall", 0, 0, tau, 0.0
    for k in ks:
        if k >= n:  # k = n: every metric is 1 by force
            continue
        yield "topk", k, 1, topk_intersection(a, b, k), chance_overlap(n, k, 1)
        for w in ws:
            if w == 1:
                continue
            lens = chance_overlap(n, k, w)
            yield "lens_recall", k, w, lens_recall(a, b, k, w), lens
            yield "lens_precision", k, w, lens_precision(a, b, k, w), lens
            yield "topk_div", k, w, topk_div_intersection(a, b, k, w, fill=True), chance_div_overlap(n, k, w)


def metric_frame(records: Sequence[dict], ks: Sequence[int] = (1, 2, 3, 5, 8), ws: Sequence[int] = (1, 3, 5),
                 levels: Sequence[str] = ("token", "word")):
    """Long DataFrame: one row per (method, text, permission, arm, level, metric, k, w) of a kept arm,
    with ``observed``, ``chance`` and the map length ``n``."""
    import pandas as pd

    rows = []
    for record in records:
        for level in levels:
            a = level_map(record, record["original"], level)
            for permission, arms in record["arms"].items():
                for arm, result in arms.items():
                    if not result.get("kept"):
                        continue
                    b = level_map(record, result["scores"], level)
                    for metric, k, w, observed, chance in _values(a, b, ks, ws):
                        rows.append((record["method"], record["index"], permission, arm, level, metric, k, w,
                                     observed, chance, a.size))
    return pd.DataFrame(rows, columns=["method", "text", *_CELL, "observed", "chance", "n"])


def drop_table(records: Sequence[dict]):
    """Per method, permission and arm: texts run, kept, share dropped, mean words changed and queries,
    and the reasons for drops."""
    import pandas as pd

    cells: dict[tuple, dict[str, Any]] = {}
    for record in records:
        for permission, arms in record["arms"].items():
            for arm, result in arms.items():
                cell = cells.setdefault((record["method"], permission, arm),
                                        {"run": 0, "kept": 0, "changed": [], "queries": [], "seconds": [], "reasons": {}})
                cell["run"] += 1
                cell["seconds"].append(result.get("seconds", 0.0))
                if result.get("kept"):
                    cell["kept"] += 1
                    cell["changed"].append(len(result["positions"]) if arm != "noise" else 0)
                    cell["queries"].append(result.get("queries", 0))
                else:
                    reason = result.get("reason") or "?"
                    cell["reasons"][reason] = cell["reasons"].get(reason, 0) + 1
    rows = []
    for (method, permission, arm), cell in cells.items():
        rows.append({"method": method, "permission": permission, "arm": arm, "run": cell["run"], "kept": cell["kept"],
                     "dropped": 1 - cell["kept"] / cell["run"] if cell["run"] else float("nan"),
                     "words_changed": float(np.mean(cell["changed"])) if cell["changed"] else float("nan"),
                     "queries": float(np.mean(cell["queries"])) if cell["queries"] else float("nan"),
                     "seconds": float(np.mean(cell["seconds"])),
                     "reasons": "; ".join(f"{r}: {c}" for r, c in sorted(cell["reasons"].items()))})
    return pd.DataFrame(rows)


def _resamples(size: int, draws: int, seed: int) -> np.ndarray:
    """(draws, size) counts of each text in each bootstrap resample (multinomial)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(size, np.full(size, 1.0 / size), size=draws).astype(np.float64)


def _wide(frame, method: str):
    """observed and chance as (texts, cells) matrices (NaN where missing) for one method, and the cells."""
    part = frame[frame["method"] == method]
    indexed = part.set_index(["text", *_CELL])
    observed = indexed["observed"].unstack(_CELL).sort_index(axis=1)
    chance = indexed["chance"].unstack(_CELL).reindex(index=observed.index, columns=observed.columns)
    return observed, chance


def _pooled(weights: np.ndarray, obs: np.ndarray, ch: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted means of observed and chance over masked texts: weights (R, T), obs/ch/mask (T, C)."""
    count = weights @ mask
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_obs = (weights @ np.where(mask, obs, 0.0)) / count
        mean_ch = (weights @ np.where(mask, ch, 0.0)) / count
    return mean_obs, mean_ch, count


def _corrected(mean_obs: np.ndarray, mean_ch: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean_ch < 1 - 1e-12, (mean_obs - mean_ch) / (1 - mean_ch), np.nan)


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanpercentile(samples, 2.5, axis=0), np.nanpercentile(samples, 97.5, axis=0)


def summarise(frame, draws: int = 2000, seed: int = 0):
    """One row per (method, permission, arm, level, metric, k, w): n texts, raw mean, chance, corrected,
    each mean with a 95 % percentile bootstrap interval."""
    import pandas as pd

    out = []
    for method in frame["method"].unique():
        observed, chance = _wide(frame, method)
        obs, ch = observed.to_numpy(), chance.to_numpy()
        mask = ~np.isnan(obs)
        full = np.ones((1, obs.shape[0]))
        weights = _resamples(obs.shape[0], draws, seed)
        point_obs, point_ch, count = _pooled(full, obs, ch, mask)
        boot_obs, boot_ch, _ = _pooled(weights, obs, ch, mask)
        raw_lo, raw_hi = _interval(boot_obs)
        corr = _corrected(point_obs, point_ch)[0]
        corr_lo, corr_hi = _interval(_corrected(boot_obs, boot_ch))
        table = pd.DataFrame(list(observed.columns), columns=_CELL)
        table.insert(0, "method", method)
        table = table.assign(n=count[0].astype(int), raw=point_obs[0], raw_lo=raw_lo, raw_hi=raw_hi,
                             chance=point_ch[0], corrected=corr, corrected_lo=corr_lo, corrected_hi=corr_hi)
        out.append(table)
    return pd.concat(out, ignore_index=True)


def _gap_samples(observed, chance, weights, first: str, second: str, metric_cells: list[tuple]):
    """Paired gap samples (raw, corrected) for arm ``first`` − arm ``second`` over cells without the arm."""
    cols_a = [(p, first, *rest) for p, *rest in metric_cells]
    cols_b = [(p, second, *rest) for p, *rest in metric_cells]
    a = observed.reindex(columns=cols_a).to_numpy()
    b = observed.reindex(columns=cols_b).to_numpy()
    return _paired_difference(weights, a, b, chance.reindex(columns=cols_a).to_numpy())


def _paired_difference(weights: np.ndarray, a: np.ndarray, b: np.ndarray, ch: np.ndarray):
    """Pooled paired difference of ``a`` − ``b`` (T, C) over texts where both are present, raw and
    divided by (1 − pooled chance of ``a``); each (R, C) for the R weight rows, and the counts."""
    mask = ~np.isnan(a) & ~np.isnan(b)
    diff, _, count = _pooled(weights, a - b, ch, mask)
    _, mean_ch, _ = _pooled(weights, a, ch, mask)
    with np.errstate(invalid="ignore", divide="ignore"):
        corrected = np.where(mean_ch < 1 - 1e-12, diff / (1 - mean_ch), np.nan)
    return diff, corrected, count


def paired_gaps(frame, pairs: Sequence[tuple[str, str]] = (("neighbour", "attack"), ("search", "attack"),
                                                             ("noise", "attack"), ("neighbour", "search")),
                draws: int = 2000, seed: int = 0):
    """One row per (method, arm pair, permission, level, metric, k, w): the paired gap first − second
    (raw and chance-corrected) on texts where both arms were kept, with bootstrap intervals."""
    import pandas as pd

    out = []
    for method in frame["method"].unique():
        observed, chance = _wide(frame, method)
        cells = sorted({(p, lv, m, k, w) for p, _, lv, m, k, w in observed.columns})
        weights = np.vstack([np.ones((1, observed.shape[0])), _resamples(observed.shape[0], draws, seed)])
        for first, second in pairs:
            raw, corr, count = _gap_samples(observed, chance, weights, first, second, cells)
            raw_lo, raw_hi = _interval(raw[1:])
            corr_lo, corr_hi = _interval(corr[1:])
            table = pd.DataFrame(cells, columns=["permission", "level", "metric", "k", "w"])
            table.insert(0, "pair", f"{first} − {second}")
            table.insert(0, "method", method)
            out.append(table.assign(n=count[0].astype(int), gap=raw[0], gap_lo=raw_lo, gap_hi=raw_hi,
                                    gap_corrected=corr[0], gap_corrected_lo=corr_lo, gap_corrected_hi=corr_hi))
    return pd.concat(out, ignore_index=True)


def narrowing(frame, pairs: Sequence[tuple[str, str]] = (("neighbour", "attack"), ("search", "attack")),
              metrics: Sequence[str] = ("lens_recall", "lens_precision", "topk_div"), draws: int = 2000, seed: int = 0):
    """Does metric M show a smaller gap between two arms than top-k intersection at the same k?

    One row per (method, pair, permission, level, metric, k, w): corrected top-k gap − corrected M gap
    (and the same raw), paired over texts where both arms were kept; > 0 means M narrows the gap.
    """
    import pandas as pd

    out = []
    for method in frame["method"].unique():
        observed, chance = _wide(frame, method)
        cells = sorted({(p, lv, m, k, w) for p, _, lv, m, k, w in observed.columns if m in metrics})
        topk_cells = [(p, lv, "topk", k, 1) for p, lv, _, k, _ in cells]
        weights = np.vstack([np.ones((1, observed.shape[0])), _resamples(observed.shape[0], draws, seed)])
        for first, second in pairs:
            raw_m, corr_m, count = _gap_samples(observed, chance, weights, first, second, cells)
            raw_t, corr_t, _ = _gap_samples(observed, chance, weights, first, second, topk_cells)
            narrowed, narrowed_raw = corr_t - corr_m, raw_t - raw_m
            lo, hi = _interval(narrowed[1:])
            raw_lo, raw_hi = _interval(narrowed_raw[1:])
            p = bootstrap_p_values(narrowed[1:])
            table = pd.DataFrame(cells, columns=["permission", "level", "metric", "k", "w"])
            table.insert(0, "pair", f"{first} − {second}")
            table.insert(0, "method", method)
            out.append(table.assign(n=count[0].astype(int), topk_gap_corrected=corr_t[0], gap_corrected=corr_m[0],
                                    narrowed=narrowed[0], narrowed_lo=lo, narrowed_hi=hi, narrowed_raw=narrowed_raw[0],
                                    narrowed_raw_lo=raw_lo, narrowed_raw_hi=raw_hi, narrowed_p=p))
    return adjust_family(pd.concat(out, ignore_index=True), "narrowed_p", by="metric")


def adjust_family(table, column: str, by: str | None = None):
    """``table`` with ``<column>_holm`` and ``<column>_bh``: Holm and Benjamini–Hochberg adjusted p-values over
    every row read together (one family per value of ``by``, e.g. per metric: LENS recall's 320 narrowing cells
    of the Results page are one family)."""
    table = table.copy()
    groups = [table.index] if by is None else [g.index for _, g in table.groupby(by, sort=False)]
    for suffix in ("holm", "bh"):
        table[f"{column}_{suffix}"] = np.nan
    for index in groups:
        p = table.loc[index, column].to_numpy(dtype=np.float64)
        ok = ~np.isnan(p)
        holm_p = np.full(p.shape, np.nan)
        holm_p[ok] = holm(p[ok])
        table.loc[index, f"{column}_holm"] = holm_p
        table.loc[index, f"{column}_bh"] = benjamini_hochberg(p)
    return table


def method_gaps(frame, pairs: Sequence[tuple[str, str]] = (("ig", "sig"), ("sig", "gaf"), ("gaf", "attention")),
                draws: int = 2000, seed: int = 0):
    """Methods compared on the same snippets: one row per (method pair, permission, arm, level, metric,
    k, w) with the paired difference first − second, raw and chance-corrected, over the texts where
    both methods kept that arm, and percentile-bootstrap intervals over those texts (resampled jointly).

    Both methods' maps of a text have the same length, so they share the chance level and the
    corrected difference is mean(observed_first − observed_second) / (1 − mean chance): the
    difference of the two pooled corrected values. The search and attack arms perturb each method's
    own map, so a difference there compares robustness to an attack aimed at that method.
    Pairs with a method absent from ``frame`` are skipped.
    """
    import pandas as pd

    out = []
    present = set(frame["method"].unique())
    for first, second in pairs:
        if first not in present or second not in present:
            continue
        obs_a, ch_a = _wide(frame, first)
        obs_b, _ = _wide(frame, second)
        texts, cells = obs_a.index.intersection(obs_b.index), obs_a.columns.intersection(obs_b.columns)
        a, b = (o.reindex(index=texts, columns=cells).to_numpy() for o in (obs_a, obs_b))
        weights = np.vstack([np.ones((1, len(texts))), _resamples(len(texts), draws, seed)])
        raw, corr, count = _paired_difference(weights, a, b, ch_a.reindex(index=texts, columns=cells).to_numpy())
        raw_lo, raw_hi = _interval(raw[1:])
        corr_lo, corr_hi = _interval(corr[1:])
        table = pd.DataFrame(list(cells), columns=_CELL)
        table.insert(0, "pair", f"{first} − {second}")
        out.append(table.assign(n=count[0].astype(int), raw=raw[0], raw_lo=raw_lo, raw_hi=raw_hi,
                                corrected=corr[0], corrected_lo=corr_lo, corrected_hi=corr_hi))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
