"""Attribution-patching circuits (AtP, EAP, EAP-IG) against the path-patching truths, beside the SAE codes.

    python scripts/patching_report.py --task toy --runs 5 --out results/data/circuits/patching
    python scripts/patching_report.py --task ioi --runs 3 --out results/data/circuits/patching

Run r takes the held-out prompts of the SAE evaluation's run r (``scripts/circuits_report.py``: prompt sample seed
r, the ``--prompts`` prompt pairs after its ``--examples`` training prompts; the truth's prompts are disjoint), and
for each method measures on them: node ROC-AUC (|node score| vs the truth's heads), edge ROC-AUC (|edge score| over
the directed edges sender layer < receiver layer and every head -> logits, vs the truth's edges and its first
round's heads -> logits), each with a percentile bootstrap 95% CI over prompt resamples (1,000; the per-prompt
scores resampled, the truth fixed), MIB's faithfulness curve over head-circuit sizes with CPR and CMD
(:mod:`xattr_lab.methods.patching_faithfulness`), the label-free baselines (head-output norm and variance over the
same prompts and their negatives, as the SAE table) and CPU and wall seconds of the scores. Each (run, method)
record is cached under ``--cache`` keyed by the code and options (resumable). ``--out DIR`` writes
``<task>_patching.json`` (every record, provenance), ``<task>_patching.csv`` and ``<task>_patching.md`` (the table).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CODE = ["kernel_ext/methods/attribution_patching.py", "kernel_ext/methods/patching_circuits.py",
        "kernel_ext/methods/patching_faithfulness.py", "kernel_ext/evaluation/tasks.py", "kernel_ext/core/toy.py",
        "scripts/patching_report.py"]
MODEL = {"ioi": "smollm2-135m", "toy": "toy-induction"}
TRUTH = {"ioi": "results/data/circuits/ioi_smollm2_truth.json", "toy": "results/data/circuits/toy_truth.json"}
METHODS = ("atp", "eap", "eap-ig")


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def code_version() -> str:
    """Hash of the CODE files (the cache key's code part)."""
    from xattr_lab.evaluation.provenance import source_hash

    return source_hash((ROOT / name for name in CODE), ROOT)[:12]


def load_truth(ex, task: str):
    """The committed path-patching truth (results/data/circuits), else the cached builder's."""
    from xattr_lab.evaluation.circuit_truth import CircuitTruth

    path = ROOT / TRUTH[task]
    if path.exists():
        return CircuitTruth.from_json(json.dumps(json.loads(path.read_text())["truth"])), str(path.relative_to(ROOT))
    from xattr_lab.evaluation.circuit_reference import ioi_truth, toy_truth

    return (ioi_truth(ex, n=32) if task == "ioi" else toy_truth(ex)), "cache"


def held_out(ex, task: str, run: int, examples: int, count: int):
    """The SAE evaluation's run-``run`` prompt sample: (positives, negatives, metric) of its held-out part."""
    from xattr_lab import tasks

    n = examples + count
    t = tasks.ioi_prompts(ex.tokenizer, n=n, seed=run) if task == "ioi" else tasks.induction_task(ex.tokenizer, n=n,
                                                                                                   seed=100 + run)

    def metric(logits, index, full=t.metric):
        return full(logits, index + examples)

    metric.__name__ = "logit_difference(IO, S)" if task == "ioi" else "mean log-prob of the copied tokens"
    return t.positive[examples:n], t.negative[examples:n], metric


def bootstrap_auc(per_prompt: np.ndarray, score, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """[mean-score AUC, 2.5%, 97.5%] over prompt resamples: per_prompt (P, ...) -> score(mean over prompts)."""
    rng = np.random.default_rng(seed)
    P = per_prompt.shape[0]
    values = [score(per_prompt[rng.integers(0, P, P)].mean(axis=0)) for _ in range(n_boot)]
    return [score(per_prompt.mean(axis=0)), float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def one_record(ex, task: str, run: int, method: str, ground, args) -> dict:
    import torch

    from xattr_lab.circuits import head_outputs, norm_scores, roc_auc, variance_scores
    from xattr_lab.methods import patching_circuits as pc
    from xattr_lab.methods.patching_faithfulness import faithfulness_curve

    pos, neg, metric = held_out(ex, task, run, args.examples, args.prompts)
    L, H = ex.n_layers, ex.n_heads
    wall, cpu = time.perf_counter(), time.process_time()
    nodes, edges = pc.patching_scores(ex, pos, neg, method, metric, args.ig_steps, args.batch_size, args.progress,
                                      [-1] if task == "ioi" else None)
    seconds = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "threads": torch.get_num_threads()}
    truth_nodes = ground.nodes.reshape(L, H)
    record = {"run": run, "method": method, "prompts": len(pos), "seconds": seconds,
              "node_roc_auc": bootstrap_auc(nodes, lambda s: roc_auc(np.abs(s), truth_nodes))}
    edge_truth, valid = pc.directed_edge_truth(ground, L, H), pc.valid_edges(L, H)
    if edges is not None:
        record["edge_roc_auc"] = bootstrap_auc(edges, lambda s: roc_auc(np.abs(s[valid]), edge_truth[valid]))
    curve = faithfulness_curve(ex, pos, neg, metric, nodes.mean(axis=0), batch_size=args.batch_size)
    record["faithfulness"] = curve
    X = head_outputs(ex, pos + neg, position="mean", progress=False)
    record["baselines"] = {"norm_roc_auc": roc_auc(norm_scores(X), truth_nodes.ravel()),
                           "variance_roc_auc": roc_auc(variance_scores(X), truth_nodes.ravel())}
    return record


def fmt(triple) -> str:
    return "–" if triple is None else f"{triple[0]:.2f} [{triple[1]:.2f}, {triple[2]:.2f}]"


def mean_ci(values: list[float]) -> str:
    v = np.asarray(values, np.float64)
    means = v[np.random.default_rng(0).integers(0, v.size, (10_000, v.size))].mean(axis=1)
    return f"{v.mean():.2f} [{np.quantile(means, 0.025):.2f}, {np.quantile(means, 0.975):.2f}]"


def table(task: str, records: list[dict]) -> str:
    """Markdown: one row per method and run, then the mean over runs (bootstrap CI over runs)."""
    rows = ["| method | run | node ROC-AUC [95% CI, prompts] | edge ROC-AUC [95% CI] | CPR ↑ | CMD ↓ | "
            "norm / variance ROC-AUC | CPU s (wall s) |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        b, f, s = r["baselines"], r["faithfulness"], r["seconds"]
        rows.append(f"| {r['method']} | {r['run']} | {fmt(r['node_roc_auc'])} | {fmt(r.get('edge_roc_auc'))} | "
                    f"{f['cpr']:.2f} | {f['cmd']:.2f} | {b['norm_roc_auc']:.2f} / {b['variance_roc_auc']:.2f} | "
                    f"{s['cpu']:.0f} ({s['wall']:.0f}) |")
    for method in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == method]
        if len(mine) < 2:
            continue
        edge = [r["edge_roc_auc"][0] for r in mine if r.get("edge_roc_auc")]
        rows.append(f"| **{method}** | mean of {len(mine)} | {mean_ci([r['node_roc_auc'][0] for r in mine])} | "
                    f"{mean_ci(edge) if edge else '–'} | {np.mean([r['faithfulness']['cpr'] for r in mine]):.2f} | "
                    f"{np.mean([r['faithfulness']['cmd'] for r in mine]):.2f} | "
                    f"{np.mean([r['baselines']['norm_roc_auc'] for r in mine]):.2f} / "
                    f"{np.mean([r['baselines']['variance_roc_auc'] for r in mine]):.2f} | "
                    f"{np.mean([r['seconds']['cpu'] for r in mine]):.0f} "
                    f"({np.mean([r['seconds']['wall'] for r in mine]):.0f}) |")
    return "\n".join(rows)


def write_out(folder: Path, task: str, records: list[dict], meta: dict, text: str) -> None:
    from xattr_lab.evaluation.provenance import run_record

    folder.mkdir(parents=True, exist_ok=True)
    record = run_record("python scripts/patching_report.py " + " ".join(sys.argv[1:]), [MODEL[task]],
                        sum(r["seconds"]["wall"] for r in records))
    (folder / f"{task}_patching.json").write_text(json.dumps({"provenance": record, **meta, "records": records},
                                                             indent=1) + "\n")
    with open(folder / f"{task}_patching.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "run", "prompts", "node_roc_auc", "node_lo", "node_hi", "edge_roc_auc", "edge_lo",
                    "edge_hi", "cpr", "cmd", "norm_roc_auc", "variance_roc_auc", "cpu_s", "wall_s"])
        for r in records:
            e = r.get("edge_roc_auc") or [None] * 3
            w.writerow([r["method"], r["run"], r["prompts"], *r["node_roc_auc"], *e, r["faithfulness"]["cpr"],
                        r["faithfulness"]["cmd"], r["baselines"]["norm_roc_auc"], r["baselines"]["variance_roc_auc"],
                        r["seconds"]["cpu"], r["seconds"]["wall"]])
    (folder / f"{task}_patching.md").write_text(text + "\n")
    log(f"wrote {folder}/{task}_patching.{{json,csv,md}}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["ioi", "toy"], default="toy")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated: atp, eap, eap-ig")
    parser.add_argument("--runs", type=int, default=3, help="prompt samples (the SAE table's runs 0..runs-1)")
    parser.add_argument("--examples", type=int, default=10, help="the SAE's training prompts per sample, skipped")
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompt pairs per run")
    parser.add_argument("--ig-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: faster on a shared 2-core box)")
    parser.add_argument("--cache", default=None, help="folder of cached records (default cache_dir()/circuits/patching)")
    parser.add_argument("--out", default=None, help="write JSON, CSV and the markdown table here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    import torch
    from tqdm import tqdm

    import xattr_lab as xa
    from xattr_lab.zoo import cache_dir

    torch.set_num_threads(args.threads)
    ex = xa.load(MODEL[args.task], device="cpu")
    ground, source = load_truth(ex, args.task)
    folder = Path(args.cache) if args.cache else cache_dir() / "circuits" / "patching"
    folder.mkdir(parents=True, exist_ok=True)
    version, methods = code_version(), [m.strip() for m in args.methods.split(",") if m.strip()]
    records = []
    jobs = [(run, method) for run in range(args.runs) for method in methods]
    for run, method in tqdm(jobs, desc=f"{args.task} patching runs", file=sys.stderr):
        key = {"code": version, "model": ex.name, "task": args.task, "run": run, "method": method,
               "examples": args.examples, "prompts": args.prompts, "ig_steps": args.ig_steps, "truth": source,
               "threads": args.threads, "batch_size": args.batch_size}
        path = folder / f"{args.task}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
            continue
        record = one_record(ex, args.task, run, method, ground, args)
        path.write_text(json.dumps(record))
        records.append(record)
    meta = {"task": args.task, "model": ex.name, "truth": source, "truth_heads": int(ground.nodes.sum()),
            "truth_edges": int(ground.edges.sum()), "options": vars(args)}
    text = (f"{args.task} on {ex.name}: truth {meta['truth_heads']} of {ground.nodes.size} heads, "
            f"{meta['truth_edges']} head->head edges ({source}); {args.prompts} held-out prompt pairs per run, "
            f"ig_steps {args.ig_steps}, torch threads {args.threads}\n\n" + table(args.task, records))
    print(text)
    print(f"\n`python scripts/patching_report.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    if args.out:
        write_out(Path(args.out), args.task, records, meta, text)


if __name__ == "__main__":
    main()
