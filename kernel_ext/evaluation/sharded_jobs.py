"""The dataset-scale jobs on :func:`.sharded.run_sharded`: robustness, head-ablation truth, and the workers.

(The faithfulness job lives with its harness, :mod:`.faithfulness_harness`.) Each job turns its work into items, a picklable ``work(session, item) -> row`` and a Parquet schema,
runs them with ``backend="local"`` or ``"ray"``, and hands the rows back in the form the job's
one-process code uses (the faithfulness harness's records, the robustness experiment's records,
the (L, H) ablation effects), so the tables and caches downstream do not change.

Workers load the model once per process (:func:`session_factory`): an embedded alias is loaded by
name, any other model is shipped as its (model, tokenizer) objects; each worker checks that its
model has the driver's fingerprint (:func:`.provenance.model_fingerprint`).
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from . import provenance
from .sharded import run_sharded, strip

__all__ = ["session_factory", "run_job", "robustness_records", "ablation_effects"]


# ---------------------------------------------------------------------------- workers
def load_session(source: Any, session_class: type, fingerprint: str = "", name: str = ""):
    """A ``session_class`` for ``source`` (an alias, or a (model, tokenizer) pair) on this process's device."""
    from ..core import loading

    kwargs = {"name": name} if isinstance(source, tuple) else {}
    session = loading.load(source, device="auto", session_class=session_class, **kwargs)
    if fingerprint and provenance.model_fingerprint(session) != fingerprint:
        raise InputError(f"the worker's model {name or source!r} is not the driver's (fingerprint differs); "
                         "rebuild the embedded model on every machine or pass the model object")
    return session


def session_factory(ex, fingerprint: str = "") -> Callable[[], Any]:
    """A picklable ``make_worker`` that rebuilds ``ex`` (same class, same weights) in a worker process."""
    from ..core import loading

    source = ex.name if ex.name in loading.ALIASES else (ex.model, ex.tokenizer)
    return functools.partial(load_session, source, type(ex), fingerprint, ex.name)


def default_out(kind: str, about: Mapping[str, Any], folder: Path | None) -> Path | None:
    """``folder/shards/<kind>-<hash of about>``; None without a cache folder (the run then uses a temporary one)."""
    return None if folder is None else Path(folder) / "shards" / f"{kind}-{provenance.cache_key(**about)}"


def run_job(ex, items, keys, work, schema, about, *, out: Path | None, **options):
    """:func:`run_sharded` with workers that rebuild ``ex`` (``ex`` itself serves the local backend).

    ``out`` None: a temporary folder, deleted afterwards (nothing to resume from).
    """
    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="xattr-shards-") as folder:
            return run_job(ex, items, keys, work, schema, about, out=Path(folder), **options)
    return run_sharded(items, session_factory(ex, about["model"]), work, out=out, schema=schema, provenance=about,
                       keys=keys, worker=ex, **options)


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
