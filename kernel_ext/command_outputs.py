"""What the front ends write (docs/ARCHITECTURE.md, section "Commands"): a view's files, evaluate's table and run folder.

``--html/--png/--json`` for a view; ``--csv/--json`` for evaluate's table; and evaluate's run folder
(``--out-dir DIR``, in ``xattr`` also ``--out DIR``; :data:`OUT_DIR_HELP`): the Parquet records and
provenance of :func:`xattr_lab.evaluation.distributed.shards.run_sharded`, with the table and the per-text rows beside
them. This module imports neither torch, numpy nor the widgets (a view's files load them when written).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UsageError

#: The files ``evaluate --out-dir DIR`` writes beside the Parquet records and ``_provenance.json``.
OUT_DIR_FILES = ("table.csv", "table.json", "per_text.csv")
#: The ``--help`` of ``--out-dir`` (what is written, when it resumes, when it is refused).
OUT_DIR_HELP = ("save the run in folder DIR, resumable: DIR/shard-*.parquet, one row per (method, text) record (the "
                "metrics, m, top, seconds, the text's sha256 key), with the run's provenance (model fingerprint and "
                "name, k, each method's options and code version) in DIR/_provenance.json and in each file's "
                "metadata; then DIR/table.csv and DIR/table.json (the table of this run's texts) and DIR/per_text.csv "
                "(one row per method and text, the text included). A rerun with the same model and options computes "
                "only the texts not yet in DIR; a DIR of another model or options, or holding other files, is "
                "refused and nothing is overwritten. DIR replaces the per-text cache (neither read nor written); "
                "the backend defaults to local")


def check_out_dir(folder: str) -> Path:
    """``folder`` as a Path when it is new, empty or a run folder (it holds ``_provenance.json``); else a UsageError.

    Whether an earlier run's model and options match is checked once the model is loaded (the store's provenance).
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UsageError(f"the run folder {folder} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / "_provenance.json").is_file():
        raise UsageError(f"the run folder {folder} holds other files and no xattr run (_provenance.json); give a "
                         "new or empty folder")
    return path


def save_run(folder: Path, table, per_text) -> None:
    """Beside a run's Parquet records in ``folder``: the table (CSV, JSON records) and the per-text rows (CSV)."""
    table.to_csv(folder / "table.csv", index=False)
    (folder / "table.json").write_text(table.to_json(orient="records"), encoding="utf-8")
    per_text.to_csv(folder / "per_text.csv", index=False)


def write_outputs(result, args, echo: Callable[[str], Any] = print) -> None:
    """Write the files ``args`` asks for: a view's ``--html/--png/--json``, or evaluate's ``--csv/--json``
    (its run folder is written by :func:`xattr_lab.commands.run`, as the run goes)."""
    if args.command == "evaluate":
        if args.csv:
            result.to_csv(args.csv, index=False)
            echo(f"\nwrote {args.csv}")
        if args.json:
            Path(args.json).write_text(result.to_json(orient="records"), encoding="utf-8")
            echo(f"wrote {args.json}")
        if getattr(args, "out_dir", None):
            echo(f"wrote {args.out_dir}: shard-*.parquet, _provenance.json, {', '.join(OUT_DIR_FILES)}")
        return
    if args.html or args.png:
        from . import widgets

        view = widgets.view(result, display=False)
        if args.html:
            view.to_html(args.html)
            echo(f"\nwrote {args.html}")
        if args.png:
            view.to_png(args.png)
            echo(f"wrote {args.png}")
    if args.json:
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
        echo(f"wrote {args.json}")
