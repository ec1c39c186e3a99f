"""Caches: built models on disk (``$XATTR_LAB_CACHE``, default ``~/.cache/xattr-lab``), and
:class:`LRUCache`, the in-memory cache bounded by a byte budget.

A build is written to a temporary folder and renamed into place, with ``manifest.json`` written
last: a folder without a readable manifest, or one that fails to load, is rebuilt. Builds of one
name take turns across processes (a file lock ``NAME.lock`` beside the folder): a second kernel
waits for the first build and loads it instead of building again. Leftover temporary folders of
killed builds are removed by the next build. This module imports neither torch nor numpy (the
widgets use :class:`LRUCache`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

from .locking import FileLock


def cache_dir() -> Path:
    """The root of xattr-lab's cache: ``$XATTR_LAB_CACHE`` or ``~/.cache/xattr-lab``."""
    return Path(os.environ.get("XATTR_LAB_CACHE") or Path.home() / ".cache" / "xattr-lab")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def building(folder: Path):
    """Yield a temporary folder next to ``folder``; on success it replaces ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".building-", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_leftover_builds(folder: Path) -> None:
    """Temporary folders of builds that were killed (only called with the build lock held)."""
    for leftover in folder.parent.glob(folder.name + ".building-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def cached(name: str, build: Callable[[Path], dict[str, Any]], load: Callable[[Path], Any], rebuild: bool = False):
    """Load ``cache_dir()/name``; build it first if missing, incomplete or unloadable.

    Building holds the lock ``cache_dir()/name.lock``; a process that waited for it loads what the
    other one built.
    """
    folder = cache_dir() / name
    if not rebuild and read_manifest(folder) is not None:
        try:
            return load(folder)
        except Exception:  # noqa: BLE001 - maybe being replaced right now: decided under the lock
            pass
    with FileLock(folder.parent / (name + ".lock")):
        _remove_leftover_builds(folder)
        if not rebuild and read_manifest(folder) is not None:
            try:
                return load(folder)
            except Exception as error:  # corrupt cache: say so, then rebuild
                warnings.warn(f"cached {name} at {folder} could not be loaded ({error}); rebuilding it", stacklevel=3)
        with building(folder) as tmp:
            manifest = build(tmp)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return load(folder)


def manifest(name: str) -> dict[str, Any] | None:
    """The build record (accuracy, build seconds, recipe) of a cached model, if built."""
    return read_manifest(cache_dir() / name)


# ---------------------------------------------------------------------------- in memory
def nbytes(value: Any, _seen: set | None = None, _depth: int = 0) -> int:
    """Approximate bytes held by ``value``: arrays and tensors (``.nbytes``), strings, containers,
    dataclasses and plain objects (their ``__dict__``), each object counted once."""
    seen = set() if _seen is None else _seen
    if id(value) in seen or _depth > 64:
        return 0
    seen.add(id(value))
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return 64 + sum(nbytes(k, seen, _depth + 1) + nbytes(v, seen, _depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 56 + sum(nbytes(v, seen, _depth + 1) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return 64 + nbytes(vars(value), seen, _depth + 1)
    return 16


class LRUCache:
    """A mapping bounded by a byte budget: the least recently used entries are dropped first.

    ``sizeof(value)`` says what an entry costs (default :func:`nbytes`); an entry bigger than the
    whole budget is not kept. Thread-safe.
    """

    def __init__(self, max_bytes: int, sizeof: Callable[[Any], int] = nbytes):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, not {max_bytes!r}")
        self.max_bytes = max_bytes
        self.sizeof = sizeof
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self.total_bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: Hashable) -> Any:
        with self._lock:
            value, _ = self._items[key]
            self._items.move_to_end(key)
            return value

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self[key] if key in self._items else default

    def __setitem__(self, key: Hashable, value: Any) -> None:
        size = int(self.sizeof(value))
        with self._lock:
            self.pop(key)
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.total_bytes += size
            while self.total_bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.total_bytes -= dropped

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            value, size = self._items.pop(key)
            self.total_bytes -= size
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.total_bytes = 0

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    def values(self) -> list:
        with self._lock:
            return [value for value, _ in self._items.values()]

    def items(self) -> list:
        with self._lock:
            return [(key, value) for key, (value, _) in self._items.items()]

    def __repr__(self) -> str:
        return f"LRUCache({len(self)} entries, {self.total_bytes} of {self.max_bytes} bytes)"
