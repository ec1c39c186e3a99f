"""Bytes per saved output kind, before (v1: ``result.to_dict()``) and after (v2: ``to_payload``).

    python scripts/payload_sizes.py                       # both models, every kind, the README table
    python scripts/payload_sizes.py --cache /tmp/xsizes   # keep the computed results to rerun fast
    python scripts/payload_sizes.py --flow worst          # the largest flow payload instead of GAF (fast)

Inputs: a 128-token text on minilm-rt and a 512-token text on smollm2-135m (the size
targets: <= 1 MB and <= 3 MB per saved output). Every kind is computed on the real model:
attribution (method "attention"), flow (GAF, AGF information), heads (with attention maps, as the
head grid saves them; ``max_map_tokens`` raised to the input length, the worst case), circuit (IOI
prompts on smollm2; sentiment-like pairs on minilm-rt) and
explorer (the strip, flow and heads of the same text, as a saved Explorer keeps them).

Bytes are those of the JSON text a notebook stores (``json.dumps``, no indentation). The explorer's
"before" is what a saved Explorer held until v2 (its first view's ``to_dict()``: the strip only).
"""
from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"minilm-rt": (128, 1_000_000), "smollm2-135m": (512, 3_000_000)}
KINDS = ("attribution", "flow", "heads", "circuit", "explorer")
PARAGRAPH = ("The film opens on a quiet harbour town where nothing seems to happen, and yet every scene hides a "
             "small surprise: a letter that never arrives, a boat that leaves too early, a song that two strangers "
             "both remember. The acting is restrained, the music sparse, and the story takes its time. ")


def text_of_tokens(tokenizer, n: int) -> str:
    """The longest prefix (whole words) of a repeated paragraph whose encoding has at most ``n`` tokens."""
    words = (PARAGRAPH * (1 + 4 * n // len(PARAGRAPH.split()))).split()
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer(" ".join(words[:mid]))["input_ids"]) <= n:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def compute(model: str, n: int, cache: Path | None, flow: str = "real") -> dict:
    """{kind: Result} for ``model`` (each kind read from ``cache`` when there, else computed and kept).

    flow="worst": instead of GAF (long on a CPU for 512 tokens), a flow with every edge positive for the
    model's (L, n): the largest v2 flow (its size depends on L, n and MAX_EDGES only).
    """
    from xattr_lab.results import Result

    whole = cache / f"{model}-{n}.json" if cache else None
    found = {k: Result.from_dict(v) for k, v in json.loads(whole.read_text()).items()} \
        if whole is not None and whole.is_file() else {}
    ex, text = None, None
    for kind in ("attribution", "heads", "circuit", "flow"):
        path = cache / f"{model}-{n}-{kind}.pkl" if cache else None
        if path is not None and path.is_file():  # written by this script (pickle: a (30, 9, 512, 512) map is fast)
            found[kind] = pickle.loads(path.read_bytes())
        if kind in found and not (kind == "heads" and found[kind].attentions is None):
            continue
        if kind == "flow" and flow == "worst":
            found[kind] = worst_flow(found["heads"])
            continue
        if ex is None:
            import xattr_lab as xa

            ex = xa.load(model, device="cpu")
            text = text_of_tokens(ex.tokenizer, n)
        started = time.perf_counter()
        found[kind] = {"attribution": lambda: ex.attribute(text, method="attention"),
                       "heads": lambda: ex.heads(text, max_map_tokens=n),  # keep the maps: the view draws them
                       "circuit": lambda: circuit(ex, model), "flow": lambda: ex.flow(text)}[kind]()
        print(f"  {model} {kind}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(found[kind]))
    return found


def worst_flow(heads):
    """A FlowResult on the tokens and layers of ``heads`` with every edge (and capacity) positive."""
    import numpy as np

    from xattr_lab.results import FlowResult

    n, L = len(heads.tokens), heads.entropy.shape[0]
    E = np.random.default_rng(0).random((L, n, n)) + 1e-3
    return FlowResult(tokens=list(heads.tokens), attributions=E[0].sum(axis=0), edge_flow=E, value=float(E[-1].sum()),
                      capacities=E.copy(), info="worst case (synthetic)")


def circuit(ex, model: str):
    """A small SAE circuit run (as examples/05_circuits.ipynb): IOI on a causal LM, else labelled pairs."""
    if getattr(ex, "head", "") == "causal_lm":
        from xattr_lab import tasks

        task = tasks.ioi_prompts(ex.tokenizer, n=30, seed=0)
        positive, negative = task.positive, task.negative
    else:
        positive = [f"A wonderful, moving film number {i}." for i in range(20)]
        negative = [f"A dull, tiresome film number {i}." for i in range(20)]
    return ex.circuit(positive, negative, recipe="xattr", scoring="jsd", examples=10, score_examples=20,
                      epochs=150, seed=0, progress=False)


class SavedExplorer:
    """What a saved Explorer holds: the results of its linked views (duck-typed like widgets.Explorer)."""

    view_type = "explorer"

    def __init__(self, results: dict, model: str):
        self.model_name, self.method, self.target = model, "attention", None
        self.text = results["attribution"].text
        self._results = {"strip": results["attribution"], "flow": results["flow"], "heads": results["heads"]}

    def view_results(self) -> dict:
        return dict(self._results)

    def to_dict(self) -> dict:  # the v1 bundle of an Explorer: its first view's result only
        return self._results["strip"].to_dict()


def sizes(results: dict, model: str, kinds: tuple[str, ...] = KINDS) -> dict[str, tuple[int, int]]:
    """{kind: (v1 bytes, v2 bytes)} of the JSON a notebook stores (the explorer from the other results)."""
    from xattr_lab.payload import to_payload

    items = dict(results)
    items["explorer"] = SavedExplorer(results, model)
    return {kind: (v1_bytes(items[kind]), nbytes(to_payload(items[kind]))) for kind in kinds}


def nbytes(payload: dict) -> int:
    return len(json.dumps(payload, allow_nan=False).encode())


def v1_bytes(result) -> int:
    """Bytes of ``json.dumps(result.to_dict())``, counted slice by slice for arrays over 10^6 values
    (a (30, 9, 512, 512) attention tensor is over a gigabyte of JSON: too much to hold at once)."""
    from xattr_lab.results import to_plain

    big = {name: getattr(result, name) for name in getattr(result, "array_fields", ())
           if getattr(result, name) is not None and getattr(result, name).size > 10 ** 6}
    if not big:
        return nbytes(result.to_dict())
    light = copy.copy(result)
    for name in big:
        setattr(light, name, None)
    total = nbytes(light.to_dict())
    for array in big.values():  # "[" + ", ".join(slices) + "]" in place of "null"
        chunks = sum(len(json.dumps(to_plain(a), allow_nan=False)) for a in array)
        total += 2 + 2 * (len(array) - 1) - len("null") + chunks
    return total


def table(rows: dict[str, dict[str, tuple[int, int]]], synthetic: frozenset = frozenset()) -> str:
    """The README table; ``synthetic``: the (model, kind) pairs measured on a worst-case flow."""
    lines = ["| model (tokens) | kind | v1 bytes | v2 bytes | ratio | target |", "|---|---|---:|---:|---:|---|"]
    for model, by_kind in rows.items():
        n, limit = TARGETS[model]
        for kind, (before, after) in by_kind.items():
            ok = "ok" if after <= limit else "OVER"
            label = f"{kind} (worst-case flow)" if (model, kind) in synthetic else kind
            ratio = f"{before / after:,.{0 if before >= 10 * after else 2}f}x"
            lines.append(f"| {model} ({n}) | {label} | {before:,} | {after:,} | {ratio} | "
                         f"<= {limit // 1_000_000} MB {ok} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="keep/read computed results (v1 JSON) here")
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--flow", choices=("real", "worst"), default="real",
                        help="worst: a synthetic flow with every edge positive instead of GAF (see compute)")
    parser.add_argument("--worst-for", nargs="+", default=None, choices=list(TARGETS),
                        help="with --flow worst: only these models get the synthetic flow (default: every model)")
    args = parser.parse_args(argv)
    worst = set(args.worst_for or TARGETS) if args.flow == "worst" else set()
    found = {model: compute(model, TARGETS[model][0], args.cache, "worst" if model in worst else "real")
             for model in args.models}
    rows = {model: sizes(results, model) for model, results in found.items()}
    synthetic = frozenset((m, k) for m, r in found.items() if r["flow"].info.startswith("worst")
                          for k in ("flow", "explorer"))
    print(table(rows, synthetic))
    return 0 if all(a <= TARGETS[m][1] for m, r in rows.items() for _, a in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
