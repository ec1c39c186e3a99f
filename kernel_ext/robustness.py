"""``xattr_lab.robustness``: robustness of attributions, one public module over three layers.

- metrics over attribution maps (top-k intersection, LENS, top-k-div, Spearman, Kendall):
  :mod:`xattr_lab.evaluation.robustness`;
- text perturbations that keep the prediction, and the attribution attack:
  :mod:`xattr_lab.evaluation.perturbations`;
- the report that tabulates the metrics over perturbations with confidence intervals:
  :mod:`xattr_lab.evaluation.robustness_report`.

See docs/ARCHITECTURE.md, section "Robustness".
"""
from __future__ import annotations

from .evaluation.perturbations import (
    PERTURBATIONS,
    Perturbation,
    attribution_attack,
    neighbour_substitution,
    perturb,
    random_substitution,
)
from .evaluation.robustness import (
    kendall,
    lens_div_precision,
    lens_div_recall,
    lens_precision,
    lens_recall,
    neighbourhood,
    spearman,
    topk_div,
    topk_div_intersection,
    topk_indices,
    topk_intersection,
)
from .evaluation.robustness_report import method_unavailable, robustness_report

__all__ = [
    "topk_indices", "topk_intersection", "spearman", "kendall", "neighbourhood", "lens_recall",
    "lens_precision", "topk_div", "topk_div_intersection", "lens_div_recall", "lens_div_precision",
    "Perturbation", "random_substitution", "neighbour_substitution", "attribution_attack", "perturb",
    "robustness_report", "method_unavailable", "PERTURBATIONS",
]
