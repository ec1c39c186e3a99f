"""Attention geometry of the embedded models, with the cone index's chance floor.

    python scripts/geometry_report.py --texts 200 --models minilm-rt smollm2-135m --out geometry-tables

Snippets: the first ``--texts`` held-out Rotten Tomatoes snippets. For each model, ``xa.geometry.head_stats``
runs over chunks of 20 texts; each chunk is cached (``xattr_lab.zoo.cache_dir()/geometry/<key>``, key: model
weights, texts, the geometry code), so a rerun computes only missing chunks, and the chunks are combined
exactly (means weighted by texts). Per layer: the mean cone index, its normalised value beside the
random-direction floor 1/√n (mean over the texts' lengths n), the normalised value above the floor
(c − 1/√n)/(1 − 1/√n) (ours), and the mean head entropy beside its ceiling (uniform rows). Head patterns: our own
rule-based taxonomy (``xa.geometry.TAXONOMY``), counted per model. With ``--out``: tables.md, geometry.json
and cone_index.png (normalised cone index by relative depth, floors dashed).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 20


def _ceiling(n: int, causal: bool) -> float:
    """Mean over query rows of the largest possible row entropy: ln n, or ln(i + 1) for causal row i."""
    from math import lgamma, log

    return lgamma(n + 1) / n if causal else log(n)


def chunk_stats(ex, texts: list[str], folder: Path | None) -> dict:
    """head_stats over ``texts`` as a JSON-able dict (cached in ``folder``)."""
    from xattr_lab import geometry

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:20]
    path = None if folder is None else folder / f"{key}.json"
    if path is not None and path.exists():
        return json.loads(path.read_text())
    started = time.process_time()
    stats = geometry.head_stats(ex, texts)
    lengths = stats.options["tokens_per_text"]
    out = {"texts": len(texts), "entropy": stats.entropy.tolist(), "cone": stats.cone_index.tolist(),
           "cone_normalised": stats.cone_index_normalised.tolist(),
           "above_floor": stats.options["cone_index_above_floor"], "floor": stats.options["cone_index_floor"],
           "log_n": float(np.mean([_ceiling(n, ex.adapter.causal) for n in lengths])), "lengths": lengths, "pattern_scores": stats.options["pattern_scores"],
           "cpu_seconds": time.process_time() - started}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
    return out


def model_geometry(name: str, texts: list[str]) -> dict:
    import xattr_lab as xa
    from tqdm.auto import tqdm
    from xattr_lab import geometry
    from xattr_lab.core.cache import cache_dir

    ex = xa.load(name, device="cpu")
    params = list(ex.model.parameters())
    digest = hashlib.sha256(inspect.getsource(geometry).encode() + Path(__file__).read_bytes() + name.encode())
    digest.update(params[len(params) // 2].detach().float().reshape(-1)[:4096].numpy().tobytes())
    folder = cache_dir() / "geometry" / digest.hexdigest()[:16]
    chunks = [chunk_stats(ex, texts[i:i + CHUNK], folder)
              for i in tqdm(range(0, len(texts), CHUNK), desc=f"geometry {name}", unit="chunk")]
    weights = np.array([c["texts"] for c in chunks], dtype=np.float64)

    def mean(key):
        return np.tensordot(weights, np.array([c[key] for c in chunks], dtype=np.float64), axes=1) / weights.sum()

    scores = {name_: np.tensordot(weights, np.array([c["pattern_scores"][name_] for c in chunks]), axes=1) / weights.sum()
              for name_ in chunks[0]["pattern_scores"]}
    patterns = geometry.classify_patterns(scores)
    lengths = [n for c in chunks for n in c["lengths"]]
    return {"model": name, "layers": ex.n_layers, "heads": int(np.asarray(chunks[0]["entropy"]).shape[1]),
            "texts": len(texts), "tokens_mean": float(np.mean(lengths)), "tokens_min": int(np.min(lengths)),
            "tokens_max": int(np.max(lengths)), "cone": mean("cone").tolist(),
            "cone_normalised": mean("cone_normalised").tolist(), "floor": float(mean("floor")),
            "above_floor": mean("above_floor").tolist(), "entropy_per_layer": mean("entropy").mean(1).tolist(),
            "log_n": float(mean("log_n")), "patterns": patterns, "counts": geometry.pattern_counts(patterns),
            "taxonomy": geometry.TAXONOMY, "cpu_seconds": sum(c["cpu_seconds"] for c in chunks)}


def layer_table(g: dict) -> str:
    lines = [f"**{g['model']}** — {g['texts']} snippets, {g['tokens_mean']:.1f} tokens on average "
             f"({g['tokens_min']}–{g['tokens_max']}); floor = mean 1/√n = {g['floor']:.3f}; entropy ceiling "
             f"(uniform rows: ln n, causal row i: ln(i+1)) = {g['log_n']:.2f} nats", "",
             "| layer | cone index | normalised | floor 1/√n | above floor (ours) | mean head entropy (nats) |",
             "|---|---|---|---|---|---|"]
    for layer, (c, cn, above) in enumerate(zip(g["cone"], g["cone_normalised"], g["above_floor"])):
        entropy = f"{g['entropy_per_layer'][layer - 1]:.2f}" if layer else "–"
        lines.append(f"| {layer} | {c:.2f} | {cn:.3f} | {g['floor']:.3f} | {above:.3f} | {entropy} |")
    return "\n".join(lines)


def pattern_table(results: list[dict]) -> str:
    names = list(results[0]["counts"])
    lines = ["| model | heads | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for g in results:
        lines.append(f"| {g['model']} | {g['layers'] * g['heads']} | " + " | ".join(str(g["counts"][n]) for n in names) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=120)
    for i, g in enumerate(results):
        values = np.asarray(g["cone_normalised"])
        depth = np.arange(values.size) / (values.size - 1)
        line, = ax.plot(depth, values, marker="o", markersize=3, label=f"{g['model']} ({g['layers']} layers)")
        ax.axhline(g["floor"], color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"floor 1/√n, {g['model']} (n̄ = {g['tokens_mean']:.0f})")
    ax.set_xlabel("relative depth (0 = embeddings, 1 = last layer)")
    ax.set_ylabel("normalised cone index")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["minilm-rt", "smollm2-135m"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    import xattr_lab as xa

    torch.set_num_threads(args.threads)
    texts = [t for t, _ in xa.zoo.rotten_tomatoes("test")[: args.texts]]
    results = [model_geometry(name, texts) for name in args.models]
    parts = [layer_table(g) + f"\n\n(CPU {g['cpu_seconds']:.0f} s, forward passes of the first time; cached after)"
             for g in results]
    parts.append("Head patterns — " + results[0]["taxonomy"] + "\n\n" + pattern_table(results))
    text = "\n\n".join(parts)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tables.md").write_text(text + "\n")
        (args.out / "geometry.json").write_text(json.dumps(results, indent=1))
        plot(results, args.out / "cone_index.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
