"""Circuit faithfulness across circuit sizes, as MIB defines it (Mueller et al. 2025, "MIB: A Mechanistic
Interpretability Benchmark", circuit localization track), over attention-head circuits.

For a fraction p of the units (here heads; ``MIB_PERCENTAGES`` as MIB's evaluation), the circuit C_p is the
int(p · units) heads of largest |score|. Every head outside C_p has its z (its slice of the output projection's
input, every position) patched from the corrupted prompt, the rest of the model runs on the clean prompt, and

    f(p) = (m(C_p) − m(∅)) / (m(M) − m(∅))

with m the mean metric over prompts, m(M) the clean model and m(∅) the empty circuit (every head patched — MIB
evaluates its empty graph the same way). CPR = area under f(p) and CMD = area under |1 − f(p)| over p, both by
the trapezoid rule on the linear p axis (MIB's ``evaluate_area_under_curve``); CPR higher and CMD lower are better.
Our graph has heads as its only nodes: MLPs and embeddings always run on the clean prompt.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.capture import projection_inputs
from ..core.session import ModelSession

MIB_PERCENTAGES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def patched_metric(ex: ModelSession, ids: torch.Tensor, mask: torch.Tensor, z_corrupt: list[torch.Tensor],
                   keep: np.ndarray, metric: Callable, index: torch.Tensor) -> torch.Tensor:
    """metric (B,) on the clean ids with every head not in ``keep`` ((L, H) bool) patched to ``z_corrupt``."""
    adapter = ex.adapter
    H, k = adapter.n_heads, adapter.head_dim
    with ex.restored(), torch.no_grad():
        for layer, proj in enumerate(adapter.out_projections):
            patch = torch.as_tensor(~keep[layer]).repeat_interleave(k)  # (H*k,)
            if not bool(patch.any()):
                continue

            def hook(module, args, layer=layer, patch=patch):
                z = args[0]
                return (torch.where(patch.to(z.device), z_corrupt[layer].to(z), z),) + tuple(args[1:])

            ex.add_hook(proj, hook, pre=True)
        return metric(ex.forward(input_ids=ids, attention_mask=mask).logits, index).float().cpu()


def top_heads(scores: np.ndarray, count: int) -> np.ndarray:
    """(L, H) bool: the ``count`` heads of largest |score| (ties: lower flat index first)."""
    order = np.argsort(-np.abs(np.asarray(scores, np.float64)).ravel(), kind="stable")[:count]
    keep = np.zeros(scores.size, bool)
    keep[order] = True
    return keep.reshape(scores.shape)


def areas(percentages: Sequence[float], faithfulness: Sequence[float]) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 − f| over the percentages."""
    x, f = np.asarray(percentages, np.float64), np.asarray(faithfulness, np.float64)
    return float(np.trapezoid(f, x)), float(np.trapezoid(np.abs(1.0 - f), x))


def faithfulness_curve(ex: ModelSession, positive: Sequence[str], negative: Sequence[str], metric: Callable,
                       scores: Any, percentages: Sequence[float] = MIB_PERCENTAGES, batch_size: int = 16) -> dict:
    """MIB's faithfulness f(p) of the top-|score| head circuits, and CPR and CMD (module docstring).

    Returns ``{"unit": "nodes", "percentages", "sizes" (heads), "faithfulness", "cpr", "cmd", "clean", "empty"}``
    (``clean`` / ``empty``: m(M) and m(∅), metric units)."""
    from .attribution_patching import encode_pairs

    scores = np.asarray(scores, np.float64)
    ids, mask, bad = encode_pairs(ex, positive, negative)
    P = ids.shape[0]
    sizes = [int(p * scores.size) for p in percentages]
    totals = np.zeros(len(sizes) + 2)
    for s in range(0, P, batch_size):
        sl, index = slice(s, s + batch_size), torch.arange(s, min(s + batch_size, P))
        z_bad = projection_inputs(ex, bad[sl], mask[sl])
        masks = [np.ones(scores.shape, bool), np.zeros(scores.shape, bool)] + [top_heads(scores, c) for c in sizes]
        for i, keep in enumerate(masks):
            totals[i] += float(patched_metric(ex, ids[sl], mask[sl], z_bad, keep, metric, index).sum())
    clean, empty, *values = (totals / P).tolist()
    denom = clean - empty
    f = [(v - empty) / denom if denom != 0 else float("nan") for v in values]
    cpr, cmd = areas(percentages, f)
    return {"unit": "nodes", "percentages": list(percentages), "sizes": sizes, "faithfulness": f, "cpr": cpr,
            "cmd": cmd, "clean": clean, "empty": empty}
