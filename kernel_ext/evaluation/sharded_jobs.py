"""The dataset-scale jobs on :func:`.sharded.run_sharded`: robustness and head-ablation truth.

(The faithfulness job lives with its harness, :mod:`.faithfulness_harness`, the path-patching truth's in
:mod:`.sharded_patching`; the workers and :func:`run_job` in :mod:`.sharded_workers`, their names kept
here.) Each job turns its work into items, a picklable ``work(session, item) -> row`` and a Parquet schema,
runs them with ``backend="local"`` or ``"ray"``, and hands the rows back in the form the job's
one-process code uses (the faithfulness harness's records, the robustness experiment's records,
the (L, H) ablation effects), so the tables and caches downstream do not change.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import provenance
from .sharded import strip
from .sharded_workers import default_out, load_session, run_job, session_factory  # noqa: F401 (names kept)

__all__ = ["session_factory", "run_job", "robustness_records", "ablation_effects"]


# ---------------------------------------------------------------------------- robustness
def robustness_row(ex, item, config=None) -> dict[str, Any]:
    """(method, index, text) -> {"method", "index", "record": the experiment's JSON record}."""
    from .robustness_experiment import run_text

    method, index, text = item
    return {"method": method, "index": int(index), "record": json.dumps(run_text(ex, text, method, config, index))}


def robustness_records(ex, texts: Sequence[str], config, *, methods: Sequence[str] | None = None,
                       limits: Mapping[str, int] | None = None, cache: str | Path | bool = True,
                       backend: str = "local", address: str | None = None, workers: int | None = None,
                       out: str | Path | None = None, progress: bool = True) -> list[dict]:
    """:func:`.robustness_experiment.run_experiment` (every shard, ``compute=True``) on a backend.

    Records already in the experiment's JSON cache are read; the missing ones run as sharded items
    and are stored in that cache as each shard arrives, so the one-process code (``--collect``) sees them.
    """
    import pyarrow as pa

    from . import robustness_experiment as experiment

    methods = list(methods or config.methods)
    limits = dict(limits or {})
    fingerprint = experiment._fingerprint(ex)
    folder = None
    if cache:
        from ..core.cache import cache_dir

        folder = (cache_dir() / "robustness" / config.key(fingerprint)) if cache is True else Path(cache)

    def path_of(method: str, text: str) -> Path | None:
        return None if folder is None else folder / method / (hashlib.sha256(text.encode()).hexdigest()[:24] + ".json")

    jobs = [(m, i, t) for m in methods for i, t in enumerate(texts[: limits.get(m, len(texts))])]
    found: dict[tuple[str, int], dict] = {}
    for method, index, text in jobs:
        path = path_of(method, text)
        if path is not None and path.exists():
            try:
                found[(method, index)] = json.loads(path.read_text())
            except ValueError:
                pass
    missing = [job for job in jobs if (job[0], job[1]) not in found]

    def keep(rows) -> None:
        for row in strip(rows):
            record = json.loads(row["record"])
            found[(row["method"], row["index"])] = record
            path = path_of(row["method"], record["text"])
            if path is not None:
                experiment._store(path, record)

    if missing:
        about = {"job": "robustness", "model": fingerprint, "model_name": ex.name, "config": config.key(fingerprint)}
        out = Path(out) if out is not None else default_out("robustness", about, folder)
        schema = {"method": pa.string(), "index": pa.int64(), "record": pa.string()}
        keys = [f"{m}/{i}/{hashlib.sha256(t.encode()).hexdigest()[:24]}" for m, i, t in missing]
        keep(run_job(ex, missing, keys, functools.partial(robustness_row, config=config), schema, about, backend=backend,
                  address=address, workers=workers, out=out, progress=progress, desc="robustness shards",
                  on_rows=keep, shard_size=1))
    return [found[(m, i)] for m, i, _ in jobs if (m, i) in found]


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
