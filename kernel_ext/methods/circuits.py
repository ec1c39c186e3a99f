"""SAE circuit discovery over attention heads (O'Neill & Bui 2024): scores and the pipeline.

Pipeline (docs/ARCHITECTURE.md, section "SAE circuits"):

1. :func:`head_outputs` caches each head's output into the residual stream — its slice of the
   attention-output-projection input ``z`` times that head's rows of W_O — averaged over the valid
   token positions (or read at one position): ``(examples, L*H, d_model)``.
2. :func:`train_sae` fits one :class:`SparseAutoencoder` shared by all heads on every
   (example, head) vector of the positives and negatives.
3. :func:`codes` turns each (example, head) vector into one discrete code, the argmax feature (``features`` when none fires).
4. :func:`node_scores` / :func:`edge_scores` count codes (pairs of codes) seen only in positives.
5. :func:`roc_auc` compares scores with a ground truth, such as the mean-ablation effects of
   :mod:`xattr_lab.evaluation.circuit_truth`.

:func:`discover` runs 1-4 and is what :meth:`xattr_lab.Explainer.circuit` calls. Flat head index
everywhere: ``l * H + h``.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from ..core.capture import check_prompts as _check_prompts, head_outputs
from ..core.session import ModelSession
from ..errors import InputError
from .registry import implements
from .sae import _float_tensor, codes, train_sae


def _codes_pair(codes_pos: Any, codes_neg: Any) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(codes_pos.cpu() if torch.is_tensor(codes_pos) else codes_pos)
    neg = np.asarray(codes_neg.cpu() if torch.is_tensor(codes_neg) else codes_neg)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise InputError(f"codes must be (examples, heads) with the same heads; got {pos.shape} and {neg.shape}")
    if (pos.size and pos.min() < 0) or (neg.size and neg.min() < 0):
        raise InputError("codes must be non-negative integers")
    return pos.astype(np.int64), neg.astype(np.int64)


def unique_codes(codes_pos: Any, codes_neg: Any) -> list[list[int]]:
    """For each head, the sorted codes seen in positives and never in negatives."""
    pos, neg = _codes_pair(codes_pos, codes_neg)
    return [sorted(set(pos[:, h].tolist()) - set(neg[:, h].tolist())) for h in range(pos.shape[1])]


def node_scores(codes_pos: Any, codes_neg: Any) -> np.ndarray:
    """(heads,) float64: the number of distinct codes of each head seen only in positives.

    codes_pos (examples_pos, heads), codes_neg (examples_neg, heads): integer codes.
    """
    return np.asarray([len(u) for u in unique_codes(codes_pos, codes_neg)], dtype=np.float64)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys


def edge_scores(codes_pos: Any, codes_neg: Any) -> np.ndarray:
    """(heads, heads) float64, symmetric, zero diagonal.

    Entry (h1, h2): the number of distinct code pairs (c1, c2) that co-occur in one positive
    example (c1 at h1, c2 at h2) and in no negative example.
    """
    pos, neg = _codes_pair(codes_pos, codes_neg)
    heads = pos.shape[1]
    K = int(max(pos.max(initial=0), neg.max(initial=0))) + 1
    h1, h2 = np.triu_indices(heads, k=1)
    pair_index = np.arange(h1.size, dtype=np.int64)

    def keys(c: np.ndarray) -> np.ndarray:  # one int64 key per (example, head pair): pair, c1, c2
        return ((pair_index[None, :] * K + c[:, h1]) * K + c[:, h2]).ravel()

    # sort + searchsorted: numpy 2.4's np.unique/np.isin took 7-8 s here on 363k keys (270 heads)
    pos_keys = _sorted_unique(keys(pos))
    neg_keys = _sorted_unique(keys(neg))
    where = np.searchsorted(neg_keys, pos_keys).clip(max=max(neg_keys.size - 1, 0))
    only_pos = pos_keys[neg_keys[where] != pos_keys] if neg_keys.size else pos_keys
    counts = np.bincount(only_pos // (K * K), minlength=h1.size).astype(np.float64)
    out = np.zeros((heads, heads))
    out[h1, h2] = counts
    out[h2, h1] = counts
    return out


def threshold_circuit(node: Any, edge: Any | None = None, node_threshold: float = 1.0,
                      edge_threshold: float = 1.0, n_heads: int | None = None) -> dict[str, list]:
    """The heads with node score >= ``node_threshold`` and edges with score >= ``edge_threshold``.

    node: (L, H) or flat (heads,) scores; edge: (heads, heads) or None. Returns
    ``{"nodes": [(layer, head), ...], "edges": [((l1, h1), (l2, h2)), ...]}`` (edges with i < j).
    """
    node = np.asarray(node, dtype=np.float64)
    H = node.shape[1] if node.ndim == 2 else (n_heads or node.size)
    flat = node.ravel()
    nodes = [(int(i // H), int(i % H)) for i in np.flatnonzero(flat >= node_threshold)]
    edges = []
    if edge is not None:
        edge = np.asarray(edge, dtype=np.float64)
        i, j = np.nonzero(np.triu(edge >= edge_threshold, k=1))
        edges = [((int(a // H), int(a % H)), (int(b // H), int(b % H))) for a, b in zip(i, j)]
    return {"nodes": nodes, "edges": edges}


def mean_difference_scores(X_pos: Any, X_neg: Any) -> np.ndarray:
    """A baseline without the SAE: ‖mean over positives − mean over negatives‖₂ of each head's output.

    X_pos (examples_pos, heads, d_model), X_neg (examples_neg, heads, d_model), as
    :func:`head_outputs` returns them -> (heads,) float64, in the units of the head outputs.
    It uses the labels directly, so it says how much signal the head outputs carry; the SAE codes
    are worth their cost where they rank the truth no worse than this does.
    """
    pos, neg = _float_tensor(X_pos, torch.float64), _float_tensor(X_neg, torch.float64)
    if pos.dim() != 3 or neg.dim() != 3 or pos.shape[1:] != neg.shape[1:] or not len(pos) or not len(neg):
        raise InputError(f"head outputs must be (examples, heads, d_model) with the same heads and width; "
                         f"got {tuple(pos.shape)} and {tuple(neg.shape)}")
    return (pos.mean(dim=0) - neg.mean(dim=0)).norm(dim=-1).numpy()


def roc_auc(scores: Any, truth_mask: Any) -> float:
    """Area under the ROC curve of ``scores`` against a boolean ``truth_mask`` (same shape).

    The Mann-Whitney form: the probability that a random true element scores above a random
    false one, ties counted one half (equal to ``sklearn.metrics.roc_auc_score``).
    """
    from scipy.stats import rankdata

    s = np.asarray(scores.cpu() if torch.is_tensor(scores) else scores, dtype=np.float64).ravel()
    t = np.asarray(truth_mask.cpu() if torch.is_tensor(truth_mask) else truth_mask).ravel().astype(bool)
    if s.shape != t.shape:
        raise InputError(f"scores ({s.size}) and truth mask ({t.size}) must have the same number of elements")
    if not np.all(np.isfinite(s)):
        raise InputError("scores must be finite for ROC-AUC")
    n_true = int(t.sum())
    n_false = t.size - n_true
    if n_true == 0 or n_false == 0:
        raise InputError("ROC-AUC needs both true and false elements in the truth mask")
    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[t].sum() - n_true * (n_true + 1) / 2) / (n_true * n_false))


def edge_truth(node_truth: Any) -> np.ndarray:
    """(heads, heads) bool: an edge is in the circuit when both its heads are; diagonal False."""
    t = np.asarray(node_truth).ravel().astype(bool)
    out = np.outer(t, t)
    np.fill_diagonal(out, False)
    return out


def edge_roc_auc(edge: Any, node_truth: Any) -> float:
    """ROC-AUC of edge scores over the head pairs i < j against :func:`edge_truth`."""
    edge = np.asarray(edge, dtype=np.float64)
    i, j = np.triu_indices(edge.shape[0], k=1)
    return roc_auc(edge[i, j], edge_truth(node_truth)[i, j])


# ---------------------------------------------------------------------------- ablation ground truth
@implements("circuit")
def discover(
    ex: ModelSession,
    positive: Sequence[str],
    negative: Sequence[str],
    features: int = 200,
    l1: float = 0.02,
    epochs: int = 500,
    examples: int | None = 10,
    lr: float = 1e-3,
    seed: int = 0,
    position: str | int = "mean",
    truth: Any = None,
    progress: bool = True,
    device: Any = None,
    batch_size: int = 32,
    center_heads: bool = False,
):
    """SAE circuit codes for positive vs negative prompts -> :class:`xattr_lab.results.CircuitResult`.

    Uses the first ``examples`` positives and negatives (all when None). ``truth``: optional (L, H)
    boolean ground-truth mask (e.g. :func:`truth_mask` of :func:`head_ablation_effects`); when given,
    ``metrics`` holds node and edge ROC-AUC, and ``difference_node_roc_auc`` of the no-SAE baseline
    :func:`mean_difference_scores` (kept in ``difference_scores``). ``device``: where the SAE trains (default: the
    model's). ``metrics["seconds"]`` is the wall time of the whole call.

    Beyond the paper's recipe (the defaults): ``position=-1`` reads every head at the last token
    (prompts of equal token length) and ``center_heads=True`` subtracts each head's mean output
    before the SAE (see :func:`train_sae`); with ``l1=0.1`` these took IOI on smollm2-135m from
    node ROC-AUC 0.47 to 0.82 (README, Results).
    """
    from ..results import CircuitResult

    start = time.perf_counter()
    positive = _check_prompts(positive, "positive", 2)
    negative = _check_prompts(negative, "negative", 2)
    if examples is not None:
        if examples < 2:
            raise InputError("examples must be at least 2")
        positive, negative = positive[:examples], negative[:examples]
    L, H = ex.n_layers, ex.n_heads
    X_pos = head_outputs(ex, positive, position=position, batch_size=batch_size, progress=progress)
    X_neg = head_outputs(ex, negative, position=position, batch_size=batch_size, progress=progress)
    sae = train_sae(torch.cat([X_pos, X_neg]), features=features, l1=l1, epochs=epochs, lr=lr, seed=seed,
                    device=ex.device if device is None else device, progress=progress, center_heads=center_heads)
    c_pos, c_neg = codes(sae, X_pos), codes(sae, X_neg)
    nodes = node_scores(c_pos, c_neg)
    edges = edge_scores(c_pos, c_neg)
    difference = mean_difference_scores(X_pos, X_neg)
    unique = {str(h): u for h, u in enumerate(unique_codes(c_pos, c_neg)) if u}
    metrics: dict[str, float] = {}
    truth_list = None
    if truth is not None:
        t = np.asarray(truth).astype(bool)
        if t.size != L * H:
            raise InputError(f"truth must be an ({L}, {H}) mask, got shape {t.shape}")
        t = t.reshape(L, H)
        truth_list = t.astype(int).tolist()
        metrics["node_roc_auc"] = roc_auc(nodes, t)
        metrics["difference_node_roc_auc"] = roc_auc(difference, t)
        if t.sum() >= 2:
            metrics["edge_roc_auc"] = edge_roc_auc(edges, t)
    metrics["seconds"] = time.perf_counter() - start
    return CircuitResult(
        node_scores=nodes.reshape(L, H),
        edge_scores=edges,
        codes_positive=c_pos,
        codes_negative=c_neg,
        n_layers=L,
        n_heads=H,
        unique_codes=unique,
        positive=positive,
        negative=negative,
        truth=truth_list,
        difference_scores=difference.reshape(L, H).tolist(),
        metrics=metrics,
        model=ex.name,
        options={"features": features, "l1": l1, "epochs": epochs, "examples": examples, "lr": lr,
                 "seed": seed, "position": position, "center_heads": center_heads},
    )
