"""Time IG and SIG at their defaults against the paper's fixed 50 steps, same process, same text.

    .venv/bin/python scripts/gradient_defaults_time.py                      # every case, 2 threads
    .venv/bin/python scripts/gradient_defaults_time.py --cases minilm --threads 1

Cases (model, method, tokens): ``ig40`` smollm2-135m IG on a 40-token sentence; ``sig26`` smollm2-135m SIG on a
26-token sentence; ``minilm`` minilm-rt (the demo classifier) IG and SIG on the Makefile's demo sentence.
Each case runs the default (no ``steps``: IG "auto" on nested 5-node panels with the signed stop, SIG "exact"), then
``steps=50`` (the earlier default); ``--extra`` adds IG ``quadrature="gausslegendre"`` (the previous "auto":
4-node Gauss-Legendre panels, none reused, stopping on the unsigned sum of panel errors) and
``cancellation_guard=None`` (nested panels, unsigned stop), each in the same process on the same text. Baselines are the defaults
(IG "pad", SIG "mask"); the target is the predicted token or class. Prints one markdown row per run: wall and CPU
seconds (``time.process_time``: all threads of this process) of that call alone, model already loaded.
"""
from __future__ import annotations

import argparse
import time
import warnings

IG40 = ("The old lighthouse keeper climbed the narrow stairs every evening to light the lamp, and on clear nights "
        "he could see the lights of three small fishing villages along the rocky northern coast of the island he loved.")
SIG26 = ("The committee met on Tuesday morning to discuss the new city budget, but after two long hours of debate "
         "they still could not agree on")
DEMO = "A gripping, beautifully acted film."


def _runs(extra: bool) -> dict:
    before, default = {"steps": 50}, {}
    ig = [("ig", default), ("ig", before)] + ([("ig", {"quadrature": "gausslegendre"}),
                                               ("ig", {"cancellation_guard": None})] if extra else [])
    return {"ig40": ("smollm2-135m", IG40, ig), "sig26": ("smollm2-135m", SIG26, [("sig", default), ("sig", before)]),
            "minilm": ("minilm-rt", DEMO, [("ig", default), ("ig", before), ("sig", default), ("sig", before)])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="ig40,sig26,minilm", help="comma-separated: ig40, sig26, minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", action="store_true", help="also IG's previous 'auto' panels and the unsigned stop")
    parser.add_argument("--defaults-only", action="store_true", help="only the defaults (no steps=50 runs)")
    args = parser.parse_args(argv)
    import torch

    import xattr_lab as xa

    torch.set_num_threads(args.threads)
    runs, loaded = _runs(args.extra), {}
    print("| model | method | tokens | options | wall s | CPU s | converged | rel. completeness error | nodes | "
          "gradient rows | panel error sum |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        model, text, calls = runs[case]
        ex = loaded.setdefault(model, xa.load(model, device="cpu"))
        ex.attribute(text, method="grad_x_input")  # warm-up (first-call overheads are not the method's)
        for method, options in calls:
            if args.defaults_only and options:
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # reported in the row instead
                a = ex.attribute(text, method=method, progress=False, **options)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            o = a.options
            nodes = max(o["nodes"]) if isinstance(o["nodes"], list) else o["nodes"]
            print(f"| {model} | {method} | {len(a.tokens)} | {options or 'default (' + str(o['steps']) + ')'} | "
                  f"{wall:.1f} | {cpu:.1f} | {o['converged']} | {o['relative_completeness_error']:.3g} | {nodes} | "
                  f"{o['gradient_rows']} | {o.get('panel_error_sum', float('nan')):.3g} |", flush=True)


if __name__ == "__main__":
    main()
