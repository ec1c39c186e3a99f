"""Half precision against float32 on the embedded models: for each method, max |half - float32| /
max |float32| of the raw scores, whether the top-3 tokens agree, and IG/SIG's completeness error.

    python scripts/half_precision.py minilm-rt smollm2-135m [--dtypes bfloat16 float16] [--steps 32]

Runs on the CPU (float16 matmuls there are slow: minutes per SIG). Prints one markdown row per
(model, dtype, method).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

TEXTS = {"minilm-rt": "a gripping, beautifully acted film that never lets go",
         "smollm2-135m": "When Mary and John went to the store, John gave a drink to"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(TEXTS))
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--methods", nargs="+", default=["ig", "sig", "attention", "rollout", "gaf"],
                        choices=["ig", "sig", "attention", "rollout", "gaf"])
    args = parser.parse_args(argv)
    import xattr_lab as xa

    methods = {"ig": {"steps": args.steps}, "sig": {"steps": args.steps}, "attention": {}, "rollout": {}, "gaf": {}}
    methods = {m: o for m, o in methods.items() if m in args.methods}
    print("| model | dtype | method | max rel. difference | top-3 tokens | completeness error (half / float32) | s |")
    print("|---|---|---|---|---|---|---|")
    warnings.simplefilter("ignore")
    for alias in args.models:
        text, ref = TEXTS[alias], xa.load(alias, device="cpu")
        reference = {m: ref.attribute(text, method=m, **o) for m, o in methods.items()}
        for dtype in args.dtypes:
            ex = xa.load(alias, device="cpu", dtype=dtype)
            for method, options in methods.items():
                start = time.perf_counter()
                half, full = ex.attribute(text, method=method, **options), reference[method]
                error = np.abs(half.raw - full.raw).max() / np.abs(full.raw).max()
                same = set(np.argsort(-np.abs(half.raw))[:3]) == set(np.argsort(-np.abs(full.raw))[:3])
                completeness = "" if method not in ("ig", "sig") else (
                    f"{half.options['relative_completeness_error']:.3g} / {full.options['relative_completeness_error']:.3g}")
                print(f"| {alias} | {dtype} | {method} | {error:.2%} | {'same' if same else 'differ'} | {completeness} | "
                      f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
