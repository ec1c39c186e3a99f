"""``xattr_lab.robustness``: robustness of attributions, one public module over the evaluation layer.

The code lives in the package :mod:`xattr_lab.evaluation.robustness`:

- metrics over attribution maps (top-k intersection, LENS, top-k-div, Spearman, Kendall):
  :mod:`xattr_lab.evaluation.robustness.metrics`;
- their chance levels and chance-corrected values (``chance_overlap``, ``chance_corrected``,
  ``chance_div_overlap``): :mod:`xattr_lab.evaluation.robustness.chance`;
- text perturbations that keep the prediction, and the attribution attack:
  :mod:`xattr_lab.evaluation.robustness.perturbations`;
- the four arms of the paired experiment with equal query budgets (neighbour-random, random
  search, gradient attack, dense embedding noise): :mod:`xattr_lab.evaluation.robustness.search`;
- the paired experiment (cached, resumable) and its statistics (chance-corrected means, paired
  bootstrap gaps): :mod:`xattr_lab.evaluation.robustness.experiment`,
  :mod:`xattr_lab.evaluation.robustness.stats`;
- the quick report over perturbations with Student-t intervals: :mod:`xattr_lab.evaluation.robustness.report`.

See docs/ARCHITECTURE.md, section "Robustness".
"""

from .evaluation.robustness.chance import chance_corrected, chance_div_overlap, chance_overlap, window_counts
from .evaluation.robustness.experiment import ARMS, PERMISSIONS, ExperimentConfig, run_experiment, run_text, word_ids
from .evaluation.robustness.metrics import (
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
from .evaluation.robustness.perturbations import (
    PERTURBATIONS,
    Perturbation,
    attribution_attack,
    neighbour_substitution,
    perturb,
    random_substitution,
)
from .evaluation.robustness.report import method_unavailable, robustness_report
from .evaluation.robustness.search import (
    embedding_change_norm,
    embedding_noise,
    gradient_search,
    neighbour_search,
    objective_of,
    predicted_label,
    protected_positions,
)
from .evaluation.robustness.stats import (METRICS, drop_table, level_map, method_gaps, metric_frame, narrowing,
                                          paired_gaps, summarise)

__all__ = [
    "topk_indices", "topk_intersection", "spearman", "kendall", "neighbourhood", "lens_recall",
    "lens_precision", "topk_div", "topk_div_intersection", "lens_div_recall", "lens_div_precision",
    "chance_overlap", "chance_corrected", "chance_div_overlap", "window_counts",
    "Perturbation", "random_substitution", "neighbour_substitution", "attribution_attack", "perturb",
    "robustness_report", "method_unavailable", "PERTURBATIONS",
    "neighbour_search", "gradient_search", "embedding_noise", "protected_positions", "objective_of",
    "embedding_change_norm", "predicted_label",
    "ExperimentConfig", "ARMS", "PERMISSIONS", "run_text", "run_experiment", "word_ids",
    "level_map", "metric_frame", "drop_table", "summarise", "paired_gaps", "narrowing", "method_gaps", "METRICS",
]
