"""The robustness report: attribution metrics under prediction-preserving perturbations, with CIs.

:func:`robustness_report` runs the perturbations of :mod:`.perturbations` over texts and methods and
tabulates the metrics of :mod:`.metrics` with 95% Student-t confidence intervals (docs/ARCHITECTURE.md,
section "Robustness").
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from ...errors import InputError
from .metrics import lens_precision, lens_recall, spearman, topk_intersection
from .perturbations import PERTURBATIONS, attribution_attack, perturb
from .text_edits import rank_scores

__all__ = ["robustness_report", "method_unavailable"]


def _mean_ci(values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)
             ) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval clipped to ``bounds`` (the metric's range); NaN
    bounds for fewer than 2 values."""
    from scipy.stats import t as student

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = float(student.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


_UNAVAILABLE = (ImportError, NotImplementedError)


def method_unavailable(method: str) -> str | None:
    """Why ``ex.attribute(..., method=method)`` cannot run in this install, or None when it can.

    Checks that the method's family module (from the method registry) imports and binds it.
    """
    from ...methods import registry

    if method not in registry.ATTRIBUTION_METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {list(registry.ATTRIBUTION_METHODS)}")
    try:
        registry.function(method)
    except ImportError as error:
        return f"unavailable: {registry.spec(method).module} cannot be imported ({error})"
    except KeyError:
        return f"unavailable: {registry.spec(method).module} does not bind {method!r} (not implemented yet)"
    return None


def robustness_report(ex, texts: Sequence[str] | Sequence[tuple[str, Any]],
                      methods: Sequence[str] = ("ig", "sig", "gaf"),
                      perturbations: Sequence[str] = ("random", "neighbour", "attack"),
                      k: int = 3, w: int = 3, budget: int = 2, seed: int = 0, progress: bool = True,
                      method_options: dict[str, dict[str, Any]] | None = None,
                      attack_options: dict[str, Any] | None = None, rank_by: str = "abs"):
    """Attribution robustness under prediction-preserving perturbations -> pandas DataFrame.

    For each text (a str, or a (text, label) pair — the label is ignored), each perturbation and
    each method: attribute the original and the perturbed text with ``ex.attribute(text,
    method=m)``, drop special tokens (substitution keeps positions aligned), rank by |score|
    (``rank_by="signed"`` for signed), and compute top-k intersection, LENS recall/precision
    (window w) and Spearman correlation. ``k`` is capped at the number of non-special tokens.
    "random"/"neighbour" perturbations are drawn once per text (seed + text index) and shared by
    all methods; "attack" is run against each method. Texts where no word could be substituted
    while keeping the prediction are counted in ``skipped``.

    Columns: method, perturbation, n (texts scored), skipped, changed (mean tokens changed),
    topk_intersection, lens_recall, lens_precision, spearman — each with ``_lo``/``_hi`` 95%
    Student-t bounds, clipped to the metric's range — and note (why a method was left out: e.g. not implemented yet).
    """
    import pandas as pd

    method_options = method_options or {}
    attack_options = attack_options or {}
    texts = [t[0] if isinstance(t, (tuple, list)) else t for t in texts]
    if not texts:
        raise InputError("give at least one text")
    for kind in perturbations:
        if kind not in PERTURBATIONS:
            raise InputError(f"unknown perturbation {kind!r}; choose from {list(PERTURBATIONS)}")
    iterator: Iterable = enumerate(texts)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(texts), desc="robustness")
    metrics = ("topk_intersection", "lens_recall", "lens_precision", "spearman")
    cells = {(m, p): {name: [] for name in metrics} | {"changed": [], "skipped": 0} for m in methods for p in perturbations}
    notes: dict[str, str] = {}
    for method in methods:
        reason = method_unavailable(method)
        if reason:
            notes[method] = reason
    for index, text in iterator:
        shared = {kind: None for kind in perturbations if kind != "attack"}
        for kind in shared:
            shared[kind] = perturb(ex, text, kind, budget=budget, seed=seed + index)
        for method in methods:
            if method in notes:
                continue
            options = method_options.get(method, {})
            try:
                base = ex.attribute(text, method=method, **options)
            except _UNAVAILABLE as error:
                notes[method] = f"unavailable: {type(error).__name__}: {error}"
                continue
            special = np.asarray(ex.encode(text).special_mask)
            a = rank_scores(np.asarray(base.scores)[~special], rank_by)
            for kind in perturbations:
                cell = cells[(method, kind)]
                if kind == "attack":
                    pert = attribution_attack(ex, text, method=method, budget=budget, seed=seed + index, k=k,
                                              rank_by=rank_by, original=base, **attack_options, **options)
                else:
                    pert = shared[kind]
                if not pert.positions:
                    cell["skipped"] += 1
                    continue
                if kind == "attack":
                    after_scores = pert.info["scores"]
                else:
                    after_scores = ex.attribute(pert.text, method=method, **options).scores
                b = rank_scores(np.asarray(after_scores)[~special], rank_by)
                k_eff = min(k, a.size)
                cell["topk_intersection"].append(topk_intersection(a, b, k_eff))
                cell["lens_recall"].append(lens_recall(a, b, k_eff, w))
                cell["lens_precision"].append(lens_precision(a, b, k_eff, w))
                cell["spearman"].append(spearman(a, b))
                cell["changed"].append(pert.changed)
    rows = []
    for (method, kind), cell in cells.items():
        row: dict[str, Any] = {"method": method, "perturbation": kind, "n": len(cell["changed"]),
                               "skipped": cell["skipped"],
                               "changed": float(np.mean(cell["changed"])) if cell["changed"] else float("nan")}
        for name in metrics:
            bounds = (-1.0, 1.0) if name == "spearman" else (0.0, 1.0)
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = _mean_ci(cell[name], bounds=bounds)
        row["note"] = notes.get(method, "")
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update({"k": k, "w": w, "budget": budget, "seed": seed, "texts": len(texts), "model": ex.name,
                        "rank_by": rank_by})
    return table
