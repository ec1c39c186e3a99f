"""Robustness of attributions (docs/ARCHITECTURE.md, section "Robustness"); :mod:`xattr_lab.robustness` is its
public face.

- :mod:`.metrics`: metrics over attribution maps (top-k intersection, LENS, top-k-div, Spearman, Kendall);
- :mod:`.chance`: their chance levels and chance-corrected values;
- :mod:`.text_edits`: whole-word edits, batch predictions and the top-k saliency share, shared by
  :mod:`.perturbations` (text perturbations that keep the prediction, the attribution attack) and
  :mod:`.search` (the four arms of the paired experiment, with equal query budgets);
- :mod:`.experiment`: the paired experiment (cached, resumable); :mod:`.sharded`: the same as a dataset-scale
  job (not imported here: it needs pyarrow); :mod:`.stats`: its statistics (chance-corrected means, paired
  bootstrap gaps);
- :mod:`.report`: the quick report over perturbations with Student-t intervals.
"""
from .chance import chance_corrected, chance_div_overlap, chance_overlap, window_counts
from .experiment import ARMS, PERMISSIONS, ExperimentConfig, run_experiment, run_text, word_ids
from .metrics import (kendall, lens_div_precision, lens_div_recall, lens_precision, lens_recall, neighbourhood,
                      spearman, topk_div, topk_div_intersection, topk_indices, topk_intersection)
from .perturbations import (PERTURBATIONS, Perturbation, attribution_attack, neighbour_substitution, perturb,
                            random_substitution)
from .report import method_unavailable, robustness_report
from .search import (embedding_change_norm, embedding_noise, gradient_search, neighbour_search, objective_of,
                     predicted_label, protected_positions)
from .stats import METRICS, drop_table, level_map, method_gaps, metric_frame, narrowing, paired_gaps, summarise

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
