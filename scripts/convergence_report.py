"""Do gradient attributions converge? Relative completeness error and time of IG and SIG on smollm2-135m.

    .venv/bin/python scripts/convergence_report.py                    # 4 IOI prompts, every method
    .venv/bin/python scripts/convergence_report.py --only 0 --methods ig50,ig_auto --json /tmp/conv0.json

Prompts: ``xattr_lab.tasks.ioi_prompts(tokenizer, n=4, seed=0).positive`` (14 tokens each).
Target: the predicted next token's logit at the last position. Baseline: "mask" (SmolLM2 has no
[MASK]: its unknown token <|endoftext|> stands in) for IG and SIG alike.

Error: ``options["relative_completeness_error"]`` = |sum of raw - (F(x) - F(x'))| / |F(x) - F(x')|
for IG, the largest per-token |raw_i - (F(x) - F(x_i -> x'_i))| / |F(x) - F(x_i -> x'_i)| for SIG
(both with the guard of ``xattr_lab.methods.integration``). Time: wall seconds of one call, with
``--threads`` torch threads (default 1), model already loaded.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

METHODS = {
    "ig50": ("ig", {"steps": 50}),
    "ig_auto": ("ig", {"steps": "auto"}),
    "sig50": ("sig", {"steps": 50}),
    "sig_auto": ("sig", {"steps": "auto"}),
    "sig_exact": ("sig", {"steps": "exact"}),
}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=4, help="number of IOI prompts (seed 0)")
    parser.add_argument("--only", default="", help="comma-separated prompt indices to run (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {list(METHODS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args(argv)

    import torch

    import xattr_lab as xa
    from xattr_lab.tasks import ioi_prompts

    torch.set_num_threads(args.threads)
    ex = xa.load(args.model, device="cpu")
    prompts = ioi_prompts(ex.tokenizer, n=args.prompts, seed=0).positive
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(prompts))
    rows = []
    print("| prompt | tokens | method | rel. completeness error | converged | nodes | gradient rows | s |")
    print("|---|---|---|---|---|---|---|---|")
    for i in chosen:
        for name in args.methods.split(","):
            method, options = METHODS[name]
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # reported in the table instead
                a = ex.attribute(prompts[i], method=method, baseline="mask", progress=False, **options)
            seconds = time.perf_counter() - started
            o = a.options
            nodes = o["nodes"] if method == "ig" else max(o["nodes"])
            row = {"prompt": i, "text": prompts[i], "tokens": len(a.tokens), "method": name,
                   "relative_completeness_error": o["relative_completeness_error"], "converged": o["converged"],
                   "nodes": nodes, "gradient_rows": o["gradient_rows"], "seconds": seconds,
                   "f_x": o["f_x"], "f_baseline": o["f_baseline"], "raw_sum": float(a.raw.sum()),
                   "per_token": o.get("relative_completeness_error_per_token")}
            rows.append(row)
            print(f"| {i} | {row['tokens']} | {name} | {row['relative_completeness_error']:.3g} | {o['converged']} | "
                  f"{nodes}{' (max/token)' if method == 'sig' else ''} | {o['gradient_rows']} | {seconds:.1f} |",
                  flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return rows


if __name__ == "__main__":
    main()
