"""``xattr_lab.circuits``: SAE circuit discovery, its SAEs, scores and ground truths, in one namespace.

The code lives in :mod:`xattr_lab.methods.circuits` (:func:`discover`),
:mod:`xattr_lab.methods.circuit_scores` (node/edge scores, the paper's metrics, baselines),
:mod:`xattr_lab.methods.sae` (the autoencoders and codes), :mod:`xattr_lab.core.capture`
(:func:`head_outputs`), :mod:`xattr_lab.core.saelens` (pretrained SAEs),
:mod:`xattr_lab.evaluation.circuit_truth` (path-patching truths, mean ablation, entropy baseline)
and :mod:`xattr_lab.evaluation.circuit_patching` (path patching); the attribution-patching circuits
(AtP, EAP, EAP-IG; ``ex.circuit(method=...)``) in :mod:`xattr_lab.methods.attribution_patching`,
:mod:`xattr_lab.methods.patching_circuits` and :mod:`xattr_lab.methods.patching_faithfulness` (MIB's CPR, CMD).
"""
from .core.capture import head_outputs
from .core.saelens import read_saelens
from .errors import InSampleWarning
from .evaluation.circuit_patching import bootstrap_ci, path_patch, prepare_runs, select_heads
from .evaluation.circuit_truth import (
    CircuitTruth, Metric, attention_entropy, head_ablation_effects, logit_difference, patching_truth, sharding,
    truth_mask,
)
from .evaluation.circuit_reference import ioi_truth, toy_truth
from .methods.circuit_scores import (
    edge_pairs_roc_auc, edge_roc_auc, edge_scores, edge_truth, jsd_scores, mean_difference_scores, node_scores,
    node_scores_by, norm_scores, paper_edge_node_scores, roc_auc, threshold_circuit, unique_codes, variance_scores,
)
from .methods.attribution_patching import PATCHING_METHODS
from .methods.circuits import RECIPE_DEFAULTS, discover, discover_sae
from .methods.patching_circuits import directed_edge_truth, discover_patching, patching_scores, valid_edges
from .methods.patching_faithfulness import MIB_PERCENTAGES, faithfulness_curve
from .methods.sae import PaperSparseAutoencoder, PretrainedSAE, SparseAutoencoder, codes, train_sae

__all__ = [
    "CircuitTruth", "InSampleWarning", "MIB_PERCENTAGES", "Metric", "PATCHING_METHODS", "directed_edge_truth",
    "discover_patching", "discover_sae", "faithfulness_curve", "patching_scores", "valid_edges", "PaperSparseAutoencoder", "PretrainedSAE", "RECIPE_DEFAULTS",
    "SparseAutoencoder", "attention_entropy", "bootstrap_ci", "codes", "discover", "edge_pairs_roc_auc",
    "edge_roc_auc", "edge_scores", "edge_truth", "head_ablation_effects", "head_outputs", "ioi_truth", "jsd_scores",
    "logit_difference", "mean_difference_scores", "node_scores", "node_scores_by", "norm_scores",
    "paper_edge_node_scores", "patching_truth", "path_patch", "prepare_runs", "read_saelens", "roc_auc",
    "select_heads", "sharding", "threshold_circuit", "toy_truth", "train_sae", "truth_mask", "unique_codes", "variance_scores",
]
