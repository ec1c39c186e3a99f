"""``xattr_lab.circuits``: SAE circuit discovery, its SAE, and the ablation ground truth, in one namespace.

The code lives in :mod:`xattr_lab.methods.circuits` (scores, :func:`discover`),
:mod:`xattr_lab.methods.sae` (the autoencoder and codes), :mod:`xattr_lab.core.capture`
(:func:`head_outputs`) and :mod:`xattr_lab.evaluation.circuit_truth` (ablation effects, truth masks).
"""
from .core.capture import head_outputs
from .evaluation.circuit_truth import Metric, head_ablation_effects, logit_difference, truth_mask
from .methods.circuits import (
    discover,
    edge_roc_auc,
    edge_scores,
    edge_truth,
    mean_difference_scores,
    node_scores,
    roc_auc,
    threshold_circuit,
    unique_codes,
)
from .methods.sae import SparseAutoencoder, codes, train_sae

__all__ = [
    "Metric", "SparseAutoencoder", "codes", "discover", "edge_roc_auc", "edge_scores", "edge_truth",
    "head_ablation_effects", "head_outputs", "logit_difference", "mean_difference_scores", "node_scores",
    "roc_auc", "threshold_circuit", "train_sae", "truth_mask", "unique_codes",
]
