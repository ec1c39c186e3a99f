"""The committed data behind the Results page (results/data/), its provenance, the tables rendered from it
(scripts/results.py --render / --check), and the multiplicity and equivalence tools the page's claims use."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import REPO_ROOT
from xattr_lab.evaluation import bootstrap
from xattr_lab.evaluation.robustness.stats import adjust_family

ROOT = REPO_ROOT
DATA = ROOT / "results" / "data"


def _committed(pattern: str) -> list[Path]:
    done = subprocess.run(["git", "ls-files", "--", f"results/data/{pattern}"], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return [ROOT / line for line in done.stdout.split()]


@pytest.fixture(scope="module")
def tables():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


# ---------------------------------------------------------------------------- the page against the data
def test_check_passes_on_the_committed_data():
    done = subprocess.run([sys.executable, "scripts/results.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tables agree with their data" in done.stdout


def _toy_data(folder: Path) -> None:
    truth = {"provenance": {"seconds": 4.0}, "truth": {"shape": [2, 4], "nodes": [0, 2, 5, 7], "edges": [[0, 5], [2, 7]],
             "classes": {"copy": [5, 7], "duplicate": [0, 2]}, "rounds": [], "info": {"prompts": 60}}}
    (folder / "circuits").mkdir(parents=True)
    (folder / "circuits" / "toy_truth.json").write_text(json.dumps(truth))


def test_render_writes_a_table_from_data_and_check_catches_an_edit(tables, tmp_path):
    data = tmp_path / "data"
    _toy_data(data)
    page = ("intro\n<!-- results:circuits-truth-toy -->\nold numbers 9 of 9\n<!-- /results:circuits-truth-toy -->\n"
            "<!-- results:circuits-ioi -->\nkept as it is\n<!-- /results:circuits-ioi -->\n")
    rendered = tables.render_page(page, data)
    assert "4 of 8 heads, 2 edges (60 prompts, 4 s wall) — copy: 1.1, 1.3; duplicate: 0.0, 0.2" in rendered
    assert "kept as it is" in rendered and "old numbers" not in rendered  # no data: left alone
    problems, waiting = tables.check_page(rendered, data)
    assert not any(p.startswith("circuits-truth-toy") for p in problems)
    assert any(w.startswith("circuits-ioi: no data yet") for w in waiting)
    edited = rendered.replace("4 of 8 heads", "5 of 8 heads")
    problems, _ = tables.check_page(edited, data)
    assert any(p.startswith("circuits-truth-toy: the page differs") for p in problems)


def test_check_exits_non_zero_on_a_mismatch(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("results_cli", ROOT / "scripts" / "results.py")
    results = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = results
    spec.loader.exec_module(results)
    data = tmp_path / "data"
    _toy_data(data)
    page = tmp_path / "page.md"
    page.write_text("<!-- results:circuits-truth-toy -->\nstale\n<!-- /results:circuits-truth-toy -->\n")
    assert results.render_or_check(False, data, page) == 1  # stale table, and every other marker missing
    import results_tables

    monkeypatch.setattr(results_tables, "TABLES", {"circuits-truth-toy": results_tables.TABLES["circuits-truth-toy"]})
    assert results.render_or_check(True, data, page) == 0
    assert "4 of 8 heads" in page.read_text()
    sys.modules.pop(spec.name, None)


# ---------------------------------------------------------------------------- the committed files
def test_every_step_provenance_names_its_command_and_matches_its_files():
    records = _committed("provenance/*.json")
    for path in records:
        record = json.loads(path.read_text())
        for field in ("command", "code", "models", "date", "machine"):
            assert field in record, (path, field)
        assert record["code"]["commit"] and record["code"]["package_hash"]
        for name, digest in record["files"].items():
            target = ROOT / "results" / name
            assert target.is_file(), (path, name)
            assert hashlib.sha256(target.read_bytes()).hexdigest() == digest, f"{name} changed after {path.name}"


@pytest.mark.parametrize("name", ["ioi_smollm2_truth.json", "toy_truth.json"])
def test_committed_truths_are_consistent_and_carry_provenance(name):
    path = DATA / "circuits" / name
    assert path in _committed(f"circuits/{name}"), f"results/data/circuits/{name} is not committed"
    d = json.loads(path.read_text())
    prov, t = d["provenance"], d["truth"]
    assert prov["command"].startswith("python scripts/circuits_report.py truth --task")
    assert all(prov["models"].values()) and prov["model_state_fingerprint"] and prov["date"] and prov["machine"]
    L, H = t["shape"]
    from_classes = sorted(h for heads in t["classes"].values() for h in heads)
    assert sorted(t["nodes"]) == from_classes  # a node is a head some round kept
    for sender, receiver in t["edges"]:  # edges go from an earlier layer into a head of the round before
        assert sender in t["nodes"] and receiver in t["nodes"] and sender // H < receiver // H
    for rnd in t["rounds"]:  # a kept head's interval excludes 0
        for h in rnd["heads"]:
            low, high = rnd["ci"][rnd["senders"].index(h)]
            assert low > 0 or high < 0


def test_the_toy_truth_is_the_circuit_built_by_hand():
    t = json.loads((DATA / "circuits" / "toy_truth.json").read_text())["truth"]
    H = t["shape"][1]
    assert {f"{h // H}.{h % H}" for h in t["nodes"]} == {"0.0", "0.2", "1.1", "1.3"}  # core/toy.py's design


def test_the_ioi_truth_is_the_tables_32_prompt_truth():
    d = json.loads((DATA / "circuits" / "ioi_smollm2_truth.json").read_text())
    assert d["truth"]["info"]["prompts"] == 32 and d["truth"]["info"]["key"]["n"] == 32
    assert d["truth"]["shape"] == [30, 9]


# ---------------------------------------------------------------------------- multiplicity and equivalence
def test_benjamini_hochberg_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 -> x 4/rank: 0.04, 0.06, 0.0533, 0.2 -> running min from the top
    got = bootstrap.benjamini_hochberg([0.01, 0.04, 0.03, 0.2, np.nan])
    np.testing.assert_allclose(got[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert np.isnan(got[4])


def test_bootstrap_p_values_match_the_scalar_rule():
    rng = np.random.default_rng(1)
    reps = rng.normal([0.0, 0.3, -0.05], 0.1, size=(999, 3))
    got = bootstrap.bootstrap_p_values(reps)
    np.testing.assert_allclose(got, [bootstrap.p_value(reps[:, i]) for i in range(3)])
    assert got[1] < 0.01 < got[0]


def test_tost_needs_the_interval_inside_the_margin():
    reps = np.random.default_rng(0).normal(0.0, 0.01, 5000)  # 90 % interval about ±0.016
    assert bootstrap.tost(reps, margin=0.05)["equivalent"]
    assert not bootstrap.tost(reps, margin=0.01)["equivalent"]  # contains 0, but not equivalence
    with pytest.raises(ValueError):
        bootstrap.tost(reps, margin=0)


def test_adjust_family_corrects_within_each_family():
    table = pd.DataFrame({"metric": ["a", "a", "a", "b"], "p": [0.01, 0.02, 0.04, 0.01]})
    out = adjust_family(table, "p", by="metric")
    np.testing.assert_allclose(out["p_holm"], [0.03, 0.04, 0.04, 0.01])  # Holm: 3 x 0.01, 2 x 0.02, max(.., 0.04)
    np.testing.assert_allclose(out["p_bh"], [0.03, 0.03, 0.04, 0.01])
    assert "p_holm" not in table  # the input is not modified


def test_run_record_names_command_code_models_date_machine(tmp_path, monkeypatch):
    from xattr_lab.evaluation import provenance

    monkeypatch.setenv("XATTR_LAB_CACHE", str(tmp_path))
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "model.safetensors").write_bytes(b"weights-1")
    record = provenance.run_record("python scripts/x.py --n 3", ["tiny", "absent"], seconds=1.25)
    assert record["command"] == "python scripts/x.py --n 3" and record["seconds"] == 1.2  # round(1.25, 1)
    assert len(record["code"]["commit"]) == 40 and len(record["code"]["package_hash"]) == 16
    assert record["models"]["absent"] is None and record["date"].endswith("Z") and record["machine"]["cpus"] >= 1
    before = record["models"]["tiny"]
    (tmp_path / "tiny" / "model.safetensors").write_bytes(b"weights-2")  # a rebuilt model: a new fingerprint
    assert provenance.weights_fingerprint("tiny") != before


def test_coverage_counts_only_numbers_of_tables_rendered_from_data():
    sys.path.insert(0, str(ROOT / "scripts"))
    import results_coverage

    page = ("| a | b |\n|---|---|\n| x | 1.25 [0.5, 2] |\n\n<!-- results:demo -->\n`m`: 80.2 % of 1,000\n"
            "<!-- /results:demo -->\n")
    found = dict(results_coverage.tables(page))
    assert found["line 1"] == [" 1.25 [0.5, 2] "] and found["demo"] == ["`m`: 80.2 % of 1,000"]
    numbers = [n for cell in found["line 1"] for n in results_coverage.NUMBER.findall(cell)]
    assert numbers == ["1.25", "0.5", "2"]


def test_committed_faithfulness_tables_follow_from_the_per_text_data():
    folder = DATA / "faithfulness"
    assert folder / "per_text.csv" in _committed("faithfulness/per_text.csv")
    per_text, summary, pairs = (pd.read_csv(folder / f) for f in ("per_text.csv", "summary.csv", "pairs.csv"))
    means = per_text.groupby(["method"])[["aopc", "log_odds", "comprehensiveness", "sufficiency"]].mean()
    assert per_text.groupby("method").size().eq(300).all()  # 300 snippets, every method on every one
    for r in summary.itertuples():
        assert r.mean == pytest.approx(means.loc[r.method, r.metric], abs=1e-12)
        assert r.ci_low <= r.mean <= r.ci_high
    for r in pairs.itertuples():
        assert r.difference == pytest.approx(means.loc[r.a, r.metric] - means.loc[r.b, r.metric], abs=1e-12)
    for metric, part in pairs.groupby("metric"):  # Holm by hand over the 66 pairs of each metric
        assert len(part) == 66
        p = part["p"].to_numpy()
        order = np.argsort(p, kind="stable")
        steps = np.minimum(np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]), 1.0)
        holm = np.empty_like(steps)
        holm[order] = steps
        np.testing.assert_allclose(part["p_holm"].to_numpy(), holm)
        assert (part["significant"].to_numpy() == (holm < 0.05)).all()


# ---------------------------------------------------------------------------- renderers of the other tables
def test_gaf_speed_renders_benchmark_json_and_fits_the_growth_exponent(tables, tmp_path):
    def bench(L, n, seconds, **extra):
        info = {"seconds": seconds, "cpu_seconds": seconds / 2, "newton_iterations": 30 + n // 64,
                "certified_gap": 1e-7, **extra}
        return {"name": f"test_bench_barrier_max_flow[L{L}-n{n}]", "params": {"L": L, "n": n}, "extra_info": info}

    data = {"benchmarks": [
        bench(6, 32, 0.5, value_rel_error_vs_networkx=-2e-7, networkx_seconds=1.5, ratio_cvxpy_over_barrier=40.0),
        bench(12, 128, 1.0, value_rel_error_vs_networkx=3e-7, networkx_seconds=50.0),
        bench(12, 256, 8.0),  # time x 8 when n doubles: exponent 3
        {"name": "test_bench_attention_flow_vs_networkx_per_pair", "params": None,
         "extra_info": {"seconds_all_pairs": 30.0, "networkx_edmonds_karp_seconds_per_pair": 40.0, "ratio": 5461.3}}]}
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(data))
    text = tables.gaf_speed(path)
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows[0] == "| 6, 32 | 0.50 | 0.25 | 30 | 2.0e-07 | 1.5 | 40× |"
    assert rows[2] == "| 12, 256 | 8.00 | 4.00 | 34 | (certified gap 1.0e-07) | not run | – |"
    assert "n^3.00 over n = [128, 256]" in text
    assert "all 4,096 pairs: 30.0 s wall; networkx Edmonds-Karp 40.0 s per pair" in text and "5,461×" in text


def test_patching_table_mean_rows_follow_from_the_committed_records(tables):
    path = DATA / "circuits" / "patching" / "ioi_patching.json"
    records = json.loads(path.read_text())["records"]
    text = tables.circuits_patching(path)
    for method in ("atp", "eap", "eap-ig"):
        mine = [r for r in records if r["method"] == method]
        mean = np.mean([r["node_roc_auc"][0] for r in mine])
        cpr = np.mean([r["faithfulness"]["cpr"] for r in mine])
        row = next(line for line in text.splitlines() if line.startswith(f"| **{method}** | mean of {len(mine)} |"))
        assert row.split(" | ")[2].startswith(f"{mean:.2f} [") and row.split(" | ")[4] == f"{cpr:.2f}"


def test_arm_gaps_table_reads_the_kept_token_cells(tables):
    robustness_report = tables._script("robustness_report")
    base = {"permission": "kept", "level": "token", "n": 10, "gap_lo": 0.0, "gap_hi": 0.2, "gap_corrected_lo": 0.05,
            "gap_corrected_hi": 0.35}
    gaps = pd.DataFrame([
        {**base, "method": "sig", "pair": "neighbour − attack", "metric": "topk", "k": 3, "w": 1, "gap": 0.1,
         "gap_corrected": 0.2},
        {**base, "method": "sig", "pair": "neighbour − attack", "metric": "lens_recall", "k": 3, "w": 3, "gap": 0.05,
         "gap_corrected": 0.25},
        {**base, "method": "sig", "pair": "neighbour − attack", "metric": "lens_recall", "k": 3, "w": 5, "gap": 9.0,
         "gap_corrected": 9.0},  # another window: not read
        {**base, "method": "ig", "pair": "search − attack", "metric": "topk", "k": 3, "w": 1, "gap": 0.1,
         "gap_corrected": 0.2, "permission": "any"},  # top-k replaceable: not in the kept table
    ])
    text = robustness_report.arm_gaps_table(gaps, "kept", "token", 3, 3)
    assert text.splitlines()[2] == "| SIG | neighbour − attack | 10 | 0.20 [0.05, 0.35] | 0.25 [0.05, 0.35] | 0.10 [0.00, 0.20] |"
    assert len(text.splitlines()) == 3 and "9.00" not in text


def test_committed_robustness_narrowing_is_one_adjusted_family():
    path = DATA / "robustness" / "narrowing.csv"
    assert path in _committed("robustness/narrowing.csv"), "results/data/robustness/narrowing.csv is not committed"
    lens = pd.read_csv(path).query("metric == 'lens_recall'")
    # 4 methods x 2 arm pairs x top-k kept/any x token/word x 10 (k, w) cells, read together
    assert len(lens) == 320 and lens.method.nunique() == 4
    p = lens["narrowed_p"].to_numpy()
    order = np.argsort(p, kind="stable")
    holm = np.empty_like(p)
    holm[order] = np.minimum(np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]), 1.0)
    np.testing.assert_allclose(lens["narrowed_p_holm"].to_numpy(), holm)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    bh = np.empty_like(p)
    bh[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    np.testing.assert_allclose(lens["narrowed_p_bh"].to_numpy(), bh)
    assert ((lens.narrowed_lo <= lens.narrowed) & (lens.narrowed <= lens.narrowed_hi)).all()
