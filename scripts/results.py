"""Reproduce every table of the README's Results section: one command, resumable (``make results``).

    python scripts/results.py                    # every step, outputs under results/
    python scripts/results.py --list             # the command of every step (what the README cites)
    python scripts/results.py --only faithfulness geometry
    python scripts/results.py --group bench      # the opt-in steps: benchmarks, notebook latency
    python scripts/results.py --backend ray --workers 8   # the dataset-scale steps on Ray actors

Each step runs one of the per-area scripts (scripts/eval_faithfulness.py, robustness_report.py,
circuits_report.py, convergence_report.py, geometry_report.py) exactly as the README cites it; its
standard output goes to ``OUT/<step>.log`` and, for every step, ``OUT/results.md`` collects the
command and its output. A progress bar counts the steps; the scripts draw their own bars.

Resuming works on two levels. Each script caches its own work (per text, per run) under keys of
code version, model fingerprint, method and options, so an interrupted step continues where it
stopped. ``--backend local|ray`` (with ``--address``, ``--workers``) goes to the steps that take it (the
faithfulness and robustness scripts: their records then run as Parquet-written shards, on Ray actors
with ``ray``; the IOI path-patching truth: its rounds' sender heads, when the truth is not cached yet);
it changes where the work runs, not the results, so it is not part of a step's key. The other steps
run in one process: convergence times single IG/SIG calls on 4 prompts (a timing, which sharding
would distort), the circuits tables train one SAE per run, bench and latency are benchmarks, and
geometry (200 texts per model) has no backend option in its script yet.
And a step that finished is skipped while its key is unchanged: a hash of its command, the
script's source, the source of the whole ``xattr_lab`` package (the code version) and the manifests of
the models it uses (the model fingerprint: a rebuilt model has a new manifest). ``--force`` reruns.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = "python"  # shown in --list; replaced by sys.executable when a step runs


@dataclass(frozen=True)
class Step:
    """One command that reproduces one README table (or a part of it)."""

    name: str
    table: str  # the README table it feeds
    argv: tuple[str, ...]  # after "python"; "{out}" is the output folder
    models: tuple[str, ...] = ()
    group: str = "main"  # "main" runs by default, "bench" only when asked for
    outputs: tuple[str, ...] = field(default=())  # files under {out} that must exist for a skip
    backend: bool = False  # takes --backend/--address/--workers (where it runs, not what: not in the key)

    def command(self, out: str | Path = "results", python: str = PY) -> list[str]:
        """The command line, run from the repository root (``out`` shown relative to it when inside)."""
        out = Path(out)
        if out.is_absolute() and out.is_relative_to(ROOT):
            out = out.relative_to(ROOT)
        return [python] + [a.replace("{out}", str(out)) for a in self.argv]


#: the owners of the per-area scripts keep these commands equal to the ones the Results page cites; every step
#: writes its data under {out}/data/ (committed: results/data/, with provenance in results/data/provenance/)
CIRCUITS = ("--examples", "10", "--score-examples", "250", "--out", "{out}/data/circuits")
STEPS: tuple[Step, ...] = (
    Step("demo-classifier", "Demo classifier (accuracy, build time, from the build manifest)",
         ("-c", 'import xattr_lab as xa, json, pathlib, sys; xa.load("minilm-rt"); '
                'text = json.dumps(xa.zoo.manifest("minilm-rt"), indent=1); print(text); '
                'path = pathlib.Path(sys.argv[1]); path.parent.mkdir(parents=True, exist_ok=True); '
                'path.write_text(text + "\\n")', "{out}/data/demo/minilm-rt-manifest.json"),
         models=("minilm-rt",), outputs=("data/demo/minilm-rt-manifest.json",)),
    Step("circuits-truth-ioi", "SAE circuits: path-patching truth, IOI on smollm2-135m (32 prompts, cached once)",
         ("scripts/circuits_report.py", "truth", "--task", "ioi", "--json", "{out}/data/circuits/ioi_smollm2_truth.json"),
         models=("smollm2-135m",), backend=True, outputs=("data/circuits/ioi_smollm2_truth.json",)),
    Step("circuits-truth-toy", "SAE circuits: path-patching truth, toy induction model",
         ("scripts/circuits_report.py", "truth", "--task", "toy", "--json", "{out}/data/circuits/toy_truth.json"),
         models=("toy-induction",), outputs=("data/circuits/toy_truth.json",)),
    Step("circuits-toy", "SAE circuits: toy induction model",
         ("scripts/circuits_report.py", "table", "--task", "toy", "--runs", "10") + CIRCUITS, models=("toy-induction",),
         outputs=("data/circuits/toy_runs.json",)),
    Step("faithfulness", "Faithfulness on minilm-rt (every method, paired bootstrap)",
         ("scripts/eval_faithfulness.py", "--n", "300", "--out", "{out}/data/faithfulness"), models=("minilm-rt",),
         outputs=("data/faithfulness/summary.csv", "data/faithfulness/pairs.csv"), backend=True),
    Step("circuits-ioi", "SAE circuits: IOI on smollm2-135m",
         ("scripts/circuits_report.py", "table", "--task", "ioi", "--runs", "5") + CIRCUITS, models=("smollm2-135m",),
         outputs=("data/circuits/ioi_runs.json",)),
    Step("geometry", "Attention geometry",
         ("scripts/geometry_report.py", "--texts", "200", "--models", "minilm-rt", "smollm2-135m", "--out",
          "{out}/data/geometry"), models=("minilm-rt", "smollm2-135m"), outputs=("data/geometry/geometry.json",)),
    Step("patching-ioi", "Attribution-patching circuits (AtP, EAP, EAP-IG): IOI on smollm2-135m",
         ("scripts/patching_report.py", "--task", "ioi", "--runs", "3", "--out", "{out}/data/circuits/patching"),
         models=("smollm2-135m",), outputs=("data/circuits/patching/ioi_patching.json",)),
    Step("patching-toy", "Attribution-patching circuits (AtP, EAP, EAP-IG): the toy induction model",
         ("scripts/patching_report.py", "--task", "toy", "--runs", "5", "--out", "{out}/data/circuits/patching"),
         models=("toy-induction",), outputs=("data/circuits/patching/toy_patching.json",)),
    Step("patching-toy-saturation", "Why gradients miss the toy's duplicate-token heads (saturated attention)",
         ("scripts/patching_toy_saturation.py",), models=("toy-induction",)),
    Step("circuits-variants", "SAE circuits: SAE variants on one IOI prompt sample",
         ("scripts/circuits_report.py", "variants", "--task", "ioi", "--run", "0") + CIRCUITS,
         models=("smollm2-135m",), outputs=("data/circuits/ioi_variants.json",)),
    Step("circuits-speed", "SAE circuits: the IOI pipeline's time (2 threads; meaningful on a quiet machine)",
         ("scripts/circuits_pipeline_time.py", "2", "paper", "--json", "{out}/data/circuits/pipeline_time.json"),
         models=("smollm2-135m",), outputs=("data/circuits/pipeline_time.json",)),
    Step("robustness", "Robustness on minilm-rt (74 CPU-min summed over records; resumable)",
         ("scripts/robustness_report.py", "--out", "{out}/data/robustness"), models=("minilm-rt",),
         outputs=("data/robustness/narrowing.csv",), backend=True, group="long"),
    Step("convergence", "Gradient convergence on smollm2-135m (IG, SIG; ≈ 40 CPU-min)",
         ("scripts/convergence_report.py", "--json", "{out}/data/convergence/rows.json"), models=("smollm2-135m",),
         outputs=("data/convergence/rows.json",), group="long"),
    Step("payload-sizes", "Guide 'saved outputs': bytes per saved output (real GAF flow on minilm-rt, worst-case flow on smollm2)",
         ("scripts/payload_sizes.py", "--flow", "worst", "--worst-for", "smollm2-135m"),
         models=("minilm-rt", "smollm2-135m")),
    Step("architecture-matrix", "Guide 'models': architecture x method matrix (wall and CPU seconds in the provenance)",
         ("scripts/architecture_matrix.py",)),
    Step("half-precision", "Guide 'models': half precision against float32 on minilm-rt",
         ("scripts/half_precision.py", "minilm-rt"), models=("minilm-rt",)),
    Step("half-precision-smollm2", "Guide 'models': bfloat16 against float32 on smollm2-135m (attention, rollout, GAF)",
         ("scripts/half_precision.py", "smollm2-135m", "--dtypes", "bfloat16", "--methods", "attention", "rollout", "gaf"),
         models=("smollm2-135m",)),
    Step("bench", "GAF solver speed, SIG speed (benchmarks)",
         # not --benchmark-only: that skips the tests without the benchmark fixture (the GAF growth exponent)
         ("-m", "pytest", "tests/benchmarks", "-s", "-p", "no:cacheprovider", "-o", "addopts=", "--benchmark-json",
          "{out}/data/bench/benchmarks.json"), group="bench", outputs=("data/bench/benchmarks.json",)),
    Step("bench-flows", "GAF solver speed (random capacities; networkx and cvxpy side by side)",
         ("-m", "pytest", "tests/benchmarks/test_bench_flows.py", "-k", "not click", "-s", "-p", "no:cacheprovider",
          "-o", "addopts=", "--benchmark-json", "{out}/data/bench/flows.json"), group="long",
         outputs=("data/bench/flows.json",)),
    Step("latency", "Notebook latency (JupyterLab + Chromium)",
         ("-m", "pytest", "tests/browser", "-m", "browser", "-p", "no:cacheprovider"), group="bench"),
)


# ---------------------------------------------------------------------------- keys
def package_version(root: Path = ROOT / "kernel_ext") -> str:
    """sha256 (16 hex digits) of every .py file of the package: the code version of a step."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def model_manifests(models) -> dict:
    """Each embedded model's build manifest (None while it is not built): what identifies its weights."""
    try:
        from xattr_lab.core.cache import manifest
    except ImportError:  # pragma: no cover - run outside the project's environment
        return {}
    return {name: manifest(name) for name in models}


def step_key(step: Step, out: Path, code: str | None = None, models: dict | None = None) -> str:
    script = next((ROOT / a for a in step.argv if a.endswith(".py")), None)
    parts = {"command": step.command(out), "script": script.read_text() if script and script.exists() else "",
             "code": package_version() if code is None else code,
             "models": model_manifests(step.models) if models is None else models}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _marker(out: Path, step: Step) -> Path:
    return out / ".steps" / f"{step.name}.json"


def is_done(step: Step, out: Path, key: str) -> bool:
    try:
        stored = json.loads(_marker(out, step).read_text())
    except (OSError, ValueError):
        return False
    return stored.get("key") == key and all((out / o).exists() for o in step.outputs)


# ---------------------------------------------------------------------------- running
def backend_argv(backend: str | None, address: str | None = None, workers: int | None = None) -> list[str]:
    """The ``--backend/--address/--workers`` arguments for the steps that take them (empty without a backend)."""
    if not backend:
        return []
    return ["--backend", backend] + (["--address", address] if address else []) + (
        ["--workers", str(workers)] if workers else [])


def run_step(step: Step, out: Path, python: str = sys.executable, extra: list[str] | tuple = ()) -> tuple[int, float]:
    """Run one step from the repository root; stdout to the console and ``out/<name>.log``.

    extra: arguments appended to the command (the backend's, for a step with ``backend=True``)."""
    extra = list(extra) if step.backend else []
    out.mkdir(parents=True, exist_ok=True)
    for argument in step.command(out, python):  # folders named in the command (a file's parent)
        path = ROOT / argument  # an absolute argument stays itself
        if path.resolve().is_relative_to(out):
            (path.parent if path.suffix else path).mkdir(parents=True, exist_ok=True)
    log = out / f"{step.name}.log"
    started, cpu = time.perf_counter(), _children_cpu()
    with open(log, "w") as handle:
        handle.write(f"$ {shlex.join(step.command(out) + extra)}\n")
        process = subprocess.Popen(step.command(out, python) + extra, cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1)
        for line in process.stdout:
            sys.stdout.write(line)
            handle.write(line)
        code = process.wait()
        seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
        handle.write(f"[results] {step.name}: exit {code}, {seconds:.0f} s wall, {cpu:.0f} CPU-s\n")
    if code == 0:
        write_provenance(step, out, seconds, cpu)
    return code, seconds


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_provenance(step: Step, out: Path, seconds: float, cpu: float) -> Path:
    """``out/data/provenance/<step>.json``: the command, code version, model fingerprints, date, machine, wall and
    CPU seconds (the step's processes), and the sha256 of each output and of the printed log."""
    from xattr_lab.evaluation.provenance import run_record

    record = run_record(shlex.join(step.command(out)), step.models, seconds)
    record["cpu_seconds"] = round(cpu, 1)
    record["files"] = {name: file_sha256(out / name) for name in step.outputs + (f"{step.name}.log",)
                       if (out / name).is_file()}
    path = out / "data" / "provenance" / f"{step.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def collect(steps, out: Path) -> Path:
    """``out/results.md``: for every step, its table, its command, and what it printed."""
    parts = ["# Results (generated by scripts/results.py)"]
    for step in steps:
        log = out / f"{step.name}.log"
        marker = _marker(out, step)
        seconds = json.loads(marker.read_text()).get("seconds") if marker.exists() else None
        body = log.read_text() if log.exists() else "(not run)\n"
        took = f", {seconds:.0f} s" if seconds is not None else ""
        parts.append(f"## {step.table}\n\n`{shlex.join(step.command(out))}`{took}\n\n```\n{body.rstrip()}\n```")
    path = out / "results.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def select(names=None, groups=("main",)) -> list[Step]:
    known = {s.name for s in STEPS}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise SystemExit(f"unknown step(s) {unknown}; choose from {sorted(known)}")
    return [s for s in STEPS if (s.name in names if names else s.group in groups)]


def render_or_check(render: bool, data: Path, page: Path | None = None) -> int:
    """--render: rewrite the page's tables from ``data``; --check: 1 when one differs (both list "no data yet")."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import results_tables

    page = page or results_tables.PAGE
    text = page.read_text()
    if render:
        page.write_text(results_tables.render_page(text, data))
        text = page.read_text()
    problems, waiting = results_tables.check_page(text, data)
    for line in waiting:
        print(f"[results] {line}")
    for line in problems:
        print(f"[results] MISMATCH {line}", file=sys.stderr)
    done = len(results_tables.TABLES) - len(waiting) - len(problems)
    print(f"[results] {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}: {done} tables agree with their "
          f"data, {len(waiting)} have no data yet, {len(problems)} problems")
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="output folder, relative to the repository root (default results/)")
    parser.add_argument("--only", nargs="+", default=None, metavar="STEP", help="these steps only")
    parser.add_argument("--group", nargs="+", default=["main"], choices=["main", "long", "bench"],
                        help="main (default): every step under an hour; long: robustness, convergence, the GAF solver "
                        "benchmark (a Results table); bench: the other benchmarks, notebook latency")
    parser.add_argument("--list", action="store_true", help="print every step's command and exit")
    parser.add_argument("--render", action="store_true", help="write the tables of docs/results.md from the "
                        "committed data (results/data), then exit")
    parser.add_argument("--check", action="store_true", help="exit 1 when a table of docs/results.md differs from its "
                        "data; list the tables with no data yet")
    parser.add_argument("--force", action="store_true", help="rerun steps that finished with the same key")
    parser.add_argument("--keep-going", action="store_true", help="run the other steps when one fails")
    parser.add_argument("--backend", choices=["local", "ray"], default=None,
                        help="faithfulness, robustness, circuits-truth-ioi: run their items as shards here or on "
                             "Ray actors (convergence, geometry, the circuits tables, bench, latency: one process; "
                             "see above)")
    parser.add_argument("--address", default=None, help="with --backend ray: the cluster to join")
    parser.add_argument("--workers", type=int, default=None, help="with --backend ray: actors")
    args = parser.parse_args(argv)
    if args.render or args.check:
        return render_or_check(args.render, (ROOT / args.out).resolve() / "data")
    steps = select(args.only, args.group)
    if args.list:
        for step in steps:
            print(f"{step.name:<28} {shlex.join(step.command(args.out))}")
        return 0
    from tqdm.auto import tqdm

    out = (ROOT / args.out).resolve()  # a relative --out is under the repository root, where steps run
    failed = []
    code_version = package_version()
    with tqdm(steps, desc="results", unit="step", file=sys.stderr) as bar:
        for step in bar:
            bar.set_postfix_str(step.name)
            if not args.force and is_done(step, out, step_key(step, out, code_version)):
                tqdm.write(f"[results] {step.name}: unchanged since it last finished, skipped", file=sys.stderr)
                continue
            tqdm.write(f"[results] {step.name}: {shlex.join(step.command(out))}", file=sys.stderr)
            code, seconds = run_step(step, out, extra=backend_argv(args.backend, args.address, args.workers))
            if code != 0:
                failed.append(step.name)
                tqdm.write(f"[results] {step.name} failed (exit {code}); log: {out / (step.name + '.log')}",
                           file=sys.stderr)
                if not args.keep_going:
                    break
                continue
            marker = _marker(out, step)
            marker.parent.mkdir(parents=True, exist_ok=True)
            # the key after the run: a model built by this step is part of it
            marker.write_text(json.dumps({"key": step_key(step, out, code_version), "seconds": seconds,
                                          "finished": time.strftime("%Y-%m-%d %H:%M:%S")}))
    print(f"[results] {collect(steps, out)}", file=sys.stderr)
    if failed:
        print(f"[results] failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
