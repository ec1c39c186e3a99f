"""Regenerate the README's SAE circuits table: IOI on smollm2-135m and the toy induction model,
paper recipe and ours (xattr), count and JSD scores, every baseline, bootstrap 95% CIs.

    python scripts/circuits_report.py truth --task ioi|toy          # the path-patching truths (cached once)
    python scripts/circuits_report.py truth --task ioi --rebuild --backend ray --workers 2  # its rounds on Ray
    python scripts/circuits_report.py table --task ioi --runs 5     # measure (resumable) and print the table
    python scripts/circuits_report.py table --task toy --runs 10
    python scripts/circuits_report.py variants --task ioi --run 0  # SAE variants on one prompt sample

Run r trains each recipe's SAE with seed r on the first ``--examples`` prompts per class of a
prompt sample drawn with seed r (disjoint from the truth's prompts) and scores the next
``--score-examples`` per class. Each run's numbers are cached under
``cache_dir()/circuits/runs/`` keyed by the code version (a hash of the circuit modules), the
model, the task and the options, so an interrupted report resumes where it stopped. A CI is the
percentile bootstrap interval of the mean over runs (10,000 resamples): it covers SAE seeds and
prompt samples. Progress goes to stderr; the table (markdown) and the command to stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CODE = ["kernel_ext/methods/sae.py", "kernel_ext/methods/circuit_scores.py", "kernel_ext/methods/circuits.py",
        "kernel_ext/core/capture.py", "kernel_ext/evaluation/circuit_truth.py", "kernel_ext/evaluation/circuit_patching.py",
        "kernel_ext/evaluation/tasks.py", "kernel_ext/core/toy.py"]
MODEL = {"ioi": "smollm2-135m", "toy": "toy-induction"}
RECIPES = ("paper", "xattr")


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def code_version() -> str:
    """Hash of the CODE files (the cache key's code part)."""
    from xattr_lab.evaluation.provenance import source_hash

    return source_hash((ROOT / name for name in CODE), ROOT)[:12]


def load(task: str):
    import torch

    import xattr_lab as xa

    torch.set_num_threads(1)  # on a shared 2-core box, 2 threads were 20x slower than 1
    return xa.load(MODEL[task], device="cpu")


def truth(ex, task: str, rebuild: bool = False):
    from xattr_lab.evaluation.circuit_reference import ioi_truth, toy_truth

    return ioi_truth(ex, n=32, rebuild=rebuild) if task == "ioi" else toy_truth(ex, rebuild=rebuild)


def write_truth(path: Path, t, ex, task: str, argv) -> None:
    """The truth as JSON (:meth:`CircuitTruth.to_json`: nodes and edges as flat head indices ``l * H + h``,
    each round's effects and intervals) under ``truth``, its provenance under ``provenance``."""
    from xattr_lab.evaluation.provenance import model_fingerprint, run_record

    record = run_record("python scripts/circuits_report.py " + " ".join(argv), [MODEL[task]], t.info.get("seconds"))
    record["model_state_fingerprint"] = model_fingerprint(ex)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": record, "truth": json.loads(t.to_json())}, indent=1) + "\n")
    log(f"wrote {path}")


def prompts(ex, task: str, n: int, seed: int):
    from xattr_lab import tasks

    if task == "ioi":
        t = tasks.ioi_prompts(ex.tokenizer, n=n, seed=seed)
    else:
        t = tasks.induction_task(ex.tokenizer, n=n, seed=100 + seed)
    return t.positive, t.negative


def one_run(ex, task: str, run: int, ground, args) -> dict:
    """Every measure of run ``run`` (both recipes, both scorings, every baseline)."""
    from xattr_lab import circuits

    pos, neg = prompts(ex, task, args.examples + args.score_examples, run)
    record: dict = {}
    nodes = ground.nodes
    for recipe in RECIPES:
        log(f"  run {run + 1}: recipe {recipe} ...")
        r = ex.circuit(pos, neg, recipe=recipe, examples=args.examples, score_examples=args.score_examples,
                       seed=run, truth=ground, progress=args.progress)
        c_pos, c_neg = r.codes
        jsd = circuits.jsd_scores(c_pos, c_neg)
        m = r.metrics
        record[recipe] = {"count": m["node_roc_auc"], "jsd": circuits.roc_auc(jsd, nodes),
                          "paper_edge_metric": m["paper_edge_metric"], "edge_roc_auc": m.get("edge_roc_auc"),
                          "seconds": m["seconds"], "position": r.options["position"], **m["baselines"]}
    scored = pos[args.examples : args.examples + args.entropy_prompts] + neg[args.examples : args.examples + args.entropy_prompts]
    record["entropy_roc_auc"] = circuits.roc_auc(-circuits.attention_entropy(ex, scored), nodes)
    return record


def ci(values: list[float]) -> tuple[float, float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return float("nan"), float("nan"), float("nan")
    means = v[np.random.default_rng(0).integers(0, v.size, (10_000, v.size))].mean(axis=1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def fmt(values: list[float]) -> str:
    mean, lo, hi = ci(values)
    return "–" if np.isnan(mean) else f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def table(args) -> None:
    ex = load(args.task)
    ground = truth(ex, args.task)
    version = code_version()
    folder = Path(args.cache or "") if args.cache else None
    if folder is None:
        from xattr_lab.zoo import cache_dir

        folder = cache_dir() / "circuits" / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for run in range(args.runs):
        key = {"code": version, "model": ex.name, "task": args.task, "run": run, "examples": args.examples,
               "score_examples": args.score_examples, "entropy_prompts": args.entropy_prompts,
               "truth": ground.info.get("key")}
        path = folder / f"{args.task}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
            log(f"run {run + 1}/{args.runs}: cached")
            continue
        start, cpu = time.perf_counter(), time.process_time()
        record = one_run(ex, args.task, run, ground, args)
        record["run_cpu_seconds"] = time.process_time() - cpu
        path.write_text(json.dumps(record))
        records.append(record)
        log(f"run {run + 1}/{args.runs}: {time.perf_counter() - start:.0f} s "
            f"(paper count {record['paper']['count']:.2f}, xattr jsd {record['xattr']['jsd']:.2f})")
    if args.out:
        write_runs(Path(args.out), args, records, ground)
    print_table(args, records, ground)


def write_runs(folder: Path, args, records: list[dict], ground) -> None:
    """``folder/<task>_runs.json``: every run's record (what the table's means and intervals come from), the
    options, the truth's key and size, and the provenance."""
    from xattr_lab.evaluation.provenance import run_record

    folder.mkdir(parents=True, exist_ok=True)
    command = "python scripts/circuits_report.py " + " ".join(sys.argv[1:])
    data = {"provenance": run_record(command, [MODEL[args.task]]),
            "options": {"task": args.task, "runs": args.runs, "examples": args.examples,
                        "score_examples": args.score_examples, "entropy_prompts": args.entropy_prompts},
            "truth": {"key": ground.info.get("key"), "heads": int(ground.nodes.sum()), "of": int(ground.nodes.size),
                      "edges": int(ground.edges.sum())},
            "runs": records}
    (folder / f"{args.task}_runs.json").write_text(json.dumps(data, indent=1) + "\n")


def runs_table(records: list[dict]) -> str:
    """The table (markdown) from the runs' records: mean [bootstrap 95% CI] over runs of each measure, per recipe;
    wall seconds of the circuit call, and CPU seconds of the whole run (both recipes, entropy) where recorded."""
    lines = ["| recipe (position) | node ROC-AUC, count | node ROC-AUC, JSD | paper_edge_metric | edge_roc_auc | "
             "class-mean difference | output norm | output variance | s per call (wall) |", "|---|---|---|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        rows = [r[recipe] for r in records]
        col = lambda k: fmt([r.get(k) for r in rows])  # noqa: E731
        seconds = np.mean([r["seconds"] for r in rows])
        lines.append(f"| {recipe} ({rows[0]['position']}) | {col('count')} | {col('jsd')} | {col('paper_edge_metric')} | "
                     f"{col('edge_roc_auc')} | {col('difference_node_roc_auc')} | {col('norm_roc_auc')} | "
                     f"{col('variance_roc_auc')} | {seconds:.0f} |")
    return "\n".join(lines)


def runs_summary(data: dict) -> str:
    """One line over the table: truth size, runs, prompts; the entropy baseline and the CPU time per run."""
    o, t, records = data["options"], data["truth"], data["runs"]
    cpu = [r["run_cpu_seconds"] for r in records if "run_cpu_seconds" in r]
    name = {"ioi": "IOI on `smollm2-135m` (dequantised from a Q4_1 GGUF)", "toy": "toy induction model"}[o["task"]]
    return (f"{name}: truth {t['heads']} of {t['of']} heads, {t['edges']} edges; {len(records)} runs (SAE seed and "
            f"prompt sample), {o['examples']} training + {o['score_examples']} held-out prompts per class; mean "
            f"[bootstrap 95% CI over runs]. Attention entropy (label-free, focused = circuit): "
            f"{fmt([r['entropy_roc_auc'] for r in records])}"
            + (f". CPU per run (both recipes and the entropy baseline): {np.mean(cpu):.0f} s" if cpu else "") + ".")


def print_table(args, records: list[dict], ground) -> None:
    data = {"options": {"task": args.task, "examples": args.examples, "score_examples": args.score_examples},
            "truth": {"heads": int(ground.nodes.sum()), "of": int(ground.nodes.size), "edges": int(ground.edges.sum())},
            "runs": records}
    print(runs_summary(data) + "\n\n" + runs_table(records))
    print(f"\ncommand: python scripts/circuits_report.py table --task {args.task} --runs {args.runs} "
          f"--examples {args.examples} --score-examples {args.score_examples}")


def variants_table(rows: list[dict]) -> str:
    """The SAE variants' table (markdown) from their rows."""
    lines = ["| recipe | position | L1 | centred | node, count | node, JSD | CPU s (SAE) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['recipe']} | {r['position']} | {r['l1']} | {'yes' if r['centred'] else 'no'} | {r['count']:.2f} | "
              f"{r['jsd']:.2f} | {r['sae_cpu_seconds']:.0f} |" for r in rows]
    return "\n".join(lines)


VARIANTS = (  # (recipe, position, l1, center_heads): the SAE variants that `variants` compares
    ("paper", "mean", 0.02, False), ("paper", -1, 0.02, False), ("xattr", -1, 0.1, True),
    ("xattr", "mean", 0.02, False), ("xattr", "mean", 0.1, False), ("xattr", "mean", 0.1, True),
)


def variants(args) -> None:
    """Node ROC-AUC (count, JSD) of each SAE variant on one prompt sample (seed ``--run``), head outputs
    computed once per position; a row per variant on stdout as soon as it is measured."""
    from xattr_lab import circuits

    ex = load(args.task)
    nodes = truth(ex, args.task).nodes
    pos, neg = prompts(ex, args.task, args.examples + args.score_examples, args.run)
    k = args.examples
    ordered = pos[:k] + neg[:k] + pos[k:] + neg[k:]
    print(f"{args.task}, prompt sample {args.run}, SAE seed {args.run}: {k} training + {len(pos) - k} held-out prompts "
          f"per class\n\n| recipe | position | L1 | centred | node, count | node, JSD | CPU s (SAE) |\n|---|---|---|---|---|---|---|")
    cache: dict = {}
    rows: list[dict] = []
    for recipe, position, l1, centre in VARIANTS:
        if position not in cache:
            cache[position] = circuits.head_outputs(ex, ordered, position=position, progress=args.progress)
        X = cache[position]
        n_pos = len(pos) - k
        start = time.process_time()
        sae = circuits.train_sae(X[: 2 * k], l1=l1, seed=args.run, recipe=recipe, center_heads=centre)
        c_pos, c_neg = circuits.codes(sae, X[2 * k : 2 * k + n_pos]), circuits.codes(sae, X[2 * k + n_pos :])
        count = circuits.roc_auc(circuits.node_scores(c_pos, c_neg), nodes)
        jsd = circuits.roc_auc(circuits.jsd_scores(c_pos, c_neg), nodes)
        cpu = time.process_time() - start
        print(f"| {recipe} | {position} | {l1} | {centre} | {count:.2f} | {jsd:.2f} | {cpu:.0f} |", flush=True)
        rows.append({"recipe": recipe, "position": position, "l1": l1, "centred": centre, "count": count, "jsd": jsd,
                     "sae_cpu_seconds": cpu})
        del sae, c_pos, c_neg
    if args.out:
        from xattr_lab.evaluation.provenance import run_record

        Path(args.out).mkdir(parents=True, exist_ok=True)
        data = {"provenance": run_record("python scripts/circuits_report.py " + " ".join(sys.argv[1:]), [MODEL[args.task]]),
                "options": {"task": args.task, "run": args.run, "examples": k, "score_examples": len(pos) - k},
                "rows": rows}
        (Path(args.out) / f"{args.task}_variants.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"\ncommand: python scripts/circuits_report.py variants --task {args.task} --run {args.run} "
          f"--examples {args.examples} --score-examples {args.score_examples}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["truth", "table", "variants"])
    parser.add_argument("--task", choices=["ioi", "toy"], default="ioi")
    parser.add_argument("--runs", type=int, default=5, help="SAE seeds x prompt samples")
    parser.add_argument("--run", type=int, default=0, help="variants: the prompt sample and SAE seed")
    parser.add_argument("--examples", type=int, default=10, help="training prompts per class")
    parser.add_argument("--score-examples", type=int, default=250, help="held-out prompts per class")
    parser.add_argument("--entropy-prompts", type=int, default=50, help="held-out prompts per class for the entropy baseline")
    parser.add_argument("--cache", default=None, help="folder for cached runs (default cache_dir()/circuits/runs)")
    parser.add_argument("--out", default=None, help="table: also write every run's record, with provenance, to "
                        "OUT/<task>_runs.json (results/data/circuits)")
    parser.add_argument("--rebuild", action="store_true", help="truth: recompute even when cached")
    parser.add_argument("--progress", action="store_true", help="progress bars inside each run (head outputs, SAE epochs)")
    parser.add_argument("--backend", choices=["local", "ray"], default=None,
                        help="truth: shard each path-patching round's sender heads (default: one process, today's loop)")
    parser.add_argument("--json", default=None, help="truth: also write it here as JSON with its provenance "
                        "(results/data/circuits/<task>_truth.json)")
    parser.add_argument("--address", default=None, help="truth: a Ray cluster to join (with --backend ray)")
    parser.add_argument("--workers", type=int, default=None, help="truth: Ray actors (default: the CPUs or GPUs)")
    args = parser.parse_args(argv)
    if args.address and args.backend != "ray":
        parser.error("--address needs --backend ray")
    if args.command == "truth":
        import contextlib

        from xattr_lab.evaluation.circuit_truth import sharding

        ex = load(args.task)
        block = sharding(args.backend, args.address, args.workers) if args.backend else contextlib.nullcontext()
        with block:
            t = truth(ex, args.task, rebuild=args.rebuild)
        H = t.nodes.shape[1]
        print(json.dumps({name: [f"{h // H}.{h % H}" for h in heads] for name, heads in t.classes.items()}))
        print(json.dumps({k: v for k, v in t.info.items() if k != "key"}))
        if args.json:
            write_truth(Path(args.json), t, ex, args.task, sys.argv[1:])
    elif args.command == "variants":
        variants(args)
    else:
        table(args)


if __name__ == "__main__":
    sys.exit(main())
