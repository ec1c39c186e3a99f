"""Time the whole IOI circuits pipeline on smollm2-135m, as a user runs it (goal: <= 60 s wall, docs/results.md).

    python scripts/circuits_pipeline_time.py [THREADS] [paper|xattr]

Load the model, build 260 + 260 IOI prompts, read the path-patching truth (computed once per model and code
version, then cached: the first run also builds it, ≈ 2 min), train the SAE on 10 prompts per class and score the
next 250 per class. Prints wall and CPU seconds and the node ROC-AUC of this one run (one prompt sample, one seed).
"""
import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("threads", nargs="?", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("recipe", nargs="?", choices=("paper", "xattr"), default="paper")
    parser.add_argument("--json", default=None, help="also write the numbers, with provenance, here")
    args = parser.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()  # the imports count: a user pays for them too
    import torch

    import xattr_lab as xa

    torch.set_num_threads(args.threads)
    ex = xa.load("smollm2-135m")
    ioi = xa.tasks.ioi_prompts(ex.tokenizer, n=260, seed=0)
    truth = xa.circuits.ioi_truth(ex, n=32)  # the IOI table's truth (scripts/circuits_report.py truth --task ioi)
    r = ex.circuit(ioi.positive, ioi.negative, examples=10, score_examples=250, recipe=args.recipe, truth=truth,
                   seed=0, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"recipe={args.recipe} threads={torch.get_num_threads()} wall={wall:.1f}s cpu={cpu:.1f}s "
          f"node_roc_auc={r.metrics.get('node_roc_auc'):.3f}")
    if args.json:
        from xattr_lab.evaluation.provenance import run_record

        record = {"provenance": run_record(f"python scripts/circuits_pipeline_time.py {args.threads} {args.recipe}",
                                           ["smollm2-135m"], wall),
                  "recipe": args.recipe, "threads": args.threads, "truth_prompts": truth.info.get("prompts"),
                  "wall_seconds": wall, "cpu_seconds": cpu, "node_roc_auc": r.metrics.get("node_roc_auc")}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
