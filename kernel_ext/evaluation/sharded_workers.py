"""Workers of the sharded jobs (:mod:`.sharded_jobs`, :mod:`.sharded_patching`) and :func:`run_job`.

Workers load the model once per process (:func:`session_factory`): an embedded alias is loaded by
name, any other model is shipped as its (model, tokenizer) objects; each worker checks that its
model has the driver's fingerprint (:func:`.provenance.model_fingerprint`).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import InputError
from . import provenance
from .sharded import run_sharded

__all__ = ["load_session", "session_factory", "default_out", "run_job"]


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
