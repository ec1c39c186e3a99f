"""Dataset-scale runs: items -> shards -> rows in Parquet, resumable, in this process or on Ray.

:func:`run_sharded` applies ``work(worker, item) -> row`` to every item. Items are cut into shards
of ``shard_size`` consecutive items (the unit of scheduling and of writing); a shard's rows are
written to ``out/shard-*.parquet`` as soon as it finishes (write to a temporary file, then rename:
a file is whole or absent), with the table schema and the run's provenance (code version, model
fingerprint, options) in the file's metadata and in ``out/_provenance.json``.

Resume: every item has a key (``keys``, default the item's ``repr``); items whose key is already in
a shard file of ``out`` are read, never recomputed. ``out`` holding another provenance is an error
(nothing is overwritten). Items with equal keys are computed once.

Backends (``backend=``): ``"local"`` runs the shards in this process with one worker; ``"ray"``
(:mod:`.ray_backend`) runs them on Ray actors that each build the worker once (``make_worker()``,
e.g. load the model) and retries a shard whose actor died on a fresh actor. Both run the same
``work`` on the same items, so the rows are equal up to floating-point reduction order (the tests
check 1e-6 relative and absolute, float32 arithmetic).
"""
from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...errors import BackendError, InputError
from . import ray_backend

BACKENDS = ("local", "ray")
PROVENANCE_FILE = "_provenance.json"
METADATA_KEY = b"xattr_lab.provenance"
KEY, ITEM = "_key", "_item"  # columns added to every row: the item's key, its position in this run


def check_backend(backend: str) -> str:
    """``backend`` when it is one of :data:`BACKENDS`, else an :class:`InputError`."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    return backend


def default_shard_size(n_items: int, workers: int) -> int:
    """About four shards per worker (the load balances, a lost shard costs little), 1..16 items each."""
    return max(1, min(16, math.ceil(n_items / (4 * max(1, workers)))))


def make_shards(positions: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``size`` positions (the last may be shorter)."""
    if size < 1:
        raise InputError(f"shard_size must be at least 1, not {size}")
    positions = list(positions)
    return [positions[i : i + size] for i in range(0, len(positions), size)]


# ---------------------------------------------------------------------------- the Parquet store
def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the ray extra brings it
        raise BackendError("sharded runs write Parquet and need pyarrow: pip install 'xattr-lab[ray]'") from None
    return pa, pq


def full_schema(schema: Any):
    """``schema`` (a ``pyarrow.Schema`` or {column: pyarrow type}) with the key and item columns first."""
    pa, _ = _pyarrow()
    fields = list(schema) if isinstance(schema, pa.Schema) else [pa.field(n, t) for n, t in dict(schema).items()]
    clash = {f.name for f in fields} & {KEY, ITEM}
    if clash:
        raise InputError(f"the columns {sorted(clash)} are reserved for the key and position of each item")
    return pa.schema([pa.field(KEY, pa.string()), pa.field(ITEM, pa.int64()), *fields])


def open_store(out: Path, provenance: Mapping[str, Any]) -> Path:
    """Create ``out`` or check that it holds the same provenance (an :class:`InputError` otherwise)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = json.loads(json.dumps(dict(provenance), sort_keys=True, default=str))
    path = out / PROVENANCE_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != wanted:
            differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise InputError(f"{out} holds results of another run (different {differ}); pass a new out folder "
                             "or delete this one")
    else:
        _atomic_write(path, lambda handle: handle.write(json.dumps(wanted, sort_keys=True, indent=1).encode()))
    return out


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_shard(out: Path, rows: Sequence[Mapping[str, Any]], schema, provenance: Mapping[str, Any]) -> Path:
    """One shard's rows -> ``out/shard-<first item>-<random>.parquet`` (atomic), provenance in its metadata."""
    pa, pq = _pyarrow()
    meta = {METADATA_KEY: json.dumps(dict(provenance), sort_keys=True, default=str).encode()}
    table = pa.Table.from_pylist(list(rows), schema=schema.with_metadata(meta))
    first = int(rows[0][ITEM]) if rows else 0
    path = Path(out) / f"shard-{first:09d}-{uuid.uuid4().hex[:8]}.parquet"
    _atomic_write(path, lambda handle: pq.write_table(table, handle))
    return path


def read_store(out: Path) -> list[dict[str, Any]]:
    """Every row written to ``out`` so far (shard files in name order)."""
    _, pq = _pyarrow()
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(out).glob("shard-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def read_provenance(out: Path) -> dict[str, Any]:
    return json.loads((Path(out) / PROVENANCE_FILE).read_text())


# ---------------------------------------------------------------------------- running
def run_sharded(
    items: Sequence[Any],
    make_worker: Callable[[], Any],
    work: Callable[[Any, Any], Mapping[str, Any]],
    *,
    out: str | Path,
    schema: Any,
    provenance: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    shard_size: int | None = None,
    worker: Any = None,
    batched: bool = False,
    on_rows: Callable[[list[dict[str, Any]]], Any] | None = None,
    progress: bool = True,
    desc: str = "shards",
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """``work(worker, item)`` for every item -> its row (a dict of the schema's columns), in item order.

    make_worker: builds the per-process state (e.g. loads the model); called once per Ray actor, and
        once here for the local backend unless ``worker`` is given. Both must be picklable for Ray
        (module-level functions, ``functools.partial`` of them).
    out: folder of the Parquet shards (created; resumed when it holds this provenance).
    schema: ``pyarrow.Schema`` or {column: pyarrow type}; rows gain ``_key`` and ``_item`` columns.
    keys: one string per item identifying it across runs (default ``repr(item)``).
    backend, address, workers: ``"local"``, or ``"ray"`` (a local Ray runtime with ``workers`` actors,
        default the CPUs or GPUs it has, or the cluster at ``address``; see :mod:`.ray_backend`).
    batched: ``work(worker, [items]) -> [rows]`` gets a whole shard at once (one batched pass).
    on_rows: called with each shard's rows after they are written (e.g. to update another cache).
    timeout: seconds (at most 30) for the cluster at ``address`` to answer before Ray joins it.
    """
    check_backend(backend)
    items = list(items)
    keys = [repr(item) for item in items] if keys is None else [str(k) for k in keys]
    if len(keys) != len(items):
        raise InputError(f"keys has {len(keys)} entries for {len(items)} items")
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    table_schema = full_schema(schema)
    out = open_store(Path(out), provenance)
    done = {row[KEY]: row for row in read_store(out)}
    pending: dict[str, int] = {}
    for position, key in enumerate(keys):
        if key not in done and key not in pending:
            pending[key] = position
    size = shard_size or default_shard_size(len(pending), workers or 2)
    tasks = [[(position, keys[position], items[position]) for position in shard]
             for shard in make_shards(list(pending.values()), size)]
    bar = _progress_bar(len(items), len(items) - len(pending), progress, desc)

    def store(rows: list[dict[str, Any]]) -> None:
        write_shard(out, rows, table_schema, provenance)
        for row in rows:
            done[row[KEY]] = row
        bar.update(len(rows))
        if on_rows is not None:
            on_rows(rows)

    runner = functools.partial(run_task, batched=batched)
    try:
        if tasks and backend == "local":
            state = worker if worker is not None else make_worker()
            for task in tasks:
                store(runner(state, work, task))
        elif tasks:
            ray_backend.run(tasks, make_worker, runner, work, store, address=address, workers=workers,
                            timeout=timeout)
    finally:
        bar.close()
    return [dict(done[key], **{ITEM: position}) for position, key in enumerate(keys)]


def run_task(state: Any, work: Callable, task: Sequence[tuple[int, str, Any]], batched: bool = False):
    """One shard: ``[(position, key, item)]`` -> rows with their ``_key`` and ``_item``."""
    if batched:
        rows = list(work(state, [item for _, _, item in task]))
        if len(rows) != len(task):
            raise InputError(f"a batched work returned {len(rows)} rows for {len(task)} items")
    else:
        rows = [work(state, item) for _, _, item in task]
    return [{KEY: key, ITEM: position, **dict(row)} for (position, key, _), row in zip(task, rows)]


def _progress_bar(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, smoothing=0.05)


def strip(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the ``_key`` and ``_item`` columns."""
    return [{k: v for k, v in row.items() if k not in (KEY, ITEM)} for row in rows]
