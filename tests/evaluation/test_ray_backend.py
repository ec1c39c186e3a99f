"""Sharded dataset-scale runs (xattr_lab.evaluation.distributed and the jobs beside their one-process code).

Fast tests run the local backend on toy work (no model): sharding, order, Parquet schema and
provenance, resume without recomputation, the errors. Slow tests start one local Ray runtime with
2 workers for the module and run the faithfulness job on 20 held-out snippets of minilm-rt with raw
attention: Ray equals local; an actor killed mid-run (its process exits) loses no rows and the
result is equal; a run interrupted by an error resumes on Ray without recomputing any written row.
"""
from __future__ import annotations

import json
import os
import random
import socket
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from xattr_lab.errors import InputError, XattrError  # noqa: E402
from xattr_lab.errors import BackendError  # noqa: E402
from xattr_lab.evaluation import circuit_patching_sharded, circuit_truth_sharded, faithfulness_harness  # noqa: E402
from xattr_lab.evaluation.robustness import sharded as robustness_sharded  # noqa: E402
from xattr_lab.evaluation.distributed import ray_backend as backend_ray, shards as sharded, workers  # noqa: E402
from xattr_lab.evaluation.distributed.shards import run_sharded  # noqa: E402

SCHEMA = {"square": pa.int64(), "half": pa.float64()}
#: Ray vs local: the same work on the same weights; only float reduction order may differ
RTOL = ATOL = 1e-6


class Stop(Exception):
    """Raised by the toy work to interrupt a run."""


def toy_work(worker, item, calls=None, stop_at=None):
    if calls is not None:
        calls.append(item)
    if stop_at is not None and item == stop_at:
        raise Stop(item)
    return {"square": item * item * worker, "half": item / 2}


def toy(items, out, calls=None, stop_at=None, **kwargs):
    def work(worker, item):
        return toy_work(worker, item, calls, stop_at)

    kwargs.setdefault("shard_size", 3)
    return run_sharded(items, lambda: 1, work, out=out, schema=SCHEMA, provenance={"job": "toy", "v": 1},
                       progress=False, **kwargs)


# ---------------------------------------------------------------------------- local backend (fast)
def test_rows_in_item_order_one_file_per_shard(tmp_path):
    rows = toy(list(range(10)), tmp_path)
    assert [r["square"] for r in rows] == [i * i for i in range(10)]
    assert [r["_item"] for r in rows] == list(range(10))
    assert len(list(tmp_path.glob("shard-*.parquet"))) == 4  # 3 + 3 + 3 + 1


def test_parquet_schema_and_provenance(tmp_path):
    toy(list(range(5)), tmp_path)
    table = pq.read_table(sorted(tmp_path.glob("shard-*.parquet"))[0])
    assert table.schema.field("square").type == pa.int64() and table.schema.field("_key").type == pa.string()
    assert json.loads(table.schema.metadata[sharded.METADATA_KEY]) == {"job": "toy", "v": 1}
    assert sharded.read_provenance(tmp_path) == {"job": "toy", "v": 1}


def test_resume_recomputes_nothing_written(tmp_path):
    calls = []
    with pytest.raises(Stop):
        toy(list(range(10)), tmp_path, calls, stop_at=7)  # shards [0..2], [3..5] written; [6..8] lost at 7
    written = {r["_key"] for r in sharded.read_store(tmp_path)}
    assert written == {str(i) for i in range(6)}
    again = []
    rows = toy(list(range(10)), tmp_path, again)
    assert sorted(again) == [6, 7, 8, 9]  # nothing written is computed again
    assert rows == toy(list(range(10)), tmp_path / "fresh")


def test_equal_keys_are_computed_once(tmp_path):
    calls = []
    rows = toy([2, 3, 2, 2], tmp_path, calls)
    assert sorted(calls) == [2, 3] and [r["square"] for r in rows] == [4, 9, 4, 4]


def test_batched_work(tmp_path):
    rows = run_sharded(list(range(7)), lambda: 10, lambda w, items: [{"square": w * i, "half": 0.0} for i in items],
                       out=tmp_path, schema=SCHEMA, provenance={}, batched=True, shard_size=4, progress=False)
    assert [r["square"] for r in rows] == [10 * i for i in range(7)]


def test_other_provenance_is_refused(tmp_path):
    toy([1, 2], tmp_path)
    with pytest.raises(InputError, match="another run"):
        run_sharded([1], lambda: 1, toy_work, out=tmp_path, schema=SCHEMA, provenance={"job": "toy", "v": 2},
                    progress=False)
    assert len(sharded.read_store(tmp_path)) == 2  # nothing lost


def test_bad_options(tmp_path):
    with pytest.raises(InputError, match="backend"):
        toy([1], tmp_path, backend="dask")
    with pytest.raises(InputError, match="reserved"):
        run_sharded([1], lambda: 1, toy_work, out=tmp_path, schema={"_key": pa.string()}, provenance={})
    with pytest.raises(InputError, match="shard_size"):
        sharded.make_shards([1, 2], 0)


def test_clear_error_without_ray(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendError, match=r"pip install 'xattr-lab\[ray\]'"):
        toy([1, 2], tmp_path, backend="ray")
    assert issubclass(BackendError, XattrError)


def test_unreachable_address_fails_fast():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError, match="cannot reach the Ray cluster"):
        backend_ray.check_reachable(f"ray://127.0.0.1:{port}", timeout=2)
    assert backend_ray._host_port("auto") is None


def test_actors_and_gpus():
    class FakeRay:
        def __init__(self, **resources):
            self.resources = resources

        def cluster_resources(self):
            return self.resources

    assert backend_ray.gpus_per_actor(FakeRay(CPU=16), 4) == 0
    assert backend_ray.gpus_per_actor(FakeRay(CPU=16, GPU=8), 8) == 1
    assert backend_ray.gpus_per_actor(FakeRay(CPU=16, GPU=3), 4) == 0.5  # two actors share a GPU, all fit
    assert backend_ray.actor_count(FakeRay(CPU=16, GPU=8), None, 100) == 8  # one per GPU by default
    assert backend_ray.actor_count(FakeRay(CPU=2), None, 100) == 2 and backend_ray.actor_count(FakeRay(CPU=2), 5, 3) == 3


def test_shard_sizes():
    assert sharded.make_shards(range(7), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert sharded.default_shard_size(1000, 2) == 16 and sharded.default_shard_size(8, 2) == 1


# ---------------------------------------------------------------------------- Ray (slow)
N_TEXTS = 20


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime with 2 CPUs for the module (starting it can take ~30-60 s on a loaded machine)."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    backend_ray.connect(workers=2, timeout=300)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def snippets(minilm):
    """minilm-rt and 20 held-out snippets (random.Random(0).sample); 1 torch thread, as the actors have."""
    import torch

    import xattr_lab as xa

    torch.set_num_threads(1)
    data = xa.zoo.rotten_tomatoes("test")
    return minilm, [t for t, _ in random.Random(0).sample(data, N_TEXTS)]


@pytest.fixture(scope="module")
def local_rows(snippets):
    """The one-process harness's per-text rows (no backend): the reference every sharded run must equal."""
    from xattr_lab import faithfulness

    ex, texts = snippets
    _, per_text = faithfulness.evaluate(ex, texts, ["attention"], cache=False, progress=False, return_per_text=True,
                                        replicates=100)
    return per_text.to_dict("records")


def faith_items(texts):
    return [("attention", {"method": "attention"}, text, 0.2) for text in texts]


def run_faith(ex, texts, out, work=faithfulness_harness.faithfulness_row, **kwargs):
    from xattr_lab.evaluation import provenance

    fingerprint = provenance.model_fingerprint(ex)
    return run_sharded(faith_items(texts), workers.session_factory(ex, fingerprint), work, out=out,
                       schema=faithfulness_harness.faithfulness_schema(), provenance={"model": fingerprint, "test": 1},
                       keys=[str(i) for i in range(len(texts))], worker=ex, progress=False, **kwargs)


def assert_rows_equal(a, b):
    import numpy as np

    assert len(a) == len(b) == N_TEXTS
    for metric in ("log_odds", "comprehensiveness", "sufficiency", "aopc"):
        np.testing.assert_allclose([r[metric] for r in a], [r[metric] for r in b], rtol=RTOL, atol=ATOL)
    assert [(r["m"], r["top"]) for r in a] == [(r["m"], r["top"]) for r in b]


def logged_row(ex, item, log=None, crash=None, fail=None):
    """faithfulness_row, logging each call to ``log``; exits the process (first time) at text ``crash``,
    raises at text ``fail``."""
    with open(log, "a") as handle:
        handle.write(item[2] + "\n")
    if crash is not None and item[2] == crash and not Path(log + ".crashed").exists():
        Path(log + ".crashed").touch()
        os._exit(1)  # the actor's process dies mid-run
    if fail is not None and item[2] == fail:
        raise Stop(fail)
    return faithfulness_harness.faithfulness_row(ex, item)


@pytest.mark.slow
def test_local_backend_equals_the_harness(snippets, local_rows, tmp_path):
    from xattr_lab import faithfulness

    ex, texts = snippets
    _, per_text = faithfulness.evaluate(ex, texts, ["attention"], cache=False, progress=False, return_per_text=True,
                                        replicates=100, backend="local", out=tmp_path)
    assert_rows_equal(local_rows, per_text.to_dict("records"))
    assert len(sharded.read_store(tmp_path)) == N_TEXTS


@pytest.mark.slow
def test_ray_equals_local(ray_runtime, snippets, local_rows, tmp_path):
    from xattr_lab import faithfulness

    ex, texts = snippets
    _, per_text = faithfulness.evaluate(ex, texts, ["attention"], cache=tmp_path / "cache", progress=False,
                                        return_per_text=True, replicates=100, backend="ray", workers=2)
    assert_rows_equal(local_rows, per_text.to_dict("records"))
    shards = list((tmp_path / "cache" / "shards").glob("faithfulness-*"))
    assert len(shards) == 1 and len(sharded.read_store(shards[0])) == N_TEXTS
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1  # the harness's cache has the records too


@pytest.mark.slow
def test_ray_actor_killed_mid_run_loses_nothing(ray_runtime, snippets, local_rows, tmp_path):
    import functools

    ex, texts = snippets
    log = str(tmp_path / "calls.log")
    work = functools.partial(logged_row, log=log, crash=texts[13])
    remote = run_faith(ex, texts, tmp_path / "ray", work=work, backend="ray", workers=2, shard_size=4)
    assert Path(log + ".crashed").exists()  # an actor did die
    assert len(Path(log).read_text().splitlines()) >= N_TEXTS + 1  # the lost shard ran again
    assert_rows_equal(local_rows, remote)


@pytest.mark.slow
def test_ray_resume_after_interrupt_recomputes_nothing(ray_runtime, snippets, local_rows, tmp_path):
    import functools

    ex, texts = snippets
    out, log = tmp_path / "ray", str(tmp_path / "calls.log")
    with pytest.raises(Stop):  # interrupted in this process (a Ray run stops the same way: the error comes back)
        run_faith(ex, texts, out, work=functools.partial(logged_row, log=log, fail=texts[13]), shard_size=4)
    written = {int(r["_key"]) for r in sharded.read_store(out)}
    assert written == set(range(12))
    Path(log).unlink()
    rows = run_faith(ex, texts, out, work=functools.partial(logged_row, log=log), backend="ray", workers=2,
                     shard_size=4)
    again = Path(log).read_text().splitlines()
    assert not {texts[i] for i in written} & set(again)  # nothing written was computed again
    assert len(again) == N_TEXTS - len(written)
    assert_rows_equal(local_rows, rows)


# ---------------------------------------------------------------------------- front ends (fast, tiny model)
def test_cli_evaluate_local_backend_equals_the_default(tmp_path, capsys):
    from xattr_lab import cli

    (tmp_path / "texts.txt").write_text("a good film\na bad film\na dull, long film\n")
    base = ["evaluate", str(tmp_path / "texts.txt"), "--model", "tiny-bert", "--methods", "attention",
            "--no-cache"]
    assert cli.main(base + ["--csv", str(tmp_path / "a.csv")]) == 0
    assert cli.main(base + ["--backend", "local", "--csv", str(tmp_path / "b.csv")]) == 0
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))


def test_cli_address_needs_the_ray_backend(tmp_path, capsys):
    from xattr_lab import cli

    (tmp_path / "texts.txt").write_text("a good film\n")
    code = cli.main(["evaluate", str(tmp_path / "texts.txt"), "--model", "tiny-bert", "--address", "auto"])
    assert code != 0 and "--backend ray" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the other jobs (fast, tiny models)
def test_ablation_effects_sharded_equal_the_one_pass(tiny, tmp_path):
    import numpy as np

    from xattr_lab.evaluation.circuit_truth import head_ablation_effects

    ex = tiny("llama")
    prompts, negatives = ["the cat sat on", "a dog ran to", "my hat is red"], ["one two three four", "five six seven"]
    metric = ([5, 6, 7], [7, 8, 9])
    whole = head_ablation_effects(ex, prompts, metric, negatives=negatives[:1] * 2, progress=False)
    sharded_effects = circuit_truth_sharded.ablation_effects(ex, prompts, metric, negatives=negatives[:1] * 2, shard_size=3,
                                                    out=tmp_path, progress=False)
    np.testing.assert_allclose(sharded_effects, whole, rtol=RTOL, atol=ATOL)
    assert len(list(tmp_path.glob("shard-*.parquet"))) == -(-ex.n_layers * ex.n_heads // 3)
    part = head_ablation_effects(ex, prompts, metric, negatives=negatives[:1] * 2, progress=False, heads=[1, 2])
    assert np.isnan(part).sum() == part.size - 2 and part.ravel()[2] == pytest.approx(whole.ravel()[2], abs=1e-6)


@pytest.mark.slow
def test_robustness_records_local_backend(tiny, tmp_path):
    from xattr_lab.evaluation.robustness import experiment as RE

    texts = ["It's a gripping, beautifully acted film; the story is clever and the music is great!",
             "A dull, lifeless movie with a plot that goes nowhere and actors who seem bored."]
    ex = tiny("bert")
    config = RE.ExperimentConfig(model="tiny-bert", methods=("attention",), ks=(1, 3), ws=(1, 3), queries=2,
                                 neighbours=8)
    reference = RE.run_experiment(ex, texts, config, cache=False, progress=False)
    records = robustness_sharded.robustness_records(ex, texts, config, cache=tmp_path / "cache", out=tmp_path / "shards",
                                              progress=False)

    def content(record):
        drop = ("seconds", "cpu_seconds")
        arms = {p: {a: {k: v for k, v in arm.items() if k not in drop} for a, arm in by.items()}
                for p, by in record["arms"].items()}
        return {**{k: v for k, v in record.items() if k not in drop}, "arms": arms}

    assert [content(r) for r in records] == [content(r) for r in reference]
    # the experiment's own cache holds them: the one-process code reads them without computing
    assert len(RE.run_experiment(ex, texts, config, cache=tmp_path / "cache", compute=False, progress=False)) == 2
    assert len(sharded.read_store(tmp_path / "shards")) == 2


def test_results_script_passes_the_backend_to_the_steps_that_take_it(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_for_ray", REPO_ROOT / "scripts" / "results.py")
    results = importlib.util.module_from_spec(spec)
    sys.modules["results_for_ray"] = results  # dataclasses look their module up
    try:
        spec.loader.exec_module(results)
    finally:
        del sys.modules["results_for_ray"]
    extra = results.backend_argv("ray", "10.0.0.1:6379", 2)
    assert extra == ["--backend", "ray", "--address", "10.0.0.1:6379", "--workers", "2"]
    assert results.backend_argv(None, "x", 3) == []
    echo = ("-c", "import sys; print(sys.argv[1:])")
    for name, takes in (("takes", True), ("plain", False)):
        code, _ = results.run_step(results.Step(name, "t", echo, backend=takes), tmp_path, extra=extra)
        assert code == 0
        printed = [line for line in (tmp_path / f"{name}.log").read_text().splitlines()
                   if not line.startswith("[results]")]  # the step's own output, not results.py's timing line
        assert printed[-1] == str(extra if takes else [])
    assert {s.name for s in results.STEPS if s.backend} == {"faithfulness", "robustness", "circuits-truth-ioi"}
    for step in results.STEPS:  # every step that takes the backend has a script that accepts it
        if step.backend:
            script = (REPO_ROOT / step.argv[0]).read_text()
            assert all(f'"{flag}"' in script for flag in ("--backend", "--address", "--workers")), step.name


# ---------------------------------------------------------------------------- path-patching truth (fast, the toy)
@pytest.fixture(scope="module")
def toy_patching():
    """The hand-built toy induction model (2 layers x 4 heads) and 12 "x y" / "x x" prompt pairs."""
    import xattr_lab as xa
    from xattr_lab.evaluation.tasks import induction_task

    ex = xa.load("toy-induction", device="cpu")
    task = induction_task(ex.tokenizer, n=12, seed=1)
    rounds = ("copy (-> logits)", "duplicate-token (-> copy heads)"), (("full", "full"),) * 2
    return ex, task, rounds


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_patching_truth_sharded_equals_one_process(toy_patching, tmp_path):
    import numpy as np

    from xattr_lab.evaluation.circuit_truth import patching_truth

    ex, task, (names, modes) = toy_patching
    whole = patching_truth(ex, task.positive, task.negative, task.metric, names, modes, progress=False, n_boot=200)
    shard = patching_truth(ex, task.positive, task.negative, task.metric, names, modes, progress=False, n_boot=200,
                           backend="local", workers=2, out=str(tmp_path))
    assert whole.classes == shard.classes and whole.classes[names[0]]  # the toy's copy heads are found
    assert np.array_equal(whole.nodes, shard.nodes) and np.array_equal(whole.edges, shard.edges)
    for a, b in zip(whole.rounds, shard.rounds, strict=True):
        assert a["senders"] == b["senders"]
        np.testing.assert_allclose(b["mean"], a["mean"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b["ci"], a["ci"], rtol=RTOL, atol=ATOL)
    assert len(list(tmp_path.glob("round-*"))) == len(whole.rounds)


def test_patching_effects_sharded_rows_and_resume(toy_patching, tmp_path, monkeypatch):
    import numpy as np

    from xattr_lab.evaluation import circuit_patching
    from xattr_lab.evaluation.circuit_truth import _as_metric

    ex, task, _ = toy_patching
    metric = _as_metric(task.metric)
    runs = circuit_patching.prepare_runs(ex, task.positive, task.negative, metric)
    senders, receivers = [0, 1, 2, 3], [5, 7]
    whole = circuit_patching.path_patch(ex, runs, senders, receivers, "full", "full", progress=False)
    args = (ex, task.positive, task.negative, metric, senders, receivers, "full", "full")
    real, first = circuit_patching.path_patch, []

    def stop_on_second(*a, **k):  # interrupt the run after its first shard is written
        if first:
            raise Stop("interrupted")
        first.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(circuit_patching, "path_patch", stop_on_second)
    with pytest.raises(Stop):
        circuit_patching_sharded.patching_effects(*args, out=tmp_path, shard_size=3, progress=False)
    monkeypatch.setattr(circuit_patching, "path_patch", real)
    assert [list(s) for s in first] == [[0, 1, 2]]
    calls = counting(monkeypatch, circuit_patching, "path_patch")
    resumed = circuit_patching_sharded.patching_effects(*args, out=tmp_path, shard_size=3, progress=False)
    assert [list(c[2]) for c in calls] == [[3]]  # only the shard that was not written
    np.testing.assert_allclose(resumed, whole, rtol=RTOL, atol=ATOL)
    [store] = tmp_path.glob("round-*")
    assert sorted(r["sender"] for r in sharded.read_store(store)) == senders
    again = circuit_patching_sharded.patching_effects(*args, out=tmp_path, shard_size=3, progress=False)
    assert len(calls) == 1 and np.array_equal(again, resumed)  # a finished run recomputes nothing


def test_sharding_block_shards_the_cached_truths(toy_patching, monkeypatch):
    from xattr_lab.evaluation import circuit_truth

    ex, task, (names, modes) = toy_patching
    calls = counting(monkeypatch, circuit_patching_sharded, "patching_effects")
    with circuit_truth.sharding("local", workers=2):
        inside = circuit_truth.patching_truth(ex, task.positive, task.negative, task.metric, names, modes,
                                              progress=False, n_boot=200)
    assert len(calls) == len(inside.rounds)
    circuit_truth.patching_truth(ex, task.positive, task.negative, task.metric, names, modes, progress=False,
                                 n_boot=200)
    assert len(calls) == len(inside.rounds)  # outside the block: today's loop



@pytest.mark.slow
def test_ray_patching_effects_equal_one_process(ray_runtime, tiny, tmp_path):
    """Path patching of every head of a tiny random llama into the logits and into two heads, on 2 Ray actors."""
    import numpy as np

    from xattr_lab.evaluation import circuit_patching
    from xattr_lab.evaluation.circuit_truth import _as_metric

    ex = tiny("llama")
    prompts, corrupted, metric = ["the cat sat on", "a dog ran to"], ["my hat is red", "one two three four"], _as_metric(
        ([5, 6], [7, 8]))
    runs = circuit_patching.prepare_runs(ex, prompts, corrupted, metric)
    heads = list(range(ex.n_layers * ex.n_heads))
    for receivers in (None, [heads[-1], heads[-2]]):
        senders = heads if receivers is None else [h for h in heads if h // ex.n_heads < heads[-1] // ex.n_heads]
        whole = circuit_patching.path_patch(ex, runs, senders, receivers, "full", "full", progress=False)
        on_ray = circuit_patching_sharded.patching_effects(ex, prompts, corrupted, metric, senders, receivers, "full", "full",
                                                   backend="ray", workers=2, out=tmp_path, shard_size=2,
                                                   progress=False)
        np.testing.assert_allclose(on_ray, whole, rtol=RTOL, atol=ATOL)
        assert np.abs(whole).max() > 0  # the patch changes the metric


# ---------------------------------------------------------------------------- workers load the driver's model (issue 27)
#: run in a fresh process (as a Ray actor is): unpickle the ``make_worker`` functions from stdin, build each worker
#: and print its name, its load recipe's source and the attention attribution of TEXT (raw attention needs maps)
WORKER_SCRIPT = """
import json, pickle, sys
makers = pickle.loads(sys.stdin.buffer.read())
for make in makers:
    ex = make()
    scores = ex.attribute(sys.argv[1], method="attention").scores.tolist()
    print(json.dumps({"name": ex.name, "scores": scores}))
"""
TEXT = "a good film, well acted"


def tiny_bert(seed: int):
    """(model, tokenizer): a tiny random BERT classifier, its classifier weights x30 so that its faithfulness
    metrics are ~1e-4 (x1: ~1e-5), well above the 1e-6 tolerance of the Ray-vs-local comparisons."""
    import torch

    from xattr_lab.core.zoo import tiny_model

    model, tokenizer = tiny_model("bert", seed=seed)
    with torch.no_grad():
        model.classifier.weight.mul_(30)
    return model, tokenizer


@pytest.fixture
def saved_model(tmp_path, monkeypatch):
    """A tiny random BERT saved with save_pretrained as ./model in a fresh working folder (the folder is the cwd)."""
    model, tokenizer = tiny_bert(seed=3)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_workers_rebuild_a_relative_directory_and_a_model_object_with_attention(saved_model, tmp_path):
    """The make_worker of a model loaded from ./model and of xa.load(model, tokenizer) (after it has run), unpickled
    in a fresh process elsewhere, give working sessions equal to the driver's; the directory's sends no weights."""
    import pickle
    import subprocess

    import numpy as np

    import xattr_lab as xa
    from xattr_lab.core.zoo import tiny_model
    from xattr_lab.evaluation import provenance

    by_dir = xa.load("model", device="cpu")
    assert by_dir.load_recipe.source == str(saved_model / "model")  # resolved against the folder it was loaded from
    by_object = xa.load(*tiny_model("bert", seed=4), device="cpu", name="mine")
    assert by_object.load_recipe.source is None
    reference = [ex.attribute(TEXT, method="attention").scores for ex in (by_dir, by_object)]  # both have run
    makers = [workers.session_factory(ex, provenance.model_fingerprint(ex)) for ex in (by_dir, by_object)]
    assert len(pickle.dumps(makers[0])) < 5_000  # a name and options, no weights
    payload = pickle.dumps(makers)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, TEXT], input=payload, capture_output=True,
                          cwd=elsewhere, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    rows = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    assert [r["name"] for r in rows] == ["model", "mine"]
    for row, scores in zip(rows, reference, strict=True):
        np.testing.assert_allclose(row["scores"], scores, rtol=RTOL, atol=ATOL)
        assert np.ptp(scores) > 0  # the attention maps were there and differ between tokens


def test_worker_of_a_missing_directory_says_so(tmp_path):
    with pytest.raises(InputError, match="not on this worker's machine"):
        workers.load_session(str(tmp_path / "gone"), object)


def test_worker_re_applies_the_loading_options(saved_model):
    """dtype= given to load() is recorded and applied by the worker (by directory and to a model object)."""
    import torch

    import xattr_lab as xa
    from xattr_lab.core.zoo import tiny_model
    from xattr_lab.evaluation import provenance

    for ex in (xa.load("model", dtype="bfloat16"), xa.load(*tiny_model("bert"), dtype="bfloat16", name="b")):
        worker = workers.session_factory(ex, provenance.model_fingerprint(ex))()
        assert worker.model.dtype == torch.bfloat16 and worker.model is not ex.model
        assert worker.model.config._attn_implementation == "eager"


@pytest.mark.slow
def test_ray_cli_evaluate_on_a_relative_model_directory(ray_runtime, saved_model, capsys):
    """The issue's command: `xattr evaluate texts.txt --model model --backend ray --workers 2` in the model's folder."""
    import pandas as pd

    from xattr_lab import cli

    Path("texts.txt").write_text("a good film\na bad film\na dull, long film\nwell acted and moving\n")
    base = ["evaluate", "texts.txt", "--model", "model", "--methods", "attention,grad_x_input", "--no-cache"]
    assert cli.main(base + ["--backend", "ray", "--workers", "2", "--csv", "ray.csv"]) == 0, capsys.readouterr().err
    assert cli.main(base + ["--csv", "local.csv"]) == 0
    on_ray, local = pd.read_csv("ray.csv"), pd.read_csv("local.csv")
    assert sorted(set(local["method"])) == ["attention", "grad_x_input"] and len(local) == 6  # 3 metrics each
    assert local["mean"].abs().max() > 100 * ATOL  # the comparison below can tell two models apart
    pd.testing.assert_frame_equal(on_ray.drop(columns="seconds"), local.drop(columns="seconds"), rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_ray_faithfulness_of_a_model_object(ray_runtime, tmp_path):
    """xa.load(model, tokenizer) (already used) on Ray equals the one-process harness."""
    import numpy as np

    import xattr_lab as xa
    from xattr_lab import faithfulness

    ex = xa.load(*tiny_bert(seed=5), device="cpu", name="my-bert")
    texts = ["the cat sat on the mat", "a dog ran to the park", "my hat is red and old"]
    ex.attribute(texts[0], method="attention")
    kwargs = dict(cache=False, progress=False, return_per_text=True, replicates=20)
    _, local = faithfulness.evaluate(ex, texts, ["attention"], **kwargs)
    _, on_ray = faithfulness.evaluate(ex, texts, ["attention"], backend="ray", workers=2, out=tmp_path, **kwargs)
    assert local["log_odds"].abs().max() > 100 * ATOL  # the comparison below can tell two models apart
    for metric in ("log_odds", "comprehensiveness", "sufficiency", "aopc"):
        np.testing.assert_allclose(on_ray[metric], local[metric], rtol=RTOL, atol=ATOL)
    assert len(sharded.read_store(tmp_path)) == len(texts)


def test_model_fingerprint_of_a_plain_config_is_stable_across_processes():
    """A config without ``to_json_string`` (the toy's) is hashed by its fields, not by a repr with an address."""
    import subprocess
    import sys

    code = ("import xattr_lab as xa; from xattr_lab.evaluation import provenance; "
            "print(provenance.model_fingerprint(xa.load('toy-induction')))")
    prints = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
              for _ in range(2)]
    assert prints[0] == prints[1]
