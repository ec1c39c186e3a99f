"""The Results page's tables, rendered from the committed data (``results/data/``), and the check that they agree.

    python scripts/results.py --render    # rewrite every table of docs/results.md whose data is committed
    python scripts/results.py --check     # exit 1 when a table and its data disagree; lists tables with no data yet

A table on the page sits between markers ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; NAME is a key
of :data:`TABLES`, whose entry names the data files (relative to the data folder, ``results/data``) and the
function that turns them into markdown. The per-area scripts' own formatting functions do the rendering, so
the page shows exactly what the script prints from the same data. A table whose data is not committed yet is
left as it is and reported as "no data yet".
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
DATA = ROOT / "results" / "data"
MARKER = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /results:(?P=name) -->)", re.S)


def _script(name: str):
    """A per-area script as a module (scripts/ is not a package)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    return __import__(name)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _csv(path: Path):
    import pandas as pd

    return pd.read_csv(path)


# ---------------------------------------------------------------------------- renderers (data files -> markdown)
def demo(manifest: Path) -> str:
    m = _json(manifest)
    return (f"`minilm-rt`: {100 * m['test_accuracy']:.1f} % accuracy on the {m['test_size']:,} held-out snippets; "
            f"build {m['build_seconds']:,.0f} s wall on the machine that built it (load varies; "
            f"`xa.zoo.load_alias('minilm-rt', rebuild=True)` rebuilds)")


def faithfulness_methods(summary: Path, per_text: Path) -> str:
    return _script("eval_faithfulness").methods_table(_csv(summary), _csv(per_text))


def faithfulness_pairs(pairs: Path) -> str:
    f = _script("eval_faithfulness")
    return f.contrasts_table(_csv(pairs), list(f.METHODS))


def circuits_truth(path: Path) -> str:
    d = _json(path)
    t, prov = d["truth"], d["provenance"]
    L, H = t["shape"]
    classes = "; ".join(f"{name}: " + ", ".join(f"{h // H}.{h % H}" for h in heads) for name, heads in t["classes"].items())
    seconds = prov.get("seconds")
    took = f", {seconds:,.0f} s wall" if seconds is not None else ""
    return (f"{len(t['nodes'])} of {L * H} heads, {len(t['edges'])} edges ({t['info']['prompts']} prompts{took}) — "
            f"{classes}")


def circuits_runs(path: Path) -> str:
    c, d = _script("circuits_report"), _json(path)
    return c.runs_summary(d) + "\n\n" + c.runs_table(d["runs"])


def circuits_variants(path: Path) -> str:
    return _script("circuits_report").variants_table(_json(path)["rows"])


def circuits_speed(path: Path) -> str:
    d = _json(path)
    load = d["provenance"]["machine"].get("load_average", [None])[0]
    return (f"one run, recipe {d['recipe']}, {d['threads']} torch threads, truth on {d['truth_prompts']} prompts: "
            f"{d['wall_seconds']:.1f} s wall, {d['cpu_seconds']:.1f} CPU-s, node ROC-AUC {d['node_roc_auc']:.3f} "
            f"(one prompt sample and seed; load average {load} when it finished)")


def circuits_patching(path: Path) -> str:
    """The attribution-patching table as ``patching_report.py`` prints it: every run, then the mean over runs."""
    d = _json(path)
    return _script("patching_report").table(d["task"], d["records"])


def _benchmarks(path: Path, test: str) -> list[dict]:
    """The pytest-benchmark records of one test function (every parametrisation), in run order."""
    return [b for b in _json(path)["benchmarks"] if b["name"].split("[")[0] == test]


def gaf_speed(path: Path) -> str:
    """The GAF solver table from ``tests/benchmarks/test_bench_flows.py``'s JSON: per (L, n) the mean wall and CPU
    seconds of ``barrier_max_flow`` (μ automatic), its Newton steps, its value against networkx's max-flow, and the
    fitted growth exponent in n at L = 12 (least squares of log wall time on log n, as the test prints it)."""
    import numpy as np

    rows = ["| (L, n) | wall s | CPU s | Newton steps | rel. error vs networkx | networkx s | cvxpy / ours at fixed μ |",
            "|---|---|---|---|---|---|---|"]
    growth = []
    for b in _benchmarks(path, "test_bench_barrier_max_flow"):
        x, L, n = b["extra_info"], b["params"]["L"], b["params"]["n"]
        if L == 12:
            growth.append((n, x["seconds"]))
        error = (f"{abs(x['value_rel_error_vs_networkx']):.1e}" if "networkx_seconds" in x
                 else f"(certified gap {x['certified_gap']:.1e})")
        rows.append(f"| {L}, {n} | {x['seconds']:.2f} | {x['cpu_seconds']:.2f} | {x['newton_iterations']} | {error} | "
                    + (f"{x['networkx_seconds']:.1f}" if "networkx_seconds" in x else "not run") + " | "
                    + (f"{x['ratio_cvxpy_over_barrier']:.0f}×" if "ratio_cvxpy_over_barrier" in x else "–") + " |")
    text = "\n".join(rows)
    if len(growth) >= 2:
        slope = float(np.polyfit(np.log([g[0] for g in growth]), np.log([g[1] for g in growth]), 1)[0])
        text += f"\n\nGrowth at L = 12: wall time ∝ n^{slope:.2f} over n = {[g[0] for g in growth]}."
    for b in _benchmarks(path, "test_bench_attention_flow_vs_networkx_per_pair"):
        x = b["extra_info"]
        text += (f" `attention_flow` on (6, 64), all 4,096 pairs: {x['seconds_all_pairs']:.1f} s wall; networkx "
                 f"Edmonds-Karp {x['networkx_edmonds_karp_seconds_per_pair']:.1f} s per pair (3 pairs timed), "
                 f"{x['ratio']:,.0f}× when extrapolated to all pairs.")
    return text


def geometry_layers(path: Path, model: str) -> str:
    g = next(r for r in _json(path) if r["model"] == model)
    return _script("geometry_report").layer_table(g)


def geometry_patterns(path: Path) -> str:
    return _script("geometry_report").pattern_table(_json(path))


def robustness(path: Path, part: str) -> str:
    """The robustness tables at token level, k = 3, w = 3 (the command prints every level, k and w)."""
    r = _script("robustness_report")
    if part in ("kept", "any"):
        return r.arms_table(_csv(path), _csv(path.parent / "drops.csv"), part, "token", 3, 3)
    if part == "gaps":
        return r.arm_gaps_table(_csv(path), "kept", "token", 3, 3)
    if part == "narrowing":
        return r.gap_table(_csv(path), "token", 3, 3)
    if part == "family":
        return r.family_summary(_csv(path))
    return r.methods_table(_csv(path), part.split("-")[-1], "token", 3, 3)


@dataclass(frozen=True)
class Table:
    """A table of the page: its data files (under the data folder) and the function that renders them."""

    files: tuple[str, ...]
    render: Callable[..., str]
    args: tuple = ()


TABLES: dict[str, Table] = {
    "demo": Table(("demo/minilm-rt-manifest.json",), demo),
    "faithfulness-methods": Table(("faithfulness/summary.csv", "faithfulness/per_text.csv"), faithfulness_methods),
    "faithfulness-pairs": Table(("faithfulness/pairs.csv",), faithfulness_pairs),
    "robustness-kept": Table(("robustness/summary.csv",), robustness, ("kept",)),
    "robustness-any": Table(("robustness/summary.csv",), robustness, ("any",)),
    "robustness-gaps": Table(("robustness/gaps.csv",), robustness, ("gaps",)),
    "robustness-narrowing": Table(("robustness/narrowing.csv",), robustness, ("narrowing",)),
    "robustness-family": Table(("robustness/narrowing.csv",), robustness, ("family",)),
    "robustness-methods": Table(("robustness/method_gaps.csv",), robustness, ("methods-kept",)),
    "robustness-methods-any": Table(("robustness/method_gaps.csv",), robustness, ("methods-any",)),
    "geometry-minilm": Table(("geometry/geometry.json",), geometry_layers, ("minilm-rt",)),
    "geometry-smollm2": Table(("geometry/geometry.json",), geometry_layers, ("smollm2-135m",)),
    "geometry-patterns": Table(("geometry/geometry.json",), geometry_patterns),
    "circuits-truth-ioi": Table(("circuits/ioi_smollm2_truth.json",), circuits_truth),
    "circuits-ioi": Table(("circuits/ioi_runs.json",), circuits_runs),
    "circuits-truth-toy": Table(("circuits/toy_truth.json",), circuits_truth),
    "circuits-toy": Table(("circuits/toy_runs.json",), circuits_runs),
    "circuits-variants": Table(("circuits/ioi_variants.json",), circuits_variants),
    "circuits-speed": Table(("circuits/pipeline_time.json",), circuits_speed),
    "gaf-speed": Table(("bench/flows.json",), gaf_speed),
    "circuits-patching-ioi": Table(("circuits/patching/ioi_patching.json",), circuits_patching),
}


# ---------------------------------------------------------------------------- page
def render_table(name: str, data: Path = DATA) -> str | None:
    """The markdown of table ``name`` from its data, or None while a data file is missing."""
    table = TABLES[name]
    paths = [data / f for f in table.files]
    if not all(p.is_file() for p in paths):
        return None
    return table.render(*paths[: _arity(table)], *table.args).rstrip("\n")


def _arity(table: Table) -> int:
    import inspect

    return len(inspect.signature(table.render).parameters) - len(table.args)


def blocks(text: str) -> dict[str, str]:
    """The body of every marked table on a page: {name: markdown between its markers}."""
    return {m["name"]: m["body"] for m in MARKER.finditer(text)}


def render_page(text: str, data: Path = DATA) -> str:
    """The page with every marked table whose data is committed replaced by its rendering."""
    def replace(m: re.Match) -> str:
        body = render_table(m["name"], data) if m["name"] in TABLES else None
        return m.group(0) if body is None else m.group(1) + body + m.group(4)

    return MARKER.sub(replace, text)


def check_page(text: str, data: Path = DATA) -> tuple[list[str], list[str]]:
    """(problems, no data yet): a marked table that differs from its data's rendering, an unknown or missing
    marker, is a problem; a table whose data is not committed is listed as "no data yet"."""
    found, problems, waiting = blocks(text), [], []
    for name in sorted(set(found) - set(TABLES)):
        problems.append(f"{name}: marker on the page, but no such table in scripts/results_tables.py")
    for name in TABLES:
        if name not in found:
            problems.append(f"{name}: no <!-- results:{name} --> marker on the page")
            continue
        expected = render_table(name, data)
        if expected is None:
            waiting.append(f"{name}: no data yet ({', '.join(TABLES[name].files)} under {data})")
        elif expected != found[name].rstrip("\n"):
            problems.append(f"{name}: the page differs from its data; run python scripts/results.py --render")
    return problems, waiting
