"""The workshop's instructor assets from the lesson notebooks (examples/*.ipynb), in three steps:

    python scripts/workshop_assets.py execute [--out build/workshop] [NAME ...]
        run each notebook headless (nbclient, as tests/integration/test_notebooks.py does) and save the executed copy
    python scripts/workshop_assets.py sizes [--out build/workshop]
        print each executed notebook's size and what it is made of (BokehJS loaders, widget state,
        the other outputs), in MB (10**6 bytes)
    python scripts/workshop_assets.py html [--out build/workshop] [--to docs/workshop/expected]
        the expected outputs: each executed notebook as one offline HTML page (``xattr export``)
    python scripts/workshop_assets.py slides [--to docs/workshop/slides]
        slides-ready PNGs (title, labelled axes, a colour scale, tight layout) from the lessons' models

``all`` runs the four in order. The executed notebooks stay in build/ (git-ignored); the HTML pages and PNGs
are the committed instructor kit (docs/workshop/FACILITATOR.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LOADER_MIMES = ("application/vnd.bokehjs_load.v0+json", "application/javascript")
MB = 1e6


def execute(names: list[str], out: Path) -> None:
    """Run each notebook in ``names`` (stems; all when empty) headless; save it executed under ``out``."""
    import nbformat
    from nbclient import NotebookClient

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        if names and path.stem not in names:
            continue
        nb = nbformat.read(path, as_version=4)
        wall, cpu = time.perf_counter(), time.process_time()
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(EXAMPLES)}}).execute()
        nbformat.write(nb, out / path.name)
        print(f"{path.name}: executed in {time.perf_counter() - wall:.0f} s wall "
              f"(this process {time.process_time() - cpu:.1f} s CPU; the kernel's CPU is not counted)", flush=True)


def size_parts(nb: dict) -> dict[str, int]:
    """Bytes of one saved notebook (its JSON as nbformat writes it) by part: BokehJS loader outputs,
    saved widget state, every other output, and the rest (sources, metadata)."""
    def size(obj) -> int:
        return len(json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))

    loaders = others = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            if any(mime in data for mime in LOADER_MIMES) and "application/vnd.xattr.v2+json" not in data:
                loaders += size(output)
            else:
                others += size(output)
    widgets = size(nb.get("metadata", {}).get("widgets", {})) if "widgets" in nb.get("metadata", {}) else 0
    return {"bokehjs_loaders": loaders, "widget_state": widgets, "other_outputs": others}


def sizes(out: Path) -> list[tuple[str, int]]:
    """Print and return (name, bytes on disk) of each executed notebook under ``out``."""
    rows = []
    print(f"{'notebook':34} {'file MB':>8} {'BokehJS loaders':>16} {'widget state':>13} {'other outputs':>14}")
    for path in sorted(out.glob("*.ipynb")):
        parts = size_parts(json.loads(path.read_text(encoding="utf-8")))
        total = path.stat().st_size
        rows.append((path.name, total))
        print(f"{path.name:34} {total / MB:8.2f} {parts['bokehjs_loaders'] / MB:16.2f} "
              f"{parts['widget_state'] / MB:13.2f} {parts['other_outputs'] / MB:14.2f}")
    return rows


def html(out: Path, to: Path) -> None:
    """Each executed notebook under ``out`` as an offline HTML page under ``to`` (``xattr export``)."""
    import subprocess

    to.mkdir(parents=True, exist_ok=True)
    for path in sorted(out.glob("*.ipynb")):
        target = to / f"{path.stem}.html"
        subprocess.run([sys.executable, "-m", "xattr_lab.cli", "export", str(path), "--html", str(target)],
                       check=True, cwd=ROOT)
        print(f"{target.relative_to(ROOT)}: {target.stat().st_size / MB:.2f} MB", flush=True)


# ---------------------------------------------------------------------------- slides
def heatmap(values, rows, cols, *, title: str, colour_label: str, fmt: str = "{:.2f}", cmap: str = "viridis",
            symmetric: bool = False, outline=(), xlabel: str = "", ylabel: str = "", numbers=None):
    """A slide's heat map: ``values`` (R, C) coloured, each cell's number written in it (``numbers`` (R, C) if
    given, else ``values``; ``fmt``), row and column labels, a labelled colour bar, ``outline`` cells ((row, col)
    pairs) boxed in red. Returns the Figure."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    values = np.asarray(values, dtype=float)
    numbers = values if numbers is None else np.asarray(numbers, dtype=float)
    R, C = values.shape
    fig = Figure(figsize=(max(6.0, 1.6 + 0.75 * C), max(3.4, 1.4 + 0.42 * R)), dpi=200, layout="constrained")
    ax = fig.add_subplot()
    peak = float(np.nanmax(np.abs(values))) or 1.0
    low, high = (-peak, peak) if symmetric else (float(np.nanmin(values)), float(np.nanmax(values)))
    image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high if high > low else low + 1, aspect="auto")
    for r in range(R):
        for c in range(C):
            shade = image.cmap(image.norm(values[r, c]))
            light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.45
            ax.text(c, r, fmt.format(numbers[r, c]), ha="center", va="center", fontsize=9, parse_math=False,
                    color="black" if light else "white")
    for r, c in outline:  # inset, so that neighbouring boxes never merge into a grid
        ax.add_patch(Rectangle((c - 0.42, r - 0.42), 0.84, 0.84, fill=False, edgecolor="#d62728", linewidth=3))
    ax.set_xticks(range(C), [str(c) for c in cols], fontsize=10)
    ax.set_yticks(range(R), [str(r) for r in rows], fontsize=10)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=12, loc="left")
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    bar.set_label(colour_label, fontsize=10)
    return fig


def bars(values: dict, *, title: str, xlabel: str, reference: float | None = None, xlim=(0.0, 1.0)):
    """A slide's horizontal bar chart of named values, each written at its bar's end (2 decimals); a dashed
    ``reference`` line (e.g. chance). Returns the Figure."""
    from matplotlib.figure import Figure

    names = list(values)
    fig = Figure(figsize=(7.5, 0.9 + 0.55 * len(names)), dpi=200, layout="constrained")
    ax = fig.add_subplot()
    ax.barh(range(len(names)), [values[n] for n in names], color="#4c72b0")
    for i, name in enumerate(names):
        ax.text(values[name] + 0.01, i, f"{values[name]:.2f}", va="center", fontsize=10)
    if reference is not None:
        ax.axvline(reference, linestyle="--", color="#888888")
        ax.text(reference, -0.62, " chance", color="#555555", fontsize=9, va="bottom")
    ax.set_yticks(range(len(names)), names, fontsize=10)
    ax.set_xlim(xlim[0], xlim[1] + 0.12 * (xlim[1] - xlim[0]))  # room for the value of a full bar
    ax.set_ylim(len(names) - 0.5, -0.75)  # top row first, room for the reference's label
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_title(title, fontsize=12, loc="left")
    return fig


def _tokens(tokens) -> list[str]:
    from xattr_lab.widgets import core

    return core.pretty_tokens(tokens)


def make_slides(to: Path) -> list[Path]:
    """Compute the lessons' headline results (minilm-rt, the toy) and write one PNG per slide under ``to``."""
    import numpy as np
    import xattr_lab as xa
    from xattr_lab import circuits, tasks, toy

    written = []

    def save(fig, name):
        path = to / name
        fig.savefig(path, bbox_inches="tight", pad_inches=0.08)
        written.append(path)

    ex = xa.load("minilm-rt")
    text = "The plot is thin, but the performances are terrific."
    # 01 / 03: IG and SIG on one review, each row scaled by its largest |score|
    ig = ex.attribute(text, method="ig", steps=32)
    sig = ex.attribute(text, method="sig", steps=16)
    rows = np.stack([ig.raw / np.abs(ig.raw).max(), sig.raw / np.abs(sig.raw).max()])
    save(heatmap(rows, ["IG", "SIG"], _tokens(ig.tokens), title=f"Which tokens push the {ig.target_label} logit? "
                 f"(minilm-rt)", colour_label="score / largest |score| of the row", cmap="RdBu_r", symmetric=True,
                 xlabel="token"), "01_03_ig_sig_tokens.png")
    # 02: each method's share of the whole attribution, per token (%)
    methods = ["attention", "rollout", "attention_flow", "gaf"]
    table = np.stack([ex.attribute(text, method=m).scores for m in methods])
    shares = 100 * table / table.sum(axis=1, keepdims=True)
    save(heatmap((shares / shares.max(axis=1, keepdims=True)).T, _tokens(ig.tokens),
                 [m.replace("_", "\n") for m in methods], fmt="{:.1f}", numbers=shares.T,
                 title="Share of each token in the attribution, % (columns sum to 100)",
                 colour_label="colour: share / the method's largest share", xlabel="method", ylabel="token"),
         "02_flow_shares.png")
    # 04: attention entropy per head, averaged over two reviews
    stats = ex.heads([text, "A gripping, beautifully acted film that never lets go."])
    entropy = np.asarray(stats.entropy, dtype=float)
    save(heatmap(entropy, [f"L{l}" for l in range(entropy.shape[0])], range(entropy.shape[1]),
                 title="Attention entropy per head (nats; low = focused)", colour_label="entropy (nats)",
                 cmap="magma", xlabel="head", ylabel="layer"), "04_head_entropy.png")
    # 05: the toy circuit: SAE node scores with the path-patching truth boxed, and the ROC-AUCs
    toy_ex = toy.load_toy()
    task = tasks.induction_task(toy_ex.tokenizer, n=60, seed=100)
    truth = circuits.toy_truth(toy_ex)
    run = toy_ex.circuit(task.positive, task.negative, recipe="xattr", scoring="jsd", examples=10,
                         score_examples=50, truth=truth, seed=0, progress=False)
    scores = np.asarray(run.node_scores, dtype=float)
    heads = [tuple(int(i) for i in cell) for cell in np.argwhere(truth.nodes)]  # truth.nodes: (L, H) bool
    save(heatmap(scores, [f"L{l}" for l in range(scores.shape[0])], range(scores.shape[1]), outline=heads,
                 title="Toy circuit: SAE node score per head\n(red box: the path-patching truth)",
                 colour_label="node score (JSD)", cmap="viridis",
                 xlabel="head", ylabel="layer"), "05_toy_node_scores.png")
    m = run.metrics
    eap = toy_ex.circuit(task.positive[:20], task.negative[:20], method="eap-ig", progress=False)
    save(bars({"SAE codes (xattr recipe)": m["node_roc_auc"],
               "EAP-IG |node score| (gradients)": circuits.roc_auc(np.abs(eap.node_scores), truth.nodes),
               "class-mean difference (uses labels)": m["baselines"]["difference_node_roc_auc"],
               "output norm (no labels)": m["baselines"]["norm_roc_auc"],
               "output variance (no labels)": m["baselines"]["variance_roc_auc"]}, reference=0.5,
              title="Toy circuit: which heads rank the truth first?", xlabel="node ROC-AUC (1 = perfect)"),
         "05_toy_roc_auc.png")
    return written


def slides(to: Path) -> None:
    """The slides' PNGs (:func:`make_slides`)."""
    to.mkdir(parents=True, exist_ok=True)
    for path in make_slides(to):
        print(f"{Path(path).relative_to(ROOT)}: {Path(path).stat().st_size / 1e3:.0f} kB", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["execute", "sizes", "html", "slides", "all"])
    parser.add_argument("names", nargs="*", help="notebook stems for execute (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "workshop")
    parser.add_argument("--to", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.step in ("execute", "all"):
        execute(args.names, args.out)
    if args.step in ("sizes", "all"):
        sizes(args.out)
    if args.step in ("html", "all"):
        html(args.out, args.to or ROOT / "docs" / "workshop" / "expected")
    if args.step in ("slides", "all"):
        slides(args.to if args.step == "slides" and args.to else ROOT / "docs" / "workshop" / "slides")


if __name__ == "__main__":
    main()
