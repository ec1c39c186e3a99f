"""Scores of SAE circuit discovery: node and edge scores from codes, the paper's metrics, baselines.

Flat head index everywhere: ``l * H + h``. Line numbers cite charlieoneill11/sae-circuits at commit
10fd2e7826df9399b6189e5695a631898f4fe116 (2024-04-24). Node scores (docs/ARCHITECTURE.md, section "SAE circuits"):

- ``count`` (the paper's, ``src/node.py`` lines 49-84 of charlieoneill11/sae-circuits): the number
  of distinct codes of a head seen in positives and never in negatives;
- ``jsd``: the Jensen-Shannon divergence (base 2, in [0, 1]) between a head's code histogram over
  positives and over negatives, which weighs each code by how often it occurs instead of counting
  a code seen once as much as one seen in every prompt.

Edges: :func:`edge_scores` counts code pairs seen only in positives (``src/edge.py`` lines 51-83).
:func:`paper_edge_node_scores` is how the paper turns them into its "edge ROC-AUC": a *node*
score, compared with the node truth (``src/main.py`` lines 174-208, ``src/edge.py`` lines 108-144).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .sae import float_tensor

SCORINGS = ("count", "jsd")


def codes_pair(codes_pos: Any, codes_neg: Any) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative SAE codes, (examples, heads) each, as integer arrays; checked to share the heads."""
    pos = np.asarray(codes_pos.cpu() if torch.is_tensor(codes_pos) else codes_pos)
    neg = np.asarray(codes_neg.cpu() if torch.is_tensor(codes_neg) else codes_neg)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise InputError(f"codes must be (examples, heads) with the same heads; got {pos.shape} and {neg.shape}")
    if (pos.size and pos.min() < 0) or (neg.size and neg.min() < 0):
        raise InputError("codes must be non-negative integers")
    return pos.astype(np.int64), neg.astype(np.int64)


def unique_codes(codes_pos: Any, codes_neg: Any) -> list[list[int]]:
    """For each head, the sorted codes seen in positives and never in negatives."""
    pos, neg = codes_pair(codes_pos, codes_neg)
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
    pos, neg = codes_pair(codes_pos, codes_neg)
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
    pos, neg = float_tensor(X_pos), float_tensor(X_neg)
    if pos.dim() != 3 or neg.dim() != 3 or pos.shape[1:] != neg.shape[1:] or not len(pos) or not len(neg):
        raise InputError(f"head outputs must be (examples, heads, d_model) with the same heads and width; "
                         f"got {tuple(pos.shape)} and {tuple(neg.shape)}")
    return np.concatenate([(p.mean(dim=0) - n.mean(dim=0)).norm(dim=-1).numpy()
                           for p, n in zip(_head_blocks(pos), _head_blocks(neg))])


def _head_blocks(X: torch.Tensor, block: int = 16):
    """float64 copies of X (examples, heads, d) a block of heads at a time: the float64 copy of a
    whole (500, 270, 576) cache would take 620 MB, and its temporaries as much again."""
    for start in range(0, X.shape[1], block):
        yield X[:, start : start + block].to(torch.float64)


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


def jsd_scores(codes_pos: Any, codes_neg: Any) -> np.ndarray:
    """(heads,) float64: Jensen-Shannon divergence (bits) between each head's code histograms."""
    pos, neg = codes_pair(codes_pos, codes_neg)
    K = int(max(pos.max(initial=0), neg.max(initial=0))) + 1
    heads = pos.shape[1]

    def histograms(c: np.ndarray) -> np.ndarray:
        flat = (np.arange(heads)[None, :] * K + c).ravel()
        return np.bincount(flat, minlength=heads * K).reshape(heads, K) / max(c.shape[0], 1)

    p, q = histograms(pos), histograms(neg)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / np.where(m > 0, m, 1.0)), 0.0).sum(axis=1)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def node_scores_by(scoring: str, codes_pos: Any, codes_neg: Any) -> np.ndarray:
    """Node scores of ``scoring`` ("count" or "jsd")."""
    if scoring not in SCORINGS:
        raise InputError(f"scoring must be one of {SCORINGS}, not {scoring!r}")
    return node_scores(codes_pos, codes_neg) if scoring == "count" else jsd_scores(codes_pos, codes_neg)


def paper_edge_node_scores(edge: Any) -> np.ndarray:
    """(heads,) node scores from edge scores, as the paper's edge evaluation makes them.

    ``src/edge.py`` lines 120-139, ``src/main.py`` line 182: sort the ordered head pairs by their
    edge score, descending (``np.argsort(...)[::-1]``); list both heads of each pair in that order;
    a head scores the number of times it appears among the first ``k = heads**2 // 2`` entries. (The
    softmax of line 142 does not change a ROC-AUC.) Compared with the node truth, this is the
    paper's "edge ROC-AUC": a node metric (``metrics["paper_edge_metric"]``).
    """
    edge = np.asarray(edge, dtype=np.float64)
    heads = edge.shape[0]
    order = np.argsort(edge.ravel())[::-1]
    endpoints = np.stack(np.unravel_index(order, edge.shape), axis=1).ravel()[: heads ** 2 // 2]
    return np.bincount(endpoints, minlength=heads).astype(np.float64)


def norm_scores(X: Any) -> np.ndarray:
    """Label-free baseline: mean ‖head output‖₂ over all examples; X (examples, heads, d) -> (heads,)."""
    return np.concatenate([b.norm(dim=-1).mean(dim=0).numpy() for b in _head_blocks(float_tensor(X))])


def variance_scores(X: Any) -> np.ndarray:
    """Label-free baseline: total variance of each head's output over the examples -> (heads,)."""
    return np.concatenate([(b - b.mean(dim=0)).pow(2).sum(dim=-1).mean(dim=0).numpy()
                           for b in _head_blocks(float_tensor(X))])


def edge_pairs_roc_auc(edge: Any, edge_truth_mask: Any) -> float:
    """ROC-AUC of symmetric edge scores over head pairs i < j against an (heads, heads) edge truth
    (an edge counts when either direction is in the truth)."""
    edge = np.asarray(edge, dtype=np.float64)
    t = np.asarray(edge_truth_mask).astype(bool)
    t = t | t.T
    i, j = np.triu_indices(edge.shape[0], k=1)
    return roc_auc(edge[i, j], t[i, j])
