"""The robustness experiment as a dataset-scale job: :func:`robustness_records` on a backend ("local" or "ray").

Beside its one-process code (:mod:`.experiment`); the machinery is :mod:`xattr_lab.evaluation.distributed`.
Records come back in the experiment's own form and land in its JSON cache, so its tables do not change.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..distributed.shards import strip
from ..distributed.workers import default_out, run_job

__all__ = ["robustness_records"]


# ---------------------------------------------------------------------------- robustness
def robustness_row(ex, item, config=None) -> dict[str, Any]:
    """(method, index, text) -> {"method", "index", "record": the experiment's JSON record}."""
    from .experiment import run_text

    method, index, text = item
    return {"method": method, "index": int(index), "record": json.dumps(run_text(ex, text, method, config, index))}


def robustness_records(ex, texts: Sequence[str], config, *, methods: Sequence[str] | None = None,
                       limits: Mapping[str, int] | None = None, cache: str | Path | bool = True,
                       backend: str = "local", address: str | None = None, workers: int | None = None,
                       out: str | Path | None = None, progress: bool = True) -> list[dict]:
    """:func:`.experiment.run_experiment` (every shard, ``compute=True``) on a backend.

    Records already in the experiment's JSON cache are read; the missing ones run as sharded items
    and are stored in that cache as each shard arrives, so the one-process code (``--collect``) sees them.
    """
    import pyarrow as pa

    from . import experiment

    methods = list(methods or config.methods)
    limits = dict(limits or {})
    fingerprint = experiment.sampled_fingerprint(ex)
    folder = experiment.cache_folder(config, fingerprint, cache)

    def path_of(method: str, text: str) -> Path | None:
        return experiment.record_path(folder, method, text)

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
                experiment.store_record(path, record)

    if missing:
        about = {"job": "robustness", "model": fingerprint, "model_name": ex.name, "config": config.key(fingerprint)}
        out = Path(out) if out is not None else default_out("robustness", about, folder)
        schema = {"method": pa.string(), "index": pa.int64(), "record": pa.string()}
        keys = [f"{m}/{i}/{hashlib.sha256(t.encode()).hexdigest()[:24]}" for m, i, t in missing]
        keep(run_job(ex, missing, keys, functools.partial(robustness_row, config=config), schema, about, backend=backend,
                  address=address, workers=workers, out=out, progress=progress, desc="robustness shards",
                  on_rows=keep, shard_size=1))
    return [found[(m, i)] for m, i, _ in jobs if (m, i) in found]
