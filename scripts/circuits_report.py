"""Measure SAE circuit discovery against mean-ablation ground truth (the numbers in the README).

    python scripts/circuits_report.py toy --examples 5 10 25 100 --seeds 5 [--position -1]   # toy induction
    python scripts/circuits_report.py ioi-truth --prompts 40   # one-time ablation ground truth (cached)
    python scripts/circuits_report.py ioi --seeds 10 --examples 10 --runs DIR [--position -1 --center-heads --l1 0.1]
    python scripts/circuits_report.py summarise --prompts 40 --runs DIR       # ROC-AUC of the saved runs

Every command prints JSON lines and, with --out, appends them to a file. The ablation ground truth
is cached under ``xattr_lab.zoo.cache_dir()/circuits/``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _emit(record: dict, out: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as handle:
            handle.write(line + "\n")


def _truth_path(name: str) -> Path:
    from xattr_lab.zoo import cache_dir

    folder = cache_dir() / "circuits"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.npz"


def _ioi(ex, n: int, seed: int):
    from xattr_lab import tasks

    return tasks.ioi_prompts(ex.tokenizer, n=n, seed=seed)


def ioi_truth(args) -> np.ndarray:
    """Mean-ablation effects of every smollm2-135m head on IOI (logit difference), cached."""
    import xattr_lab as xa
    from xattr_lab import circuits

    path = _truth_path(f"ioi-smollm2-135m-p{args.prompts}")
    if path.exists() and not args.rebuild:
        return np.load(path)["effects"]
    import torch

    ex = xa.load("smollm2-135m", device="cpu")
    # ground-truth prompts use their own seed, disjoint from the SAE prompts' seed
    task = _ioi(ex, args.prompts, seed=1000)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    effects = circuits.head_ablation_effects(ex, task.positive, task.metric, negatives=task.negative,
                                             batch_size=args.batch_size, progress=True, logit_positions=[-1])
    seconds = time.perf_counter() - start
    ids = torch.cat([ex.encode(p).input_ids for p in task.positive])
    with torch.no_grad(), ex.restored():
        clean = task.metric(ex.forward(input_ids=ids).logits, torch.arange(len(task.positive)))
    np.savez(path, effects=effects, seconds=seconds, clean_logit_diff=clean.numpy())
    _emit({"kind": "ioi-truth", "prompts": args.prompts, "seconds": round(seconds, 1),
           "clean_logit_diff_mean": float(clean.mean()), "clean_correct_frac": float((clean > 0).float().mean()),
           "top_heads": _top_heads(effects, 12)}, args.out)
    return effects


def _top_heads(effects: np.ndarray, k: int) -> list[str]:
    H = effects.shape[1]
    order = np.argsort(-np.abs(effects).ravel())[:k]
    return [f"{i // H}.{i % H}:{effects.ravel()[i]:+.3f}" for i in order]


def _sae_options(args) -> dict:
    return {"epochs": args.epochs, "position": args.position, "center_heads": args.center_heads, "l1": args.l1}


def ioi(args) -> None:
    """SAE runs on IOI; each run's scores are saved (--runs) so ROC-AUC can be computed later."""
    import torch

    import xattr_lab as xa

    torch.set_num_threads(args.threads)
    ex = xa.load("smollm2-135m", device="cpu")
    task = _ioi(ex, max(args.examples), seed=0)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    for examples in args.examples:
        for seed in range(args.seeds):
            # the whole pipeline: head-output cache + SAE + codes + scores (no ground truth)
            r = ex.circuit(task.positive, task.negative, examples=examples, seed=seed, progress=False,
                           **_sae_options(args))
            np.savez(runs / f"ioi-e{examples}-s{seed}.npz", node=r.node_scores, edge=r.edge_scores,
                     difference=np.asarray(r.difference_scores), seconds=r.metrics["seconds"], epochs=args.epochs,
                     options=json.dumps(r.options))
            _emit({"kind": "ioi-run", "examples": examples, "seed": seed, **r.options,
                   "seconds": round(r.metrics["seconds"], 1)}, args.out)


def summarise(args) -> None:
    """Node/edge ROC-AUC of saved IOI runs against the cached ablation ground truth."""
    from xattr_lab import circuits

    effects = ioi_truth(args)
    truth = circuits.truth_mask(effects, fraction=args.fraction)
    by_examples: dict[int, list[dict]] = {}
    for path in sorted(Path(args.runs).glob("ioi-e*-s*.npz")):
        data = np.load(path)
        examples = int(path.stem.split("-")[1][1:])
        by_examples.setdefault(examples, []).append({
            "node_roc_auc": circuits.roc_auc(data["node"], truth),
            "edge_roc_auc": circuits.edge_roc_auc(data["edge"], truth),
            # the no-SAE baseline (runs saved before it existed have none)
            "difference_node_roc_auc": circuits.roc_auc(data["difference"], truth) if "difference" in data else None,
            "seconds": float(data["seconds"]),
            "options": json.loads(str(data["options"])) if "options" in data else {"epochs": int(data["epochs"])}})
    for examples, runs in sorted(by_examples.items()):
        summary = {"kind": "ioi-summary", "examples": examples, "seeds": len(runs), "options": runs[0]["options"],
                   "truth_heads": int(truth.sum()), "fraction": args.fraction, "truth_prompts": args.prompts}
        for key in ("node_roc_auc", "edge_roc_auc", "difference_node_roc_auc", "seconds"):
            values = [m[key] for m in runs if m[key] is not None]
            if not values:
                continue
            summary[key] = round(statistics.mean(values), 4)
            summary[key + "_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        _emit(summary, args.out)


def toy(args) -> None:
    import xattr_lab as xa  # noqa: F401
    from xattr_lab import circuits
    from xattr_lab.toy import induction_metric, induction_prompts, load_toy
    from xattr_lab.zoo import manifest

    ex = load_toy(progress=True)
    pos, neg = induction_prompts(n=args.prompts, length=10, seed=1)
    effects = circuits.head_ablation_effects(ex, pos, induction_metric(pos, ex.tokenizer, 10), negatives=neg, progress=False)
    truth = circuits.truth_mask(effects, fraction=args.fraction)
    _emit({"kind": "toy-truth", "effects": np.round(effects, 3).tolist(), "truth": truth.astype(int).tolist(),
           "manifest": manifest("toy-induction")}, args.out)
    sae_pos, sae_neg = induction_prompts(n=max(args.examples), length=10, seed=2)
    for examples in args.examples:
        aucs = []
        for seed in range(args.seeds):
            r = ex.circuit(sae_pos, sae_neg, examples=examples, seed=seed, truth=truth, progress=False,
                           **_sae_options(args))
            aucs.append(r.metrics)
            _emit({"kind": "toy-run", "examples": examples, "seed": seed,
                   "node_scores": r.node_scores.tolist(), **{k: round(v, 4) for k, v in r.metrics.items()}}, args.out)
        node = [m["node_roc_auc"] for m in aucs]
        _emit({"kind": "toy-summary", "examples": examples, "seeds": args.seeds, **_sae_options(args),
               "difference_node_roc_auc": round(statistics.mean(m["difference_node_roc_auc"] for m in aucs), 4),
               "node_roc_auc": round(statistics.mean(node), 4),
               "node_roc_auc_std": round(statistics.stdev(node), 4) if len(node) > 1 else 0.0}, args.out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["toy", "ioi-truth", "ioi", "summarise"])
    parser.add_argument("--prompts", type=int, default=40, help="ablation ground-truth prompts")
    parser.add_argument("--examples", type=int, nargs="+", default=[10], help="SAE training examples per class")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=0.1, help="truth: |effect| >= fraction * max |effect|")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--position", default="mean", type=lambda v: v if v == "mean" else int(v),
                        help="'mean' or a token index for the head outputs")
    parser.add_argument("--center-heads", action="store_true", help="centre each head's outputs before the SAE")
    parser.add_argument("--l1", type=float, default=0.02, help="SAE L1 penalty")
    parser.add_argument("--epochs", type=int, default=500, help="SAE epochs")
    parser.add_argument("--runs", default="/tmp/xattr-circuit-runs", help="folder for saved IOI runs")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.command == "toy":
        toy(args)
    elif args.command == "ioi-truth":
        ioi_truth(args)
    elif args.command == "ioi":
        ioi(args)
    else:
        summarise(args)


if __name__ == "__main__":
    sys.exit(main())
