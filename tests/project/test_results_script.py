"""scripts/results.py: every Results table from one command, resumable, keyed by code and models."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ROOT = REPO_ROOT


@pytest.fixture(scope="module")
def results():
    spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_every_step_names_a_script_and_flags_it_accepts(results):
    helps: dict[str, str] = {}
    for step in results.STEPS:
        script = next((a for a in step.argv if a.endswith(".py")), None)
        if script is None:
            continue
        assert (ROOT / script).is_file(), step
        if step.argv[0] == "-m":  # a module (pytest) given a test file: its flags are the module's
            continue
        flags = [a for a in step.argv if a.startswith("--")]
        if not flags:  # nothing to check; a script without argparse would run in full on --help
            continue
        if script not in helps:
            done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stderr
            helps[script] = done.stdout
        for flag in flags:
            assert flag in helps[script], f"{step.name}: {script} has no {flag}"
    names = [s.name for s in results.STEPS]
    assert len(names) == len(set(names))
    listed = subprocess.run([sys.executable, "scripts/results.py", "--list"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "scripts/eval_faithfulness.py --n 300" in listed.stdout


def test_every_script_the_results_page_cites_is_a_step(results):
    section = (ROOT / "docs" / "results.md").read_text()
    cited = set(re.findall(r"scripts/(\w+\.py)", section))
    stepped = {Path(a).name for s in results.STEPS for a in s.argv if a.endswith(".py")}
    assert cited <= stepped | {"results.py"}, cited - stepped


def test_steps_resume_and_rerun_when_code_command_or_model_change(results, tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    script = f"open({str(calls)!r}, 'a').write('x'); print('| table |')"
    step = results.Step("fake", "A fake table", ("-c", script), models=("tiny-bert",))
    monkeypatch.setattr(results, "STEPS", (step,))
    monkeypatch.setattr(results, "model_manifests", lambda models: {"tiny-bert": {"built": 1}})
    out = tmp_path / "out"
    assert results.main(["--out", str(out)]) == 0
    assert calls.read_text() == "x" and "| table |" in (out / "results.md").read_text()
    assert results.main(["--out", str(out)]) == 0  # unchanged: skipped
    assert calls.read_text() == "x"
    monkeypatch.setattr(results, "package_version", lambda: "edited")  # code version changed
    assert results.main(["--out", str(out)]) == 0
    assert calls.read_text() == "xx"
    monkeypatch.setattr(results, "model_manifests", lambda models: {"tiny-bert": {"built": 2}})  # model rebuilt
    assert results.main(["--out", str(out)]) == 0
    assert calls.read_text() == "xxx"
    assert results.main(["--out", str(out), "--force"]) == 0
    assert calls.read_text() == "xxxx"
    other = results.Step("fake", "A fake table", ("-c", script + "; print(1)"), models=("tiny-bert",))
    assert results.step_key(other, out, "c", {}) != results.step_key(step, out, "c", {})  # command changed


def test_a_failing_step_is_not_marked_done(results, tmp_path, monkeypatch):
    bad = results.Step("bad", "fails", ("-c", "raise SystemExit(3)"))
    good = results.Step("good", "runs", ("-c", "print('ok')"))
    monkeypatch.setattr(results, "STEPS", (bad, good))
    out = tmp_path / "out"
    assert results.main(["--out", str(out)]) == 1
    assert not (out / ".steps" / "bad.json").exists() and not (out / "good.log").exists()  # stopped at the failure
    assert results.main(["--out", str(out), "--keep-going"]) == 1
    assert (out / ".steps" / "good.json").exists()
    with pytest.raises(SystemExit, match="unknown step"):
        results.main(["--only", "nope"])


def test_bench_step_runs_the_tests_without_the_benchmark_fixture(results):
    # --benchmark-only skipped test_growth_exponent_in_n (no benchmark fixture), the GAF growth exponent
    bench = next(s for s in results.STEPS if s.name == "bench")
    assert "--benchmark-only" not in bench.argv and "-s" in bench.argv


def test_every_circuits_script_step_is_in_results_and_reads_the_tables_truth(results):
    names = {s.name for s in results.STEPS}
    assert {"circuits-truth-ioi", "circuits-truth-toy", "circuits-ioi", "circuits-toy", "circuits-variants",
            "circuits-speed"} <= names
    import ast

    tree = ast.parse((ROOT / "scripts" / "circuits_pipeline_time.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "ioi_truth"]
    assert calls and all(any(k.arg == "n" and k.value.value == 32 for k in c.keywords) for c in calls)


def test_payload_worst_flow_only_for_the_models_named(monkeypatch):
    spec = importlib.util.spec_from_file_location("payload_sizes_script", ROOT / "scripts" / "payload_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = {}

    class Flow:
        info = ""

    monkeypatch.setattr(module, "compute", lambda model, n, cache, flow: seen.setdefault(model, flow) and {"flow": Flow()})
    monkeypatch.setattr(module, "sizes", lambda results, model: {"flow": (10, 1)})
    monkeypatch.setattr(module, "table", lambda rows, synthetic: "")
    module.main(["--flow", "worst", "--worst-for", "smollm2-135m"])
    assert seen == {"minilm-rt": "real", "smollm2-135m": "worst"}
    seen.clear()
    module.main(["--flow", "worst"])  # unchanged meaning without --worst-for: every model
    assert seen == {"minilm-rt": "worst", "smollm2-135m": "worst"}
