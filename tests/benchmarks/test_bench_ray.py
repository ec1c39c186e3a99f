"""Sharded faithfulness: the local backend vs Ray with 1 and 2 workers on this machine, and the per-text cost.

    .venv/bin/python -m pytest tests/benchmarks/test_bench_ray.py -o addopts="" -q -s [--benchmark-json out.json]

Job: the faithfulness record (attribution + the four metrics,
:func:`xattr_lab.evaluation.faithfulness_harness.faithfulness_row`) of ``XATTR_BENCH_RAY_TEXTS``
(default 24) held-out minilm-rt snippets (``random.Random(0).sample``) with IG [MASK]
(``XATTR_BENCH_RAY_STEPS`` Gauss-Legendre nodes, default 16), shards of 2 texts, written to Parquet.
The same process times, one after the other:

- ``local``: ``run_sharded(backend="local")`` with the model already loaded (1 torch thread);
- ``ray1``, ``ray2``: ``backend="ray"`` with 1 and 2 actors on a local Ray runtime started once
  before (its start is timed apart, ``runtime_seconds``); each run includes starting its actors and
  loading the model in each (``first_seconds``: until the first shard arrived).

Reported (``extra_info`` and stdout): seconds per run, the ratio local / Ray (> 1: Ray faster), the
per-text cost of the local run (``text_seconds``) and of a warm Ray actor (after its first shard),
and the estimate for 8 actors (one GPU each) on 1,000 texts: actor start (measured, 2 actors) + 1000 · c / 8,
c the warm per-text cost of one actor measured on the machine the benchmark runs on.
"""
from __future__ import annotations

import os
import random
import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from xattr_lab.evaluation import faithfulness_harness, provenance  # noqa: E402
from xattr_lab.evaluation.distributed import ray_backend as backend_ray, shards as sharded, workers  # noqa: E402

pytestmark = pytest.mark.slow

N = int(os.environ.get("XATTR_BENCH_RAY_TEXTS", "24"))
STEPS = int(os.environ.get("XATTR_BENCH_RAY_STEPS", "16"))
SHARD = 2
BIG = 1000  # texts of the scaling estimate (the held-out set)


@pytest.fixture(scope="module")
def job():
    import torch

    import xattr_lab as xa

    torch.set_num_threads(1)
    ex = xa.load("minilm-rt", device="cpu")
    texts = [t for t, _ in random.Random(0).sample(xa.zoo.rotten_tomatoes("test"), N)]
    items = [("ig[mask]", {"method": "ig", "baseline": "mask", "steps": STEPS}, text, 0.2) for text in texts]
    return ex, items, provenance.model_fingerprint(ex)


@pytest.fixture(scope="module")
def runtime():
    import ray

    started = time.perf_counter()
    backend_ray.connect(workers=2, timeout=300)
    seconds = time.perf_counter() - started
    try:
        yield seconds
    finally:
        ray.shutdown()


def timed_run(job, out, **options) -> dict:
    """One run: total seconds, seconds until the first shard, and each shard's arrival time."""
    ex, items, fingerprint = job
    arrivals: list[float] = []
    started = time.perf_counter()
    rows = sharded.run_sharded(items, workers.session_factory(ex, fingerprint), faithfulness_harness.faithfulness_row,
                               out=out, schema=faithfulness_harness.faithfulness_schema(),
                               provenance={"model": fingerprint, "bench": 1}, worker=ex, shard_size=SHARD,
                               progress=False, on_rows=lambda rows: arrivals.append(time.perf_counter() - started),
                               **options)
    total = time.perf_counter() - started
    assert len(rows) == N
    warm = (arrivals[-1] - arrivals[0]) / max(1, (len(arrivals) - 1) * SHARD) if len(arrivals) > 1 else float("nan")
    return {"seconds": total, "first_seconds": arrivals[0], "warm_text_seconds": warm, "rows": rows}


def test_bench_ray_vs_local(benchmark, job, runtime, tmp_path):
    local = timed_run(job, tmp_path / "local")
    ray1 = timed_run(job, tmp_path / "ray1", backend="ray", workers=1)
    # timed by pytest-benchmark: Ray with 2 actors
    ray2 = benchmark.pedantic(timed_run, args=(job, tmp_path / "ray2"), kwargs={"backend": "ray", "workers": 2},
                              rounds=1, iterations=1)
    for run in (ray1, ray2):  # the same work on the same weights: equal rows
        for a, b in zip(local["rows"], run["rows"]):
            assert a["comprehensiveness"] == pytest.approx(b["comprehensiveness"], rel=1e-6, abs=1e-6)
    c = local["seconds"] / N
    # 8 actors (one GPU each): they start in parallel (the first shard as measured with 2 actors), then
    # share BIG texts at the warm per-text cost of one actor (measured here, on CPU; on a GPU its own cost)
    estimate = ray2["first_seconds"] + BIG / 8 * ray1["warm_text_seconds"]
    info = {"texts": N, "ig_steps": STEPS, "runtime_seconds": runtime, "local_seconds": local["seconds"],
            "ray1_seconds": ray1["seconds"], "ray2_seconds": ray2["seconds"],
            "ratio_local_over_ray1": local["seconds"] / ray1["seconds"],
            "ratio_local_over_ray2": local["seconds"] / ray2["seconds"],
            "text_seconds_local": c, "ray1_first_seconds": ray1["first_seconds"],
            "ray2_first_seconds": ray2["first_seconds"], "ray1_warm_text_seconds": ray1["warm_text_seconds"],
            "ray2_warm_text_seconds_per_actor": 2 * ray2["warm_text_seconds"], f"estimate_8_actors_{BIG}_texts_seconds": estimate,
            f"one_process_{BIG}_texts_seconds": BIG * c}
    benchmark.extra_info.update(info)
    print("\n" + "\n".join(f"{k:>34}: {v:.3f}" if isinstance(v, float) else f"{k:>34}: {v}" for k, v in info.items()))
