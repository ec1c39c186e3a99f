"""The `xattr` command: explain from the shell and write HTML/PNG/JSON; open the workshop lab.

    xattr explain "A gripping, beautifully acted film." --method attention --html out.html
    xattr flow "A gripping film." --png flow.png --json flow.json
    xattr heads "A gripping film." --html heads.html
    xattr circuit --positive pos.txt --negative neg.txt --position -1 --center-heads --l1 0.1
    xattr evaluate texts.txt --methods ig,sig --k 0.2 --csv faithfulness.csv
    xattr lab [--no-browser]

HTML pages are self-contained (BokehJS inlined, no CDN); PNGs are drawn with matplotlib.
"""
from __future__ import annotations

import argparse
import html
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .magic import circuit_kwargs, circuit_options


def _target(value: str | None):
    from .magic import parse_target

    return parse_target(value)


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
def _outputs(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--html", default=f"xattr-{command}.html",
                   help=f"write a self-contained interactive HTML view here (default xattr-{command}.html; '' to skip)")
    p.add_argument("--png", default=None, help="write a PNG here")
    p.add_argument("--json", default=None, help="write the result's JSON here")


def _model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm-rt", help="embedded alias, local directory or hub id (default: minilm-rt)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xattr", description="Explain Transformer predictions (xattr-lab).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("explain", help="token attributions for one text")
    p.add_argument("text", help="the text to explain")
    _model(p)
    p.add_argument("--method", default="attention", help="attention, rollout, attention_flow, gaf, ig, sig, grad_x_input")
    p.add_argument("--target", default=None, help="class index/label, token, or 'a,b' for a logit difference")
    p.add_argument("--steps", default=None, help="quadrature steps (ig, sig): an int; 'auto' or 'exact' for sig")
    _outputs(p, "explain")

    p = sub.add_parser("flow", help="generalized attention flow (GAF) through the layers")
    p.add_argument("text")
    _model(p)
    p.add_argument("--target", default=None)
    p.add_argument("--info", default="agf", choices=("agf", "af", "gf"))
    _outputs(p, "flow")

    p = sub.add_parser("heads", help="attention entropy, patterns and cone index of every head")
    p.add_argument("text")
    _model(p)
    _outputs(p, "heads")

    p = sub.add_parser("circuit", help="SAE circuit codes over attention heads")
    _model(p)
    p.add_argument("--positive", required=True, help="text file: one positive prompt per line")
    p.add_argument("--negative", required=True, help="text file: one negative prompt per line")
    p.add_argument("--features", type=int, default=200)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--examples", type=int, default=10)
    circuit_options(p)
    _outputs(p, "circuit")

    p = sub.add_parser("evaluate", help="faithfulness of attribution methods over texts")
    p.add_argument("texts", help="text file: one text per line")
    _model(p)
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the paper's set)")
    p.add_argument("--k", type=float, default=0.2, help="top-k fraction (default 0.2)")
    p.add_argument("--no-cache", action="store_true", help="do not reuse or store per-text results")
    p.add_argument("--csv", default=None, help="write the table as CSV here")
    p.add_argument("--json", default=None, help="write the table as JSON (records) here")

    p = sub.add_parser("lab", help="open JupyterLab (127.0.0.1) on the quickstart notebook")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser; print the URL")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--notebook", default=None, help="notebook to open (default examples/01_quickstart.ipynb)")
    p.add_argument("--dry-run", action="store_true", help="print the command and URL, start nothing")
    return parser


# ---------------------------------------------------------------------------- commands
def _write_view(result, args) -> None:
    from xattr_lab import widgets

    if not (args.html or args.png or getattr(args, "json", None)):
        return
    view = widgets.view(result, display=False)
    if args.html:
        view.to_html(args.html)
        print(f"\nwrote {args.html}")
    if args.png:
        view.to_png(args.png)
        print(f"wrote {args.png}")
    if args.json:
        Path(args.json).write_text(result.to_json(), encoding="utf-8")
        print(f"wrote {args.json}")


def _read_lines(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from error
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds no text (one per line)")
    return lines


def _steps_option(method: str, value) -> dict:
    """The magic's rule: {"steps": int | 'auto' | 'exact'} for ig/sig; a clear error otherwise."""
    from .magic import UsageError, steps_option

    try:
        return steps_option(method, value)
    except UsageError as error:
        raise ValueError(str(error).split("\n")[0]) from None


def run_command(args) -> int:
    import xattr_lab as xa

    ex = xa.load(args.model, device=args.device)
    if args.command == "explain":
        result = ex.attribute(args.text, method=args.method, target=_target(args.target),
                              **_steps_option(args.method, args.steps))
        print(f"model {ex.name} predicts {result.prediction}")
        print(f"{result.method} attributions for target {result.target_label or result.target}:\n")
        print(format_table(result))
    elif args.command == "flow":
        result = ex.flow(args.text, info=args.info, target=_target(args.target))
        print(f"model {ex.name}; {args.info} flow for target {result.target_label or result.target}: value {result.value:.6g}\n")
        print(token_table(result.tokens, result.attributions, header="flow"))
    elif args.command == "heads":
        result = ex.heads(args.text)
        print(f"model {ex.name}: entropy (nats) and pattern per head\n")
        print(heads_table(result))
    elif args.command == "circuit":
        positive, negative = _read_lines(args.positive), _read_lines(args.negative)
        result = ex.circuit(positive, negative, **circuit_kwargs(args))
        print(f"model {ex.name}: SAE circuit over {len(positive)} positive / {len(negative)} negative prompts\n")
        print(circuit_table(result))
    else:  # evaluate
        from xattr_lab import faithfulness

        kwargs = {"k": args.k}
        if args.no_cache:
            kwargs["cache"] = False
        if args.methods:
            kwargs["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
        table = faithfulness.evaluate(ex, _read_lines(args.texts), **kwargs)
        print(table.to_string())
        if args.csv:
            table.to_csv(args.csv, index=False)
            print(f"\nwrote {args.csv}")
        if args.json:
            Path(args.json).write_text(table.to_json(orient="records"), encoding="utf-8")
            print(f"wrote {args.json}")
        return 0
    _write_view(result, args)
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quickstart_notebook() -> Path | None:
    """examples/01_quickstart.ipynb from $XATTR_LAB_EXAMPLES, the source tree, or the current folder."""
    candidates = []
    if os.environ.get("XATTR_LAB_EXAMPLES"):
        candidates.append(Path(os.environ["XATTR_LAB_EXAMPLES"]) / "01_quickstart.ipynb")
    candidates.append(Path(__file__).resolve().parents[1] / "examples" / "01_quickstart.ipynb")
    candidates.append(Path.cwd() / "examples" / "01_quickstart.ipynb")
    return next((c for c in candidates if c.is_file()), None)


def lab_command(notebook: Path, port: int, token: str, open_browser: bool) -> list[str]:
    """The JupyterLab command line: bound to 127.0.0.1, rooted at the notebook's folder."""
    cmd = [sys.executable, "-m", "jupyter", "lab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={notebook.parent}", str(notebook)]
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def run_lab(args) -> int:
    notebook = Path(args.notebook) if args.notebook else quickstart_notebook()
    if notebook is None or not notebook.is_file():
        print("xattr: error: cannot find examples/01_quickstart.ipynb; pass --notebook PATH "
              "(or set XATTR_LAB_EXAMPLES to the examples folder)", file=sys.stderr)
        return 2
    notebook = notebook.resolve()
    port = args.port or _free_port()
    token = secrets.token_hex(24)
    url = f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}"
    cmd = lab_command(notebook, port, token, open_browser=not args.no_browser)
    if args.no_browser or args.dry_run:
        print(f"JupyterLab: {url}", flush=True)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    process = subprocess.Popen(cmd)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "lab":
        return run_lab(args)
    try:
        return run_command(args)
    except (ValueError, TypeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"xattr: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
