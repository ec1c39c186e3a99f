"""Where a cached evaluation result came from: the code version, the model fingerprint, the key.

A cached result is valid only for the code, the model and the options that produced it. The key of
a result is a hash of:

- the **code version** of what computed it: :func:`code_version` hashes the source files of the
  given ``xattr_lab`` modules and of every ``xattr_lab`` module they import, transitively (found
  statically in their syntax trees, so imports inside functions count). Editing any of those
  files changes the version; editing an unrelated module (a widget, another method family) does not;
- the **model fingerprint** (:func:`model_fingerprint`): a hash of the model's class, config and
  every parameter value, and of the tokenizer's vocabulary size;
- the method, its options and anything else the caller passes to :func:`cache_key` (k, metrics).

This module imports no torch at module level, so the pure functions are testable without a model.
"""
from __future__ import annotations

import ast
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

PACKAGE = "xattr_lab"
#: the folder that is the import package ``xattr_lab`` (``kernel_ext/``)
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of ``xattr_lab.a.b`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, top_level_only: bool):
    """Import statements, skipping ``if TYPE_CHECKING:`` blocks; with ``top_level_only``, also
    those inside functions and classes (a package ``__init__`` that imports lazily, PEP 562)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                todo.extend(child.orelse)
            elif top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            else:
                todo.append(child)


def imported_modules(name: str, path: Path, root: Path = PACKAGE_ROOT) -> set[str]:
    """``xattr_lab`` modules that the source at ``path`` (module ``name``) imports.

    Imports inside functions count (they run when the function is used), except in a package's
    ``__init__.py`` (this package's ``__init__`` files import lazily); ``if TYPE_CHECKING:`` never does.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(tree, top_level_only=_is_package(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            for alias in node.names:  # ``from . import faithfulness``: the name may be a submodule
                if module_file(f"{base}.{alias.name}", root) is not None:
                    found.add(f"{base}.{alias.name}")
    # importing a.b.c runs a/__init__.py and a/b/__init__.py too
    for module in list(found):
        parts = module.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


def closure(modules: Iterable[str], root: Path = PACKAGE_ROOT) -> list[Path]:
    """Source files of ``modules`` and of every ``xattr_lab`` module they import, transitively (sorted)."""
    todo = list(modules)
    missing = [name for name in todo if module_file(name, root) is None]
    if missing:
        raise ValueError(f"no source file for module(s) {missing} under {root}")
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = None if name in seen else module_file(name, root)
        if path is None:
            continue
        seen[name] = path
        todo.extend(imported_modules(name, path, root) - set(seen))
    return sorted(set(seen.values()))


def source_hash(paths: Iterable[Path], root: Path = PACKAGE_ROOT) -> str:
    """sha256 (16 hex digits) over each file's path relative to ``root`` and its bytes."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        try:
            label = str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            label = path.name
        digest.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=None)
def _code_version(modules: tuple[str, ...], root: str, stamp: tuple) -> str:
    return source_hash(closure(modules, Path(root)), Path(root))


def code_version(modules: Iterable[str], root: Path = PACKAGE_ROOT) -> str:
    """Hash of the source of ``modules`` and everything in ``xattr_lab`` they import (16 hex digits).

    Recomputed when any file under ``root`` changes (size or modification time), cached otherwise.
    """
    modules = tuple(sorted(set(modules)))
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(Path(root).rglob("*.py")))
    return _code_version(modules, str(root), stamp)


def method_modules(method: str) -> tuple[str, ...]:
    """The module that implements a registered method (empty for methods outside the registry)."""
    from ..methods import registry

    try:
        return (registry.spec(method).module,)
    except Exception:  # noqa: BLE001 - not a registered method (e.g. "random")
        return ()


def model_fingerprint(ex) -> str:
    """Hash of the model's name, class, config and every parameter value, and its tokenizer's size."""
    import torch

    digest = hashlib.sha256()
    config = getattr(ex.model, "config", None)
    if hasattr(config, "to_json_string"):
        config_text = config.to_json_string(use_diff=False)
    else:  # a plain config object: its fields, not its repr (which may hold a memory address)
        config_text = json.dumps(vars(config) if hasattr(config, "__dict__") else repr(config), sort_keys=True,
                                 default=str)
    for part in (ex.name, type(ex.model).__name__, config_text, str(len(ex.tokenizer))):
        digest.update(str(part).encode() + b"\0")
    with torch.no_grad():
        for name, tensor in ex.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(**parts: Any) -> str:
    """sha256 (20 hex digits) of the JSON of ``parts`` (sorted keys; other objects by ``str``)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------- committed result files
def weights_fingerprint(name: str) -> str | None:
    """sha256 (16 hex digits) of an embedded model's files (weights, config, tokenizer, manifest) as built
    under ``cache_dir()/name``, without loading it; None while it is not built."""
    from ..core.cache import cache_dir

    folder = cache_dir() / name
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def run_record(command: str, models: Iterable[str] = (), seconds: float | None = None) -> dict:
    """Where a committed result came from: the command, the code version (git commit, whether the work tree
    had uncommitted changes, and a hash of the package's source), each model's fingerprint, the UTC date and
    the machine (host, platform, CPUs, load average)."""
    import datetime
    import os
    import platform
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PACKAGE_ROOT.parent, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return {
        "command": command,
        "code": {"commit": git("rev-parse", "HEAD"), "package_hash": source_hash(sorted(PACKAGE_ROOT.rglob("*.py"))),
                 "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "kernel_ext", "scripts"))},
        "models": {name: weights_fingerprint(name) for name in models},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in load]},
        **({"seconds": round(seconds, 1)} if seconds is not None else {}),
    }
