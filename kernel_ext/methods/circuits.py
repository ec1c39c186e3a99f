"""SAE circuit discovery over attention heads (O'Neill & Bui 2024): the pipeline.

Pipeline (docs/ARCHITECTURE.md, section "SAE circuits"):

1. :func:`head_outputs` caches each head's output into the residual stream, averaged over the
   valid token positions (or read at one position): ``(examples, L*H, d_model)``.
2. The first ``examples`` prompts of each list train one autoencoder shared by all heads
   (:func:`xattr_lab.methods.sae.train_sae`, or a pretrained SAELens SAE).
3. The next ``score_examples`` prompts of each list, never trained on, get one code per
   (example, head) (:func:`codes`) and are scored (:mod:`xattr_lab.methods.circuit_scores`).
4. With a ground truth, ``metrics`` compares the scores, the paper's edge metric, and the
   baselines with it.

:func:`discover` is what :meth:`xattr_lab.Explainer.circuit` calls (:func:`discover_sae` here; the
attribution-patching methods in :mod:`.patching_circuits`). Flat head index: ``l * H + h``.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from ..core.capture import check_prompts as _check_prompts, head_outputs
from ..core.session import ModelSession
from ..errors import InSampleWarning, InputError
from .circuit_scores import (  # noqa: F401  (re-exported: the scores used to live here)
    SCORINGS, codes_pair, edge_pairs_roc_auc, edge_roc_auc, edge_scores, edge_truth, jsd_scores,
    mean_difference_scores, node_scores, node_scores_by, norm_scores, paper_edge_node_scores, roc_auc,
    threshold_circuit, unique_codes, variance_scores,
)
from .registry import implements
from .sae import RECIPES, PretrainedSAE, codes, train_sae

#: What each recipe sets when the option is left at None. "paper": the authors' code (charlieoneill11/sae-circuits
#: at commit 10fd2e7826df9399b6189e5695a631898f4fe116: ``src/configs/config.yaml`` lambda_ 0.02;
#: ``data/data_utils.py`` lines 52-56, position "mean"); "xattr": ours, best of the variants measured here on the
#: toy (node ROC-AUC 1.00 vs the paper's 0.90) but not on IOI, where the paper recipe leads (docs/results.md: on one
#: IOI prompt sample, paper 0.86 count / 0.80 JSD; xattr 0.75 / 0.78; the paper's SAE at the last token 0.59 / 0.65;
#: xattr at the mean: uncentred L1 0.02 0.61 / 0.56, L1 0.1 0.80 / 0.77; centred 0.67 / 0.71;
#: ``python scripts/circuits_report.py variants --task ioi --run 0``).
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {"l1": 0.02, "position": "mean", "center_heads": False},
    "xattr": {"l1": 0.1, "position": -1, "center_heads": True},
}


def _truth_masks(truth: Any, L: int, H: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(node mask (L, H), edge mask (L*H, L*H) or None) from a mask, a dict or an object with ``nodes``/``edges``."""
    if truth is None:
        return None, None
    nodes = truth.get("nodes") if isinstance(truth, dict) else getattr(truth, "nodes", truth)
    edges = truth.get("edges") if isinstance(truth, dict) else getattr(truth, "edges", None)
    t = np.asarray(nodes).astype(bool)
    if t.size != L * H:
        raise InputError(f"truth must be an ({L}, {H}) mask, got shape {t.shape}")
    e = None
    if edges is not None:
        e = np.asarray(edges).astype(bool)
        if e.shape != (L * H, L * H):
            raise InputError(f"edge truth must be ({L * H}, {L * H}), got {e.shape}")
    return t.reshape(L, H), e


def _split(prompts: list[str], examples: int | None, score_examples: int) -> tuple[list[str], list[str]]:
    if examples is None:
        return prompts, []
    return prompts[:examples], prompts[examples : examples + score_examples]


def _load_sae(sae: Any, d_model: int) -> torch.nn.Module:
    if isinstance(sae, torch.nn.Module):
        return sae
    from ..core.saelens import read_saelens

    weights, cfg = read_saelens(sae)
    if cfg["d_in"] != d_model:
        raise InputError(f"the SAE at {sae} reads {cfg['d_in']}-wide activations, but this model's head outputs "
                         f"are {d_model} wide; it does not fit")
    return PretrainedSAE(weights, cfg)


@implements("circuit")
def discover(ex: ModelSession, positive: Sequence[str], negative: Sequence[str], method: str = "sae", **options: Any):
    """``ex.circuit``: SAE circuit codes (``method="sae"``, :func:`discover_sae`, the default) or an
    attribution-patching circuit (``"atp"``, ``"eap"``, ``"eap-ig"``:
    :func:`xattr_lab.methods.patching_circuits.discover_patching`, positives clean and negatives their corrupted
    twins, paired by index)."""
    from .registry import CIRCUIT_METHODS

    if method == "sae":
        return discover_sae(ex, positive, negative, **options)
    if method not in CIRCUIT_METHODS:
        raise InputError(f"method must be one of {CIRCUIT_METHODS}, not {method!r}")
    from .patching_circuits import discover_patching

    return discover_patching(ex, positive, negative, method=method, **options)


def discover_sae(
    ex: ModelSession,
    positive: Sequence[str],
    negative: Sequence[str],
    features: int = 200,
    l1: float | None = None,
    epochs: int = 500,
    examples: int | None = 10,
    score_examples: int = 250,
    lr: float = 1e-3,
    seed: int = 0,
    position: str | int | None = None,
    recipe: str = "paper",
    scoring: str = "count",
    truth: Any = None,
    progress: bool = True,
    device: Any = None,
    batch_size: int = 32,
    center_heads: bool | None = None,
    sae: Any = None,
):
    """SAE circuit codes for positive vs negative prompts -> :class:`xattr_lab.results.CircuitResult`.

    The first ``examples`` prompts of each list train the SAE; the next ``score_examples`` of each
    list (never trained on) are coded and scored. With no prompt left over, the training prompts are
    scored and an :class:`InSampleWarning` says so (``options["in_sample"]``).

    ``recipe``: "paper" (the authors' SAE and scores point by point, see
    :class:`~xattr_lab.methods.sae.PaperSparseAutoencoder`) or "xattr" (ours); ``l1``, ``position``
    and ``center_heads`` left at None take the recipe's values (:data:`RECIPE_DEFAULTS`).
    ``scoring``: "count" (the paper's: codes seen only in positives) or "jsd" (Jensen-Shannon
    divergence of the code histograms). ``sae``: a SAELens-format directory (or a trained module)
    to code with instead of training one; its width must be the model's d_model.

    ``truth``: an (L, H) mask, or ``{"nodes": (L, H), "edges": (L*H, L*H)}`` (such as
    :func:`xattr_lab.evaluation.circuit_patching.ioi_truth`). ``metrics`` then holds
    ``node_roc_auc``, ``paper_edge_metric`` (the paper's "edge ROC-AUC", a node metric),
    ``edge_roc_auc`` (edge scores against the edge truth, when given) and ``baselines``
    (``difference_node_roc_auc``: class-mean difference; label-free ``norm_roc_auc``,
    ``variance_roc_auc``), all on the scored prompts. ``metrics["seconds"]``: wall time.
    """
    from ..results import CircuitResult

    start = time.perf_counter()
    if recipe not in RECIPES:
        raise InputError(f"recipe must be one of {RECIPES}, not {recipe!r}")
    if scoring not in SCORINGS:
        raise InputError(f"scoring must be one of {SCORINGS}, not {scoring!r}")
    chosen = {"l1": l1, "position": position, "center_heads": center_heads}
    l1, position, center_heads = (RECIPE_DEFAULTS[recipe][k] if v is None else v for k, v in chosen.items())
    positive = _check_prompts(positive, "positive", 2)
    negative = _check_prompts(negative, "negative", 2)
    if examples is not None and examples < 1:
        raise InputError("examples must be at least 1")
    if score_examples < 1:
        raise InputError("score_examples must be at least 1")
    train_pos, score_pos = _split(positive, examples, score_examples)
    train_neg, score_neg = _split(negative, examples, score_examples)
    in_sample = not score_pos or not score_neg
    if in_sample:
        warnings.warn(
            f"IN-SAMPLE SCORES: no prompt is left to score after the {len(train_pos)} positive and {len(train_neg)} "
            f"negative training prompts, so the scores are on the prompts the SAE was trained on; give more than "
            f"examples={examples} prompts per class (the task builders make any number)", InSampleWarning, stacklevel=3)
        score_pos, score_neg = train_pos, train_neg
    L, H = ex.n_layers, ex.n_heads

    def outputs(train: list[str], score: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        X = head_outputs(ex, train + ([] if in_sample else score), position=position, batch_size=batch_size,
                         progress=progress)
        return X[: len(train)], (X if in_sample else X[len(train) :])

    T_pos, X_pos = outputs(train_pos, score_pos)
    T_neg, X_neg = outputs(train_neg, score_neg)
    if sae is None:
        model = train_sae(torch.cat([T_pos, T_neg]), features=features, l1=l1, epochs=epochs, lr=lr, seed=seed,
                          device=ex.device if device is None else device, progress=progress,
                          center_heads=center_heads, recipe=recipe)
    else:
        model = _load_sae(sae, int(X_pos.shape[-1]))
    c_pos, c_neg = codes(model, X_pos), codes(model, X_neg)
    nodes = node_scores_by(scoring, c_pos, c_neg)
    edges = edge_scores(c_pos, c_neg)
    X_all = torch.cat([X_pos, X_neg])
    baseline_scores = {"difference": mean_difference_scores(X_pos, X_neg), "norm": norm_scores(X_all),
                       "variance": variance_scores(X_all)}
    unique = {str(h): u for h, u in enumerate(unique_codes(c_pos, c_neg)) if u}
    metrics: dict[str, Any] = {}
    node_truth, edge_truth_mask = _truth_masks(truth, L, H)
    if node_truth is not None:
        metrics["node_roc_auc"] = roc_auc(nodes, node_truth)
        metrics["paper_edge_metric"] = roc_auc(paper_edge_node_scores(edges), node_truth)
        if edge_truth_mask is not None and edge_truth_mask.any():
            metrics["edge_roc_auc"] = edge_pairs_roc_auc(edges, edge_truth_mask)
        metrics["baselines"] = {f"{k}_roc_auc" if k != "difference" else "difference_node_roc_auc": roc_auc(v, node_truth)
                                for k, v in baseline_scores.items()}
        metrics["difference_node_roc_auc"] = metrics["baselines"]["difference_node_roc_auc"]  # old readers
    metrics["seconds"] = time.perf_counter() - start
    return CircuitResult(
        node_scores=nodes.reshape(L, H),
        edge_scores=edges,
        codes_positive=c_pos,
        codes_negative=c_neg,
        n_layers=L,
        n_heads=H,
        unique_codes=unique,
        positive=score_pos,
        negative=score_neg,
        truth=None if node_truth is None else node_truth.astype(int).tolist(),
        difference_scores=baseline_scores["difference"].reshape(L, H).tolist(),
        baseline_scores={k: v.reshape(L, H).tolist() for k, v in baseline_scores.items() if k != "difference"},
        metrics=metrics,
        model=ex.name,
        options={"recipe": recipe, "scoring": scoring, "features": features, "l1": l1, "epochs": epochs,
                 "examples": examples, "score_examples": score_examples, "scored": [len(score_pos), len(score_neg)],
                 "in_sample": in_sample, "lr": lr, "seed": seed, "position": position, "center_heads": center_heads,
                 "sae": None if sae is None else str(sae) if not isinstance(sae, torch.nn.Module) else type(sae).__name__},
    )
