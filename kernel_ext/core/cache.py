"""The on-disk cache of built models (``$XATTR_LAB_CACHE``, default ``~/.cache/xattr-lab``).

A build is written to a temporary folder and renamed into place, with ``manifest.json`` written
last: a folder without a readable manifest, or one that fails to load, is rebuilt.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable


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


def cached(name: str, build: Callable[[Path], dict[str, Any]], load: Callable[[Path], Any], rebuild: bool = False):
    """Load ``cache_dir()/name``; build it first if missing, incomplete or unloadable."""
    folder = cache_dir() / name
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


# ---------------------------------------------------------------------------- minilm-rt
