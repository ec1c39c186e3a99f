"""Faithfulness of every attribution method on minilm-rt (held-out Rotten Tomatoes): the README's tables.

    python scripts/eval_faithfulness.py --n 300 --out results/faithfulness     # the reported run
    python scripts/eval_faithfulness.py --n 1000                               # all held-out snippets
    python scripts/eval_faithfulness.py --n 1000 --backend ray --workers 8     # on Ray actors (one GPU each)

Snippets: ``random.Random(seed).sample(xattr_lab.zoo.rotten_tomatoes("test"), n)`` (seed 0), in that
order. Methods (``--methods``, labels of ``xattr_lab.faithfulness.PAPER_METHODS`` or method names):
raw attention (last layer, [CLS] row), rollout and attention flow (residual 0.5; source: the method's
default, ``--flow-sources cls`` to force the [CLS] row), GAF with the AF, GF and AGF information
tensors, IG with [PAD] and [MASK] baselines (``--ig-steps`` Gauss-Legendre nodes, default 50), SIG with
[PAD] and [MASK] baselines at its exact limit (``steps="exact"``: each word's leave-one-out effect from
the baseline token, the limit of SIG's quadrature as the nodes grow), gradient x input, and uniform
random scores (the floor). k = 20%; AOPC over k = 10..50%.

Intervals: 95% percentile intervals of a paired bootstrap over snippets (10,000 replicates, seed 0).
Differences: every pair of methods, paired bootstrap interval and p-value, Holm-adjusted over the
pairs of each metric; "significant" = Holm-adjusted p < 0.05.

Per-text results are cached (``xattr_lab.zoo.cache_dir()/eval``) under a key of code version, model
fingerprint, method, options and k: an interrupted run resumes, a changed method recomputes. With
``--backend local|ray`` the missing records run as shards written to Parquet as they finish (under the
cache folder, ``shards/``), on Ray actors with ``ray`` (a local runtime, or ``--address``), then join
the same cache; the tables are the same. With ``--out``: table.md (what the README shows), summary.csv,
pairs.csv, per_text.csv.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

METHODS = ("attention", "rollout", "attention_flow", "gaf[af]", "gaf[gf]", "gaf[agf]", "ig[pad]", "ig[mask]",
           "sig[pad]", "sig[mask]", "grad_x_input", "random")
NAMES = {"attention": "raw attention", "rollout": "rollout", "attention_flow": "attention flow", "gaf[af]": "GAF-AF",
         "gaf[gf]": "GAF-GF", "gaf[agf]": "GAF-AGF", "ig[pad]": "IG [PAD]", "ig[mask]": "IG [MASK]",
         "sig[pad]": "SIG [PAD]", "sig[mask]": "SIG [MASK]", "grad_x_input": "grad × input", "random": "random"}
ORDER = ("aopc", "log_odds", "comprehensiveness", "sufficiency")
HEADERS = {"aopc": "AOPC ↑", "log_odds": "log-odds ↓", "comprehensiveness": "comprehensiveness ↑",
           "sufficiency": "sufficiency ↓"}
#: the pairs the README discusses (a, b): the difference is a − b
CONTRASTS = (("sig[mask]", "ig[mask]"), ("sig[pad]", "ig[pad]"), ("ig[mask]", "ig[pad]"), ("sig[mask]", "sig[pad]"),
             ("gaf[agf]", "gaf[gf]"), ("gaf[agf]", "gaf[af]"), ("gaf[gf]", "gaf[af]"), ("attention_flow", "rollout"),
             ("rollout", "attention"), ("gaf[agf]", "attention"), ("gaf[af]", "random"), ("rollout", "random"))


def pipe(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def methods_table(table, per_text) -> str:
    """method × metric (mean [95% CI]), best mean in bold, and attribution seconds per text."""
    rows = []
    cells = table.set_index(["method", "metric"])
    labels = list(dict.fromkeys(table["method"]))
    best = {}
    for metric in ORDER:
        means = {label: cells.loc[(label, metric), "mean"] for label in labels}
        better = table[table.metric == metric]["better"].iloc[0]
        best[metric] = (max if better == "higher" else min)(means, key=means.get)
    for label in labels:
        row = [NAMES.get(label, label)]
        for metric in ORDER:
            c = cells.loc[(label, metric)]
            text = _interval(c["mean"], c["ci_low"], c["ci_high"])
            row.append(f"**{text}**" if best[metric] == label else text)
        part = per_text[per_text.method == label]
        row.append(f"{part['seconds'].mean():.2f} / {part['cpu_seconds'].mean():.2f}")
        rows.append(row)
    return pipe(["method"] + [HEADERS[m] for m in ORDER] + ["s/text (wall / CPU)"], rows)


def contrasts_table(pairs, labels) -> str:
    rows = []
    for a, b in CONTRASTS:
        if a not in labels or b not in labels:
            continue
        row = [f"{NAMES.get(a, a)} − {NAMES.get(b, b)}"]
        for metric in ORDER:
            hit = pairs[(pairs.metric == metric) & (((pairs.a == a) & (pairs.b == b)) | ((pairs.a == b) & (pairs.b == a)))]
            r = hit.iloc[0]
            sign = 1 if r.a == a else -1
            low, high = sorted((sign * r.ci_low, sign * r.ci_high))
            mark = "*" if r.significant else ""
            row.append(f"{sign * r.difference:+.3f} [{low:+.3f}, {high:+.3f}]{mark}")
        rows.append(row)
    return pipe(["difference"] + [HEADERS[m] for m in ORDER], rows)


def significance_matrix(pairs, labels, metric: str) -> str:
    """Row vs column: + row significantly better, − worse, · not significant (Holm, 5%)."""
    sign = {}
    for r in pairs[pairs.metric == metric].itertuples():
        if r.significant:
            sign[(r.a, r.b)] = "+" if r.better == "a" else "−"
            sign[(r.b, r.a)] = "−" if r.better == "a" else "+"
    short = [NAMES.get(label, label) for label in labels]
    rows = [[short[i]] + ["" if a == b else sign.get((a, b), "·") for b in labels] for i, a in enumerate(labels)]
    return pipe([HEADERS[metric]] + short, rows)


def not_significant(pairs) -> str:
    lines = []
    for metric in ORDER:
        part = pairs[(pairs.metric == metric) & ~pairs.significant]
        names = ", ".join(f"{NAMES.get(r.a, r.a)} / {NAMES.get(r.b, r.b)}" for r in part.itertuples())
        names = names if len(part) <= 20 else ""
        lines.append(f"- {HEADERS[metric]}: {len(part)} of {len(pairs[pairs.metric == metric])} pairs not "
                     f"significantly different{': ' + names if names else ''}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-rt")
    parser.add_argument("--n", type=int, default=300, help="snippets (seeded subset of the 1,000 held-out ones)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=float, default=0.2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--ig-steps", default="50", help="IG quadrature nodes (an int, or 'auto')")
    parser.add_argument("--sig-steps", default="exact", help="SIG: 'exact' (the limit), 'auto' or an int")
    parser.add_argument("--flow-sources", default=None, help="sources= for rollout and attention flow "
                        "(default: the method's own default; 'cls' = the [CLS] row)")
    parser.add_argument("--replicates", type=int, default=10_000, help="bootstrap replicates")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--backend", choices=["local", "ray"], default=None,
                        help="run the missing records as Parquet-written shards, here or on Ray actors")
    parser.add_argument("--address", default=None, help="with --backend ray: the cluster (default: a local runtime)")
    parser.add_argument("--workers", type=int, default=None, help="with --backend ray: actors (default: one per "
                        "GPU, or per CPU)")
    parser.add_argument("--out", type=Path, default=None, help="folder for table.md, summary.csv, pairs.csv, "
                        "per_text.csv")
    args = parser.parse_args(argv)

    import torch

    import xattr_lab as xa
    from xattr_lab import faithfulness

    def steps(value):
        return value if value in ("auto", "exact") else int(value)

    torch.set_num_threads(args.threads)
    ex = xa.load(args.model, device="cpu")
    data = xa.zoo.rotten_tomatoes("test")
    texts = [text for text, _ in random.Random(args.seed).sample(data, min(args.n, len(data)))]
    options = {label: {"steps": steps(args.ig_steps)} for label in ("ig[pad]", "ig[mask]")}
    options.update({label: {"steps": steps(args.sig_steps)} for label in ("sig[pad]", "sig[mask]")})
    if args.flow_sources:
        options.update({label: {"sources": args.flow_sources} for label in ("rollout", "attention_flow")})
    options = {label: value for label, value in options.items() if label in args.methods}

    started = time.perf_counter()
    table, per_text = faithfulness.evaluate(ex, texts, args.methods, k=args.k, method_options=options,
                                            cache=not args.no_cache, metrics=ORDER, return_per_text=True,
                                            replicates=args.replicates, backend=args.backend, address=args.address,
                                            workers=args.workers)
    pairs = faithfulness.compare(per_text, args.methods, ORDER, replicates=args.replicates)
    elapsed = time.perf_counter() - started

    specs = faithfulness.method_specs(args.methods, options)
    spec_text = "; ".join(f"{label}: " + ", ".join(f"{k}={v}" for k, v in spec.items() if k != "method")
                          for label, spec in specs.items() if len(spec) > 1)
    compute, cpu = per_text["seconds"].sum(), per_text["cpu_seconds"].sum()
    header = (f"model {args.model}, n = {len(texts)} held-out snippets (random.Random({args.seed}).sample), "
              f"k = {args.k}, options: {spec_text}; bootstrap {args.replicates} replicates, seed 0; attribution "
              f"compute {compute / 60:.1f} min wall / {cpu / 60:.1f} min CPU (sum over records, 1 torch thread), this "
              f"run {elapsed:.0f} s wall")
    parts = [header, "### Methods (mean [95% paired-bootstrap CI]; bold = best mean)", methods_table(table, per_text),
             "### Paired differences (a − b [95% CI]; * = Holm-adjusted p < 0.05 over the "
             f"{len(pairs) // len(ORDER)} pairs of each metric)", contrasts_table(pairs, args.methods),
             "### Pairs not significantly different (Holm, 5%)", not_significant(pairs)]
    for metric in ORDER:
        parts += [f"### Significance, {HEADERS[metric]} (row vs column: + better, − worse, · not significant)",
                  significance_matrix(pairs, args.methods, metric)]
    text = "\n\n".join(parts)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text + "\n")
        table.to_csv(args.out / "summary.csv", index=False)
        pairs.to_csv(args.out / "pairs.csv", index=False)
        per_text.to_csv(args.out / "per_text.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
