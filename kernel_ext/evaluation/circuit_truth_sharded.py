"""The head-ablation truth as a dataset-scale job: :func:`ablation_effects` with the heads sharded on a backend.

Beside its one-process code (:func:`.circuit_truth.head_ablation_effects`); the machinery is :mod:`.distributed`.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import provenance
from .distributed.workers import run_job

__all__ = ["ablation_effects"]


# ---------------------------------------------------------------------------- head-ablation truth
def ablation_rows(ex, heads, prompts=(), metric=None, negatives=None, batch_size=64, logit_positions=None):
    """A shard of flat head indices -> one row per head: its mean-ablation effect."""
    from .circuit_truth import head_ablation_effects

    heads = [int(h) for h in heads]
    effects = head_ablation_effects(ex, prompts, metric, negatives, batch_size, progress=False,
                                    logit_positions=logit_positions, heads=heads)
    return [{"head": h, "effect": float(e)} for h, e in zip(heads, effects.ravel()[heads])]


def ablation_effects(ex, prompts: Sequence[str], metric: Any, negatives: Sequence[str] | None = None,
                     batch_size: int = 64, logit_positions: Sequence[int] | None = None, *, backend: str = "local",
                     address: str | None = None, workers: int | None = None, out: str | Path | None = None,
                     shard_size: int | None = None, progress: bool = True) -> np.ndarray:
    """:func:`.circuit_truth.head_ablation_effects` with the heads sharded over a backend: (L, H) float64.

    Every shard ablates its heads over all prompts (the means over ``negatives`` are recomputed per
    shard, identically), so the effects equal the one-process ones up to batch composition.
    """
    import pyarrow as pa

    fingerprint = provenance.model_fingerprint(ex)
    L, H = ex.n_layers, ex.n_heads
    digest = hashlib.sha256(json.dumps([list(prompts), list(negatives or [])]).encode()).hexdigest()[:16]
    about = {"job": "head_ablation", "model": fingerprint, "model_name": ex.name, "prompts": digest,
             "metric": getattr(metric, "__qualname__", repr(metric)), "logit_positions": logit_positions,
             "code": provenance.code_version(["xattr_lab.evaluation.circuit_truth"])}
    work = functools.partial(ablation_rows, prompts=list(prompts), metric=metric, negatives=negatives,
                             batch_size=batch_size, logit_positions=logit_positions)
    rows = run_job(ex, list(range(L * H)), [str(h) for h in range(L * H)], work,
                   {"head": pa.int64(), "effect": pa.float64()}, about, out=None if out is None else Path(out),
                   backend=backend, address=address, workers=workers, progress=progress, desc="head ablations",
                   batched=True, shard_size=shard_size or max(1, (L * H) // (4 * (workers or 2))))
    effects = np.zeros(L * H)
    for row in rows:
        effects[row["head"]] = row["effect"]
    return effects.reshape(L, H)
