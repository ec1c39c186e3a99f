"""The lengths table: one model at several token counts x several methods, one cell per
(method, length), each in a fresh subprocess so its peak RSS is its own.

    .venv/bin/python scripts/lengths_table.py                       # every cell, resumable
    .venv/bin/python scripts/lengths_table.py --lengths 128,512 --methods ig,sig --cap 600
    .venv/bin/python scripts/lengths_table.py --markdown                 # print the table (no runs)

Per cell: wall and CPU seconds of the call (the model load is timed apart), peak RSS of the cell's
process and its RSS before the call (GB = GiB, 2**30 bytes, here and in "refused: needs X GB"), the
memory budget's estimate for the call, and the outcome: "ok" with converged (IG, SIG) or certified (GAF: upper bound - value <=
1e-6 value), "refused: needs X GB" (the memory budget check, which runs before any forward pass),
"stopped at cap" (the per-cell time cap: nothing but the time and peak RSS), or "error: ...". With
``--max-seconds`` an IG/SIG cell that runs out of time ends with IG/SIG's own time cap instead: "not converged at
max_seconds=S (E %, R rows)", the last complete quadrature's error and rows. Each cell notes the git commit it ran
on and the memory limit. Finished cells are cached (``--cache``, one JSON file per cell) and
skipped on the next run unless ``--force``; the table (``--out``) is rewritten after every cell.

Text: ordinary English prose (public-domain paragraphs below, cycled in a fixed order), cut to
exactly n tokens of the model's tokenizer, special tokens included.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("attention", "rollout", "gaf", "ig", "sig", "grad_x_input")
LENGTHS = (128, 512, 1024, 2048, 4096)

#: Public-domain prose: Jane Austen, "Pride and Prejudice" (1813), and Charles Darwin, "On the
#: Origin of Species" (1859), as ordinary text to explain (paraphrase-level fidelity is enough here).
PROSE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    "the rightful property of some one or other of their daughters.",
    "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that Netherfield Park is let at "
    "last?\" Mr. Bennet replied that he had not. \"But it is,\" returned she; \"for Mrs. Long has just been "
    "here, and she told me all about it.\" Mr. Bennet made no answer. \"Do you not want to know who has taken "
    "it?\" cried his wife impatiently. \"You want to tell me, and I have no objection to hearing it.\" This "
    "was invitation enough.",
    "When on board H.M.S. Beagle, as naturalist, I was much struck with certain facts in the distribution of "
    "the inhabitants of South America, and in the geological relations of the present to the past inhabitants "
    "of that continent. These facts seemed to me to throw some light on the origin of species, that mystery of "
    "mysteries, as it has been called by one of our greatest philosophers.",
    "When we look to the individuals of the same variety or sub-variety of our older cultivated plants and "
    "animals, one of the first points which strikes us, is, that they generally differ much more from each "
    "other than do the individuals of any one species or variety in a state of nature. When we reflect on the "
    "vast diversity of the plants and animals which have been cultivated, and which have varied during all "
    "ages under the most different climates and treatment, I think we are driven to conclude that this great "
    "variability is simply due to our domestic productions having been raised under conditions of life not so "
    "uniform as, and somewhat different from, those to which the parent-species have been exposed in nature.",
    "Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, reserve, and caprice, that the "
    "experience of three and twenty years had been insufficient to make his wife understand his character. "
    "Her mind was less difficult to develop. She was a woman of mean understanding, little information, and "
    "uncertain temper. When she was discontented, she fancied herself nervous. The business of her life was "
    "to get her daughters married; its solace was visiting and news.",
)


def prose(words: int) -> str:
    """At least ``words`` words of prose: the paragraphs cycled in order, separated by blank lines."""
    out, count, i = [], 0, 0
    while count < words:
        out.append(PROSE[i % len(PROSE)])
        count += len(PROSE[i % len(PROSE)].split())
        i += 1
    return "\n\n".join(out)


def prose_tokens(ex, n: int) -> str:
    """Prose that ``ex`` encodes to exactly n tokens (special tokens included)."""
    text = prose(n + 16)
    ids = ex.tokenizer(text, add_special_tokens=False)["input_ids"]
    specials = ex.encode("a").n - len(ex.tokenizer("a", add_special_tokens=False)["input_ids"])
    k = n - specials
    for step in range(64):  # decode/encode may merge tokens at the cut: nudge k until the count is exact
        cut = ex.tokenizer.decode(ids[:k]).strip()
        got = ex.encode(cut).n
        if got == n:
            return cut
        k += 1 if got < n else -1
    raise RuntimeError(f"could not cut the prose to exactly {n} tokens (last try {got})")


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "kernel_ext"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------- one cell (subprocess)
def run_cell(model: str, method: str, n: int, options: dict) -> dict:
    """Load ``model``, cut the prose to n tokens, run ``method`` once -> the cell's record."""
    import resource

    import torch

    import xattr_lab as xa
    from xattr_lab.errors import BudgetError

    t0 = time.time()
    ex = xa.load(model, device="cpu")
    text = prose_tokens(ex, n)
    record = {"load_s": round(time.time() - t0, 2), "tokens": ex.encode(text).n, "threads": torch.get_num_threads()}
    record["estimate_gb"] = round(memory_estimate(ex, method, record["tokens"]) / 2**30, 3)
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    if rss:  # resident memory before the call (model, tokenizer, interpreter): peak - this ~ the call's own
        record["rss_before_gb"] = round(int(rss.group(1)) / 2**20, 3)
    wall, cpu = time.time(), time.process_time()
    try:
        if method == "gaf":
            flow = ex.flow(text, **options)
            gap = None if flow.upper_bound is None else float(flow.upper_bound - flow.value)
            record.update(outcome="ok", value=float(flow.value), upper_bound=flow.upper_bound,
                          certified=gap is not None and gap <= 1e-6 * abs(float(flow.value)))
        else:
            result = ex.attribute(text, method=method, **options)
            record["outcome"] = "ok"
            for key in ("converged", "relative_completeness_error", "nodes", "gradient_rows", "batch_size", "steps",
                        "stopped"):
                value = result.options.get(key)
                if key == "nodes" and isinstance(value, list):
                    value = max(value) if value else 0
                if value is not None:
                    record[key] = value
    except BudgetError as error:
        record.update(outcome=f"refused: needs {error.estimate / 2**30:.1f} GB", estimate_bytes=int(error.estimate),
                      limit_bytes=int(error.limit), message=str(error))
    record.update(wall_s=round(time.time() - wall, 2), cpu_s=round(time.process_time() - cpu, 2),
                  peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3))
    return record


def memory_estimate(ex, method: str, n: int) -> int:
    """The memory budget's estimate (bytes) for ``method`` at n tokens, as the check computes it."""
    from xattr_lab.core import budget

    limit = budget.memory_limit(ex.device)[0]
    return budget.method_estimate(budget.shape_of(ex), method, n, ex.name, None, **budget.pass_options(ex),
                                  limit=limit).total


# ---------------------------------------------------------------------------- the driver
def _proc_status(pid: int) -> tuple[float | None, float | None]:
    """(peak RSS GB, CPU s) of a live process, from /proc (for a cell stopped at the cap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
        return (int(hwm.group(1)) / 2**20 if hwm else None), cpu
    except (OSError, IndexError, ValueError):
        return None, None


def spawn_cell(args, method: str, n: int) -> dict:
    """Run one cell in a fresh interpreter under the time cap -> its record."""
    command = [sys.executable, __file__, "--cell", method, str(n), "--model", args.model,
               "--options", json.dumps(cell_options(args, method))]
    env = dict(os.environ, XATTR_LAB_MEMORY_LIMIT=args.memory_limit, OMP_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.time()

    def cpu_limit() -> None:  # in the child: SIGXCPU (ends it) once it has used --cpu-cap CPU seconds
        import resource

        resource.setrlimit(resource.RLIMIT_CPU, (int(args.cpu_cap), int(args.cpu_cap) + 60))

    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=cpu_limit if args.cpu_cap else None)
    stopped = {"outcome": "stopped at cap", "cap_s": args.cap, "cpu_cap_s": args.cpu_cap,
               "note": "wall and CPU include the model load"}
    try:
        out, err = proc.communicate(timeout=args.cap)
    except subprocess.TimeoutExpired:
        rss, cpu = _proc_status(proc.pid)
        proc.kill()
        proc.communicate()
        return {**stopped, "cap": "wall", "wall_s": round(time.time() - start, 1),
                "cpu_s": None if cpu is None else round(cpu, 1), "peak_rss_gb": None if rss is None else round(rss, 3)}
    if args.cpu_cap and proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the handler did not get to run
        import resource

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # this driver's ended children: the cells so far
        return {**stopped, "cap": "cpu", "wall_s": round(time.time() - start, 1), "cpu_s": float(args.cpu_cap),
                "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3), "peak_rss_note": "largest of the cells run so far"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"outcome": f"error: exit {proc.returncode}", "stderr": err.strip().splitlines()[-5:]}
    record = json.loads(lines[-1])
    return {**stopped, **record} if record["outcome"] == "stopped at cap" else record


def _over_cpu_cap(signum, frame) -> None:
    """SIGXCPU in a cell: print its record (stopped at the CPU cap, its own peak RSS) and end at once."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"outcome": "stopped at cap", "cap": "cpu", "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                      "wall_s": round(time.time() - _STARTED, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),
                      "note": "wall and CPU include the model load"}), flush=True)
    os._exit(0)


_STARTED = time.time()


def cell_options(args, method: str) -> dict:
    options = {}
    if method in ("ig", "sig") and args.steps is not None:
        options["steps"] = args.steps if args.steps in ("auto", "exact") else int(args.steps)
    if method in ("ig", "sig") and args.max_seconds is not None:
        options["max_seconds"] = args.max_seconds
    return options


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="token counts, comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--model", default="smollm2-135m", help="an xattr_lab.load alias or path")
    parser.add_argument("--out", default="results/lengths.json", help="the table (JSON)")
    parser.add_argument("--cache", default="results/lengths_cells", help="folder of finished cells (resume)")
    parser.add_argument("--cap", type=float, default=900.0, help="seconds per cell, model load included")
    parser.add_argument("--cpu-cap", type=float, default=None,
                        help="CPU seconds per cell, model load included (RLIMIT_CPU; a shared machine's load does not move it)")
    parser.add_argument("--memory-limit", default="8G", help="XATTR_LAB_MEMORY_LIMIT for every cell")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads per cell")
    parser.add_argument("--steps", default=None, help="IG/SIG steps (default: the methods' own defaults)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="IG/SIG's own time cap (max_seconds): the cell ends with the last complete quadrature, "
                             "its completeness error and rows, instead of nothing")
    parser.add_argument("--force", action="store_true", help="rerun cells already in the cache")
    parser.add_argument("--markdown", action="store_true", help="print --out as a markdown table and exit")
    parser.add_argument("--cell", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cell:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        signal.signal(signal.SIGXCPU, _over_cpu_cap)
        print(json.dumps(run_cell(args.model, args.cell[0], int(args.cell[1]), json.loads(args.options))), flush=True)
        return 0
    if args.markdown:
        print(markdown(json.loads((ROOT / args.out).read_text())))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    cache = ROOT / args.cache
    cache.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    cells = [(m, n) for n in lengths for m in methods]
    with tqdm(cells, desc="lengths table", unit="cell") as bar:
        for method, n in bar:
            path = cache / f"{args.model}_{method}_{n}.json"
            bar.set_postfix_str(f"{method} @ {n}")
            if path.exists() and not args.force:
                continue
            record = {"model": args.model, "method": method, "tokens_requested": n, "commit": git_commit(),
                      "memory_limit": args.memory_limit, "threads": args.threads,
                      "options": cell_options(args, method), "machine": platform.machine(), "device": "cpu",
                      "ran_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            record.update(spawn_cell(args, method, n))
            if not record["outcome"].startswith("error"):
                path.write_text(json.dumps(record, indent=1))
            write_table(args, cache, record if record["outcome"].startswith("error") else None)
    write_table(args, cache)
    return 0


def write_table(args, cache: Path, extra: dict | None = None) -> None:
    """Every cached cell of ``args.model`` (plus ``extra``) -> ``args.out``, sorted by length then method."""
    rows = [json.loads(p.read_text()) for p in sorted(cache.glob(f"{args.model}_*.json"))]
    rows += [extra] if extra else []
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: (r["tokens_requested"], order.get(r["method"], 99)))
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "scripts/lengths_table.py", "model": args.model, "cells": rows}, indent=1))


def outcome_text(cell: dict) -> str:
    """One cell's outcome for people: converged / certified / refused (with what fits) / over the cap."""
    outcome = cell["outcome"]
    if outcome == "stopped at cap":
        if cell.get("cap") == "cpu":
            return f"over the CPU time cap {cell['cpu_cap_s']:.0f} s"
        return f"over the time cap {cell['cap_s']:.0f} s"
    if outcome.startswith("refused"):
        fit = re.search(r"at most ([0-9,]+) tokens fit", cell.get("message", ""))
        return outcome + (f" (at most {fit.group(1)} tokens fit)" if fit else "")
    if outcome != "ok":
        return outcome
    if "certified" in cell:
        return "certified" if cell["certified"] else "not certified"
    if "converged" in cell:
        error = cell.get("relative_completeness_error")
        detail = "" if error is None else f" ({100 * error:.2g} %"
        detail += "" if not detail else (f", {cell['gradient_rows']} rows)" if cell.get("gradient_rows") else ")")
        stopped = f" at max_seconds={cell['options']['max_seconds']:.0f}" if cell.get("stopped") == "max_seconds" else ""
        return ("converged" if cell["converged"] else "not converged" + stopped) + detail
    return "ok"


def markdown(table: dict) -> str:
    """The table (``--out``'s JSON) as markdown: one row per cell, sorted by length then method."""
    def num(value, digits=1):
        return "" if value is None else f"{value:,.{digits}f}"

    lines = [f"| tokens | method | outcome | wall s | CPU s | peak RSS GB | estimate GB | memory limit | commit |",
             "|---:|---|---|---:|---:|---:|---:|---|---|"]
    for c in table["cells"]:
        lines.append(f"| {c.get('tokens', c['tokens_requested']):,} | {c['method']} | {outcome_text(c)} | "
                     f"{num(c.get('wall_s'))} | {num(c.get('cpu_s'))} | {num(c.get('peak_rss_gb'), 2)} | "
                     f"{num(c.get('estimate_gb'), 2)} | {c.get('memory_limit', '')} | {c.get('commit', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
