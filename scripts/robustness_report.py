"""The paired robustness experiment behind the Results page's robustness tables.

    # the reported run: 2 shards in parallel (resumable) into one cache folder, then the tables from it
    python scripts/robustness_report.py --shard 0/2 --cache DIR &  python scripts/robustness_report.py --shard 1/2 --cache DIR; wait
    python scripts/robustness_report.py --collect --cache DIR --out results/data/robustness

Snippets: the first ``--texts`` held-out Rotten Tomatoes snippets (``xattr_lab.zoo.rotten_tomatoes("test")``)
with at least ``--min-words`` words, in order; methods IG, SIG, GAF (AGF) and raw attention on
``minilm-rt``. The default is the reported run: every method on all 200 snippets, 4,448 CPU-s summed over
records on the 2-core machine (per text: attention 1.6 s, SIG 8.3 s, GAF 3.1 s, IG 9.3 s; the committed
``results/robustness.log``); ``--limit ig=N`` runs a
costly method on the first N snippets only. Every text gets four arms
(neighbour-random, random search, gradient attack, dense embedding noise) × two permissions (top-k
replaceable or kept), see ``xattr_lab.evaluation.robustness.experiment``. Records are cached per text under
``xattr_lab.zoo.cache_dir()/robustness/<key>`` (key: model, options, code); a rerun computes only what is
missing, ``--shard i/n`` splits the texts over processes. Tables: markdown on stdout, and with ``--out`` the
full grids as CSV (summary, gaps, narrowing, method gaps, drops, per-text values) plus ``tables.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def fmt(value, lo=None, hi=None, digits=2) -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if lo is not None and not math.isnan(lo):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def pipe(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


NAMES = {"ig": "IG", "sig": "SIG", "gaf": "GAF-AGF", "attention": "attention"}


ARMS = ("neighbour", "search", "attack", "noise")


def in_arm_order(frame, by: str) -> list:
    """(``by`` value, arm) groups of ``frame``: ``by`` in order of appearance, arms in the order of ARMS."""
    first = list(dict.fromkeys(frame[by]))
    return sorted(frame.groupby([by, "arm"], sort=False),
                  key=lambda g: (first.index(g[0][0]), ARMS.index(g[0][1]) if g[0][1] in ARMS else len(ARMS)))


def arms_table(summary, drops, permission: str, level: str, k: int, w: int) -> str:
    """method × arm: each metric chance-corrected with its CI (top-k also raw), τ, share dropped."""
    rows = []
    for (method, arm), part in in_arm_order(summary[(summary.permission == permission) & (summary.level == level)],
                                            "method"):
        def cell(metric, kk, ww, corrected=True):
            hit = part[(part.metric == metric) & (part.k == kk) & (part.w == ww)]
            if hit.empty:
                return "–"
            r = hit.iloc[0]
            return fmt(r.corrected, r.corrected_lo, r.corrected_hi) if corrected else fmt(r.raw, r.raw_lo, r.raw_hi)
        drop = drops[(drops.method == method) & (drops.permission == permission) & (drops.arm == arm)].iloc[0]
        n = part[(part.metric == "topk") & (part.k == k)].n
        rows.append([NAMES.get(method, method), arm, int(n.iloc[0]) if len(n) else 0, f"{100 * drop.dropped:.0f} %",
                     cell("topk", k, 1, False), cell("topk", k, 1), cell("lens_recall", k, w),
                     cell("lens_precision", k, w), cell("topk_div", k, w), cell("kendall", 0, 0, False)])
    header = ["method", "arm", "n", "dropped", f"top-{k} ∩ raw", "top-k ∩ corr.", f"LENS recall corr. (w={w})",
              "LENS precision corr.", "top-k-div corr.", "Kendall τ"]
    return pipe(header, rows)


def gap_table(narrowing, level: str, k: int, w: int, metric: str = "lens_recall") -> str:
    rows = []
    part = narrowing[(narrowing.level == level) & (narrowing.k == k) & (narrowing.w == w) & (narrowing.metric == metric)]
    for _, r in part.iterrows():
        rows.append([NAMES.get(r.method, r.method), r.permission, r.pair, int(r.n), fmt(r.topk_gap_corrected),
                     fmt(r.gap_corrected), fmt(r.narrowed, r.narrowed_lo, r.narrowed_hi),
                     fmt(getattr(r, "narrowed_p_holm", float("nan")), digits=3),
                     fmt(getattr(r, "narrowed_p_bh", float("nan")), digits=3),
                     fmt(r.narrowed_raw, r.narrowed_raw_lo, r.narrowed_raw_hi)])
    header = ["method", "top-k", "arms", "n", f"gap top-{k} ∩ corr.", f"gap {metric} corr. (w={w})",
              "narrowed corr. [95 % CI]", "p Holm", "p BH", "narrowed raw [95 % CI]"]
    return pipe(header, rows)


def arm_gaps_table(gaps, permission: str, level: str, k: int, w: int, metric: str = "lens_recall") -> str:
    """method × arm pair: the paired gap first − second arm (texts where both were kept), chance-corrected top-k ∩
    and ``metric`` with their 95 % intervals, raw top-k ∩ beside them; > 0 means the second arm moved the map more."""
    part = gaps[(gaps.permission == permission) & (gaps.level == level)]
    rows = []
    for (method, pair), sub in part.groupby(["method", "pair"], sort=False):
        top = sub[(sub.metric == "topk") & (sub.k == k) & (sub.w == 1)]
        other = sub[(sub.metric == metric) & (sub.k == k) & (sub.w == w)]
        if top.empty or other.empty:
            continue
        t, o = top.iloc[0], other.iloc[0]
        rows.append([NAMES.get(method, method), pair, int(t.n), fmt(t.gap_corrected, t.gap_corrected_lo, t.gap_corrected_hi),
                     fmt(o.gap_corrected, o.gap_corrected_lo, o.gap_corrected_hi), fmt(t.gap, t.gap_lo, t.gap_hi)])
    header = ["method", "arms", "n", f"gap top-{k} ∩ corr.", f"gap {metric} corr. (w={w})", f"gap top-{k} ∩ raw"]
    return pipe(header, rows)


def family_summary(narrowing, metric: str = "lens_recall", alpha: float = 0.05) -> str:
    """How many of the narrowing cells of ``metric`` (one family: every method, arm pair, top-k, level, k, w) lie
    above or below 0: uncorrected 95 % intervals, then Holm and Benjamini–Hochberg adjusted p < alpha, per method."""
    part = narrowing[narrowing.metric == metric]
    lines = [f"{metric} narrowing (corrected), {len(part)} cells read together: uncorrected 95 % intervals above 0 / "
             f"below 0; Holm p < {alpha} above / below; Benjamini–Hochberg p < {alpha} above / below"]
    for method, sub in [("all", part)] + list(part.groupby("method", sort=False)):
        up, down = sub.narrowed > 0, sub.narrowed < 0
        counts = [int((sub.narrowed_lo > 0).sum()), int((sub.narrowed_hi < 0).sum())]
        for col in ("narrowed_p_holm", "narrowed_p_bh"):
            hit = sub[col] < alpha if col in sub else up & False
            counts += [int((hit & up).sum()), int((hit & down).sum())]
        lines.append(f"- {NAMES.get(method, method)} ({len(sub)} cells): {counts[0]} / {counts[1]}; Holm {counts[2]} / "
                     f"{counts[3]}; BH {counts[4]} / {counts[5]}")
    return "\n".join(lines)


def sweep_table(narrowing, pair: str, permission: str, metric: str = "lens_recall") -> str:
    """Narrowing (corrected) for every k and w > 1: one row per method and level."""
    part = narrowing[(narrowing.pair == pair) & (narrowing.permission == permission) & (narrowing.metric == metric)]
    cells = sorted({(int(k), int(w)) for k, w in zip(part.k, part.w)})
    rows = []
    for (method, level), sub in part.groupby(["method", "level"], sort=False):
        row = [NAMES.get(method, method), level]
        for k, w in cells:
            hit = sub[(sub.k == k) & (sub.w == w)]
            row.append("–" if hit.empty else fmt(hit.iloc[0].narrowed, hit.iloc[0].narrowed_lo, hit.iloc[0].narrowed_hi))
        rows.append(row)
    return pipe(["method", "level"] + [f"k={k} w={w}" for k, w in cells], rows)


def methods_table(mgaps, permission: str, level: str, k: int, w: int) -> str:
    """method pair × arm: paired difference first − second of chance-corrected values (τ raw) on shared snippets."""
    if mgaps.empty:
        return "(fewer than two methods)"
    part = mgaps[(mgaps.permission == permission) & (mgaps.level == level)]
    rows = []
    for (pair, arm), sub in in_arm_order(part, "pair"):
        def cell(metric, kk, ww):
            hit = sub[(sub.metric == metric) & (sub.k == kk) & (sub.w == ww)]
            return "–" if hit.empty else fmt(hit.iloc[0].corrected, hit.iloc[0].corrected_lo, hit.iloc[0].corrected_hi)
        n = sub[(sub.metric == "topk") & (sub.k == k)].n
        rows.append([" − ".join(NAMES.get(m, m) for m in pair.split(" − ")), arm, int(n.iloc[0]) if len(n) else 0,
                     cell("topk", k, 1), cell("lens_recall", k, w), cell("lens_precision", k, w),
                     cell("topk_div", k, w), cell("kendall", 0, 0)])
    header = ["methods", "arm", "n", f"Δ top-{k} ∩ corr.", f"Δ LENS recall corr. (w={w})", "Δ LENS precision corr.",
              "Δ top-k-div corr.", "Δ Kendall τ"]
    return pipe(header, rows)


def drops_table(drops) -> str:
    rows = [[NAMES.get(r.method, r.method), r.permission, r.arm, int(r.run), f"{100 * r.dropped:.1f} %",
             fmt(r.words_changed), fmt(r.queries, digits=1), fmt(r.seconds), r.reasons or ""] for _, r in drops.iterrows()]
    return pipe(["method", "top-k", "arm", "texts", "dropped", "words changed", "queries", "s/text", "why dropped"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-rt")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--min-words", type=int, default=10, help="skip snippets with fewer words (k = 8 needs room)")
    parser.add_argument("--methods", nargs="+", default=["attention", "sig", "gaf", "ig"])
    parser.add_argument("--limit", nargs="*", default=[],
                        help="METHOD=N: run METHOD on the first N texts only (default: none, the reported run, "
                             "every method on all texts)")
    parser.add_argument("--ig-steps", type=int, default=16, help="Gauss-Legendre nodes for IG")
    parser.add_argument("--sig-steps", default="exact")
    parser.add_argument("--budget", type=int, default=2, help="words substituted per text")
    parser.add_argument("--queries", type=int, default=3, help="candidates evaluated per step by both searches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", default="0/1", help="i/n: compute texts with index %% n == i")
    parser.add_argument("--collect", action="store_true", help="only read the cache and print tables")
    parser.add_argument("--cache", type=Path, help="read/write records in this folder instead of the keyed one "
                        "(e.g. to tabulate a finished run after the method code changed)")
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=["local", "ray"], help="run the missing records as Parquet-written shards, "
                        "here or on Ray actors (instead of --shard processes); they land in the same cache")
    parser.add_argument("--address", help="with --backend ray: the cluster to join (default: a local Ray runtime)")
    parser.add_argument("--workers", type=int, help="with --backend ray: actors (default: one per GPU or CPU)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import warnings

    import torch

    import xattr_lab as xa
    from xattr_lab.evaluation.robustness import experiment as E
    from xattr_lab.evaluation.robustness import stats as S

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r"IG \(\d+ steps\) has not converged")  # IG nodes: see --ig-steps
    ex = xa.load(args.model, device="cpu")
    texts = [t for t, _ in xa.zoo.rotten_tomatoes("test") if len(ex.tokenizer(t).word_ids()) and
             len({w for w in ex.tokenizer(t).word_ids() if w is not None}) >= args.min_words][: args.texts]
    sig_steps = args.sig_steps if args.sig_steps in ("exact", "auto") else int(args.sig_steps)
    config = E.ExperimentConfig(model=args.model, methods=tuple(args.methods), budget=args.budget,
                                queries=args.queries, seed=args.seed,
                                method_options={"ig": {"steps": args.ig_steps}, "sig": {"steps": sig_steps}})
    limits = {m: int(n) for m, n in (item.split("=") for item in args.limit)}
    shard = tuple(int(x) for x in args.shard.split("/"))
    started = time.perf_counter()
    if args.backend and not args.collect:
        from xattr_lab.evaluation.robustness import sharded

        records = sharded.robustness_records(ex, texts, config, limits=limits, cache=args.cache or True,
                                             backend=args.backend, address=args.address, workers=args.workers)
    else:
        records = E.run_experiment(ex, texts, config, limits=limits, shard=shard, compute=not args.collect,
                                   cache=args.cache or True)
    print(f"cache: {args.cache or 'cache_dir()/robustness/' + config.key(E.sampled_fingerprint(ex))}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    expected = sum(min(limits.get(m, len(texts)), len(texts)) for m in config.methods)
    print(f"{args.model}: {len(records)} of {expected} (method, text) records, {elapsed:.0f} s this run; "
          f"texts={len(texts)} (≥ {args.min_words} words) limits={limits} budget={args.budget} "
          f"queries/step={args.queries} ig_steps={args.ig_steps} sig={sig_steps}", file=sys.stderr)
    if len(records) < expected:
        print("incomplete: run the other shards (or without --collect) to fill the cache", file=sys.stderr)
        if shard[1] > 1:
            return 0
    if not records:
        print("no records to tabulate: run without --collect first (records are cached per code version, model and "
              "options, so a changed method module starts a new cache; --cache DIR reads a given one)", file=sys.stderr)
        return 2
    frame = S.metric_frame(records, config.ks, config.ws)
    summary = S.summarise(frame, draws=args.draws, seed=args.seed)
    drops = S.drop_table(records)
    gaps = S.paired_gaps(frame, draws=args.draws, seed=args.seed)
    narrow = S.narrowing(frame, draws=args.draws, seed=args.seed)
    mgaps = S.method_gaps(frame, draws=args.draws, seed=args.seed)
    compute_seconds = sum(r.get("cpu_seconds", r["seconds"]) for r in records)
    per_method = {}
    for r in records:
        count, seconds = per_method.get(r["method"], (0, 0.0))
        per_method[r["method"]] = (count + 1, seconds + r.get("cpu_seconds", r["seconds"]))
    cost = ", ".join(f"{NAMES.get(m, m)} {c} texts {s:.0f} s ({s / c:.1f} s/text)" for m, (c, s) in per_method.items())
    parts = [f"model {args.model}, {len(texts)} snippets with ≥ {args.min_words} words, limits {limits or 'none'}, "
             f"budget {args.budget} words, {args.queries} queries/step, IG {args.ig_steps} nodes, SIG {sig_steps}; "
             f"CPU {compute_seconds:.0f} s (sum over records: {cost})",
             "### Arms, top-k kept (k = 3, w = 3, token level)", arms_table(summary, drops, "kept", "token", 3, 3),
             "### Arms, top-k replaceable (k = 3, w = 3, token level)", arms_table(summary, drops, "any", "token", 3, 3),
             "### Arms, top-k kept, word level (k = 3, w = 3)", arms_table(summary, drops, "kept", "word", 3, 3),
             "### Gaps between arms, top-k kept (k = 3, w = 3, token level)", arm_gaps_table(gaps, "kept", "token", 3, 3),
             "### Does LENS narrow the gap? (k = 3, w = 3, token level)", gap_table(narrow, "token", 3, 3),
             "### Same, word level", gap_table(narrow, "word", 3, 3),
             "### Narrowing read as one family (multiplicity-corrected)", family_summary(narrow)]
    for permission in ("kept", "any"):
        parts += [f"### Methods compared on the same snippets, top-k {permission} (first − second, chance-corrected, "
                  "k = 3, w = 3, token level)", methods_table(mgaps, permission, "token", 3, 3)]
    for permission in ("kept", "any"):
        parts += [f"### Narrowing, search − attack, top-k {permission}, every k and w (LENS recall)",
                  sweep_table(narrow, "search − attack", permission)]
    parts += ["### Narrowing, neighbour − attack, top-k kept, every k and w (LENS recall)",
              sweep_table(narrow, "neighbour − attack", "kept"), "### Drops, queries, cost", drops_table(drops)]
    text = "\n\n".join(parts)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tables.md").write_text(text + "\n")
        summary.to_csv(args.out / "summary.csv", index=False)
        gaps.to_csv(args.out / "gaps.csv", index=False)
        narrow.to_csv(args.out / "narrowing.csv", index=False)
        mgaps.to_csv(args.out / "method_gaps.csv", index=False)
        drops.to_csv(args.out / "drops.csv", index=False)
        frame.to_csv(args.out / "per_text.csv.gz", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
