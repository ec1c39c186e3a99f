"""``ex.circuit(..., method="atp" | "eap" | "eap-ig")``: attribution-patching circuits -> PatchingCircuitResult.

The gradients are :mod:`.attribution_patching`'s; this module runs them batch by batch, turns them into node and
edge scores per prompt (:func:`batch_scores`), adds the circuit faithfulness curve
(:mod:`.patching_faithfulness`) and, with a ground truth, ROC-AUCs.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.capture import check_prompts, progress_bar, projection_inputs
from ..core.session import ModelSession
from ..errors import InputError
from .attribution_patching import PATCHING_METHODS, Gradients, encode_pairs, gradients
from .circuit_scores import roc_auc
from .patching_faithfulness import MIB_PERCENTAGES, faithfulness_curve

TOP_EDGES = 200  # per-prompt edge scores kept in the result (largest |mean score|)


def clean_top_log_prob(ex: ModelSession, ids: torch.Tensor, mask: torch.Tensor) -> Callable:
    """Default metric: log-probability of the clean run's most likely next token at each prompt's last token."""
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=ids, attention_mask=mask).logits.float()
    last = mask.sum(1).long() - 1

    def read(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # (R, V): a classifier's (R, C) as is
        if logits.dim() == 2:
            return logits.float()
        return logits[torch.arange(logits.shape[0], device=logits.device), last.to(logits.device)[index]].float()

    top = read(logits, torch.arange(ids.shape[0])).argmax(-1)

    def log_prob_of_clean_top_token(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        at = read(logits, index).log_softmax(-1)
        return at[torch.arange(at.shape[0], device=at.device), top.to(at.device)[index]]

    return log_prob_of_clean_top_token


def last_token_logit_difference(correct: Sequence[int], incorrect: Sequence[int]) -> Callable:
    """Metric: logit(correct[i]) − logit(incorrect[i]) at the last token of prompt i."""
    a, b = torch.as_tensor(list(correct)), torch.as_tensor(list(incorrect))

    def logit_difference(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        row = logits[:, -1] if logits.dim() == 3 else logits
        r = torch.arange(row.shape[0], device=row.device)
        return row[r, a.to(row.device)[index]] - row[r, b.to(row.device)[index]]

    return logit_difference


def metric_name(metric: Any) -> str:
    return getattr(metric, "name", None) or getattr(metric, "__name__", None) or type(metric).__name__


def batch_scores(ex: ModelSession, z_corrupt: list[torch.Tensor], grads: Gradients, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-prompt node scores (B, L, H) and edge scores (B, L*H, L*H + 1) or None (metric units, summed over
    positions; padded positions count zero). Edge column L*H is the logits; senders in a layer at or after the
    receiver's score 0."""
    adapter = ex.adapter
    L, H, k = adapter.n_layers, adapter.n_heads, adapter.head_dim
    m = mask.float()[:, :, None]
    deltas = [(zc.float() - z.float()) * m for z, zc in zip(grads.z_clean, z_corrupt)]  # L x (B, n, H*k)
    B, n = mask.shape
    nodes = torch.stack([(d * g).reshape(B, n, H, k).sum(dim=(1, 3)) for d, g in zip(deltas, grads.z)], dim=1)
    if grads.receivers is None:
        return nodes, None
    out = torch.stack([adapter.split_heads(l, d) for l, d in enumerate(deltas)], dim=1)  # (B, L, n, H, d)
    out = out.permute(0, 1, 3, 2, 4).reshape(B, L * H, n, -1)  # (B, senders, n, d)
    edges = torch.zeros(B, L * H, L * H + 1)
    for l in range(1, L):
        edges[:, : l * H, l * H : (l + 1) * H] = torch.einsum("bsnd,brnd->bsr", out[:, : l * H], grads.receivers[:, l])
    edges[:, :, L * H] = torch.einsum("bsnd,bnd->bs", out, grads.logits)
    return nodes, edges


def patching_scores(ex: ModelSession, positive: list[str], negative: list[str], method: str, metric: Any,
                    ig_steps: int, batch_size: int, progress: bool,
                    logit_positions: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-prompt node scores (P, L, H) and edge scores (P, L*H, L*H + 1) (None for AtP), float64."""
    ids, mask, bad = encode_pairs(ex, positive, negative)
    steps = ig_steps if method == "eap-ig" else 1
    nodes, edges = [], []
    starts = range(0, len(positive), batch_size)
    for s in progress_bar(starts, len(starts), f"{method} over {len(positive)} prompt pairs", progress):
        sl = slice(s, s + batch_size)
        z_bad = projection_inputs(ex, bad[sl], mask[sl])
        grads = gradients(ex, ids[sl], mask[sl], bad[sl], metric, torch.arange(s, s + ids[sl].shape[0]), steps,
                          edges=method != "atp", logit_positions=logit_positions)
        with torch.no_grad():
            node, edge = batch_scores(ex, z_bad, grads, mask[sl])
        nodes.append(node.double())
        if edge is not None:
            edges.append(edge.double())
    return torch.cat(nodes).numpy(), (torch.cat(edges).numpy() if edges else None)


def directed_edge_truth(truth: Any, L: int, H: int) -> np.ndarray | None:
    """(L*H, L*H + 1) bool: the truth's head -> head edges, and first-round heads -> logits; None without edges."""
    edges = truth.get("edges") if isinstance(truth, dict) else getattr(truth, "edges", None)
    if edges is None:
        return None
    out = np.zeros((L * H, L * H + 1), bool)
    out[:, : L * H] = np.asarray(edges, bool)
    classes = truth.get("classes") if isinstance(truth, dict) else getattr(truth, "classes", None)
    if classes:
        out[list(next(iter(classes.values()))), L * H] = True
    return out


def valid_edges(L: int, H: int) -> np.ndarray:
    """(L*H, L*H + 1) bool: sender layer < receiver layer, and every head -> logits."""
    layer = np.arange(L * H) // H
    out = np.zeros((L * H, L * H + 1), bool)
    out[:, : L * H] = layer[:, None] < layer[None, :]
    out[:, L * H] = True
    return out


def truth_metrics(node_scores: np.ndarray, edge_scores: np.ndarray | None, truth: Any, L: int, H: int) -> dict:
    """``node_roc_auc`` (|node score| against the node truth) and ``edge_roc_auc`` (|edge score| over the valid
    directed edges against :func:`directed_edge_truth`)."""
    nodes = truth.get("nodes") if isinstance(truth, dict) else getattr(truth, "nodes", truth)
    out = {"node_roc_auc": roc_auc(np.abs(node_scores), np.asarray(nodes, bool).reshape(L, H))}
    edge_truth = directed_edge_truth(truth, L, H)
    if edge_scores is not None and edge_scores.size and edge_truth is not None:
        valid = valid_edges(L, H)
        if edge_truth[valid].any():
            out["edge_roc_auc"] = roc_auc(np.abs(edge_scores[valid]), edge_truth[valid])
    return out


def _top_prompt_edges(edges: np.ndarray, mean: np.ndarray, top: int) -> dict[str, list[float]]:
    order = np.argsort(-np.abs(mean).ravel(), kind="stable")[:top]
    cols = mean.shape[1]
    return {f"{i // cols}->{i % cols}": edges[:, i // cols, i % cols].tolist() for i in order if mean.flat[i] != 0}


def discover_patching(ex: ModelSession, positive: Sequence[str], negative: Sequence[str], method: str = "eap-ig",
                      metric: Any = None, ig_steps: int = 5, truth: Any = None, faithfulness: bool = True,
                      batch_size: int = 32, progress: bool = True, logit_positions: Sequence[int] | None = None,
                      **unused: Any):
    """AtP / EAP / EAP-IG circuit of clean ``positive`` prompts vs their corrupted ``negative`` twins (paired by
    index, same token length) -> :class:`xattr_lab.results.PatchingCircuitResult`.

    ``metric``: a callable (logits (R, n, V), prompt index (R,)) -> (R,) — the task metrics of
    :mod:`xattr_lab.evaluation.tasks` and :func:`~xattr_lab.circuits.patching_truth` — or a pair (correct ids,
    incorrect ids) for a logit difference at the last token; default: the log-probability of the clean run's top
    next token (:func:`clean_top_log_prob`). ``ig_steps`` (EAP-IG): points on the input path, 5 as in Hanna et
    al. (2024). ``faithfulness``: MIB's node-level curve, CPR and CMD (:mod:`.patching_faithfulness`).
    ``logit_positions``: the positions the metric reads (e.g. ``[-1]`` for IOI's logit difference), so the
    unembedding runs only there (the metric then sees only those positions; the faithfulness runs see all).
    """
    from ..results import PatchingCircuitResult

    start = time.perf_counter()
    if unused:
        raise InputError(f"option(s) {sorted(unused)} are for method='sae'; {method} takes metric, ig_steps, "
                         "truth, faithfulness, batch_size, progress, logit_positions")
    if method not in PATCHING_METHODS:
        raise InputError(f"method must be 'sae' or one of {PATCHING_METHODS}, not {method!r}")
    if not isinstance(ig_steps, int) or isinstance(ig_steps, bool) or ig_steps < 1:
        raise InputError(f"ig_steps must be a whole number >= 1, not {ig_steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
    positive, negative = check_prompts(positive, "positive", 1), check_prompts(negative, "negative", 1)
    ids, mask, _ = encode_pairs(ex, positive, negative)
    if metric is None:
        metric = clean_top_log_prob(ex, ids, mask)
    elif isinstance(metric, (tuple, list)) and len(metric) == 2:
        metric = last_token_logit_difference(*metric)
    elif not callable(metric):
        raise InputError("metric must be a callable (logits, prompt_index) -> (rows,), or a pair (correct ids, "
                         "incorrect ids) for a logit difference")
    L, H = ex.n_layers, ex.n_heads
    node_p, edge_p = patching_scores(ex, positive, negative, method, metric, ig_steps, batch_size, progress,
                                     logit_positions)
    nodes = node_p.mean(axis=0)
    edges = edge_p.mean(axis=0) if edge_p is not None else np.zeros((0, 0))
    seconds = time.perf_counter() - start
    curve = faithfulness_curve(ex, positive, negative, metric, nodes, batch_size=batch_size) if faithfulness else {}
    metrics: dict[str, Any] = {"seconds_scores": seconds, "seconds": time.perf_counter() - start}
    if truth is not None:
        metrics.update(truth_metrics(nodes, edges if edge_p is not None else None, truth, L, H))
    node_truth = None
    if truth is not None:
        node_truth = np.asarray(truth.get("nodes") if isinstance(truth, dict) else getattr(truth, "nodes", truth))
        node_truth = node_truth.reshape(L, H).astype(int).tolist()
    return PatchingCircuitResult(
        node_scores=nodes, edge_scores=edges, prompt_node_scores=node_p,
        prompt_edge_scores=_top_prompt_edges(edge_p, edges, TOP_EDGES) if edge_p is not None else {},
        faithfulness=curve, n_layers=L, n_heads=H, method=method, metric=metric_name(metric),
        positive=list(positive), negative=list(negative), truth=node_truth, metrics=metrics, model=ex.name,
        options={"method": method, "metric": metric_name(metric), "ig_steps": ig_steps if method == "eap-ig" else None,
                 "ig_points": "alpha = k/ig_steps, k = 1..ig_steps" if method == "eap-ig" else None,
                 "prompts": len(positive), "batch_size": batch_size, "logit_positions": logit_positions, "faithfulness_unit": "nodes",
                 "faithfulness_percentages": list(MIB_PERCENTAGES) if faithfulness else []},
    )
