"""Path-patching ground truth as a dataset-scale job: one round's senders sharded over a backend.

:func:`patching_effects` is :func:`.circuit_patching.path_patch` for one round of
:func:`.circuit_truth.patching_truth` (``backend=``): items are sender heads, a row is one sender's
effect on every prompt; each worker records the clean and corrupted runs once (:func:`patch_runs`). Beside its
one-process code (:mod:`.circuit_patching`); the machinery is :mod:`.distributed`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import provenance
from .distributed.workers import run_job

__all__ = ["patching_effects"]


_RUNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # session -> (prompts+metric digest, PatchRuns)


def patch_runs(ex, prompts, corrupted, metric, batch_size: int, digest: str):
    """:func:`.circuit_patching.prepare_runs` once per worker session and (prompts, metric) digest (kept for
    the next shard and round of the same truth; replaced by another digest)."""
    from .circuit_patching import prepare_runs

    kept = _RUNS.get(ex)
    if kept is None or kept[0] != digest:
        kept = _RUNS[ex] = (digest, prepare_runs(ex, prompts, corrupted, metric, batch_size))
    return kept[1]


def patching_rows(ex, senders, prompts=(), corrupted=(), metric=None, receivers=None, mode_a="last", mode_b="last",
                  batch_size=64, digest=""):
    """A shard of sender heads -> one row per sender: its path-patching effect on every prompt, (P,)."""
    from . import circuit_patching

    runs = patch_runs(ex, prompts, corrupted, metric, batch_size, digest)
    effects = circuit_patching.path_patch(ex, runs, [int(s) for s in senders], receivers, mode_a, mode_b,
                                          batch_size, progress=False)
    return [{"sender": int(s), "effects": row.tolist()} for s, row in zip(senders, effects)]


def describe_metric(metric: Any) -> str:
    """A metric's name and the values it closes over (e.g. the token ids of a logit difference), for provenance."""
    cells = [repr(c.cell_contents) for c in (getattr(metric, "__closure__", None) or ())]
    return getattr(metric, "__qualname__", repr(metric)) + json.dumps(cells)


def patching_effects(ex, prompts: Sequence[str], corrupted: Sequence[str], metric: Any, senders: Sequence[int],
                     receivers: Sequence[int] | None = None, mode_a: str = "last", mode_b: str = "last",
                     batch_size: int = 64, *, backend: str = "local", address: str | None = None,
                     workers: int | None = None, out: str | Path | None = None, shard_size: int | None = None,
                     progress: bool = True) -> np.ndarray:
    """:func:`.circuit_patching.path_patch` (one round of :func:`.circuit_truth.patching_truth`) with the
    senders sharded over a backend: (len(senders), P) float64, metric after patching minus clean.

    Each worker records the clean and corrupted runs once (:func:`patch_runs`) and patches its shard's
    senders over all prompts, so the effects equal the one-process ones up to batch composition.
    ``out``: one Parquet store per round (``out/round-<hash of receivers and modes>``), resumable.
    """
    import pyarrow as pa

    senders = [int(s) for s in senders]
    digest = hashlib.sha256(json.dumps([list(prompts), list(corrupted), describe_metric(metric)]).encode()).hexdigest()[:16]
    receivers = None if receivers is None else sorted(int(r) for r in receivers)
    about = {"job": "path_patching", "model": provenance.model_fingerprint(ex), "model_name": ex.name,
             "prompts": digest, "metric": describe_metric(metric), "receivers": receivers, "modes": [mode_a, mode_b],
             "code": provenance.code_version(["xattr_lab.evaluation.circuit_patching"])}
    if out is not None:
        out = Path(out) / f"round-{provenance.cache_key(receivers=receivers, modes=[mode_a, mode_b])}"
    work = functools.partial(patching_rows, prompts=list(prompts), corrupted=list(corrupted), metric=metric,
                             receivers=receivers, mode_a=mode_a, mode_b=mode_b, batch_size=batch_size, digest=digest)
    rows = run_job(ex, senders, [str(s) for s in senders], work,
                   {"sender": pa.int64(), "effects": pa.list_(pa.float64())}, about, out=out, backend=backend,
                   address=address, workers=workers, progress=progress, desc="path patching", batched=True,
                   shard_size=shard_size or max(1, len(senders) // (4 * (workers or 2))))
    return np.array([row["effects"] for row in rows], dtype=np.float64).reshape(len(senders), len(prompts))
