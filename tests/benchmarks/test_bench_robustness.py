"""Speed of the robustness metrics (opt-in: pytest tests/benchmarks/test_bench_robustness.py).

lens_recall on 224x224 maps with k = 1000, window 3: the vectorised metric (argpartition top-k +
separable scipy.ndimage running maximum) against a naive reference that loops over the top-k
indices and builds each clipped window in Python. Both run in this process, side by side; the
ratio is printed and stored in the benchmark's extra_info.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from xattr_lab import robustness as R

SHAPE, K, W = (224, 224), 1000, 3


def naive_lens_recall(a, b, k, w):
    """Per-index window loop: the obvious implementation the vectorised one must beat."""
    rows, cols = a.shape
    half = w // 2
    top_a = np.argsort(-a.ravel(), kind="stable")[:k]
    top_b = set(np.argsort(-b.ravel(), kind="stable")[:k].tolist())
    around = set()
    for index in top_a:
        r, c = divmod(int(index), cols)
        for rr in range(max(r - half, 0), min(r + half + 1, rows)):
            for cc in range(max(c - half, 0), min(c + half + 1, cols)):
                around.add(rr * cols + cc)
    return len(around & top_b) / k


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    a = rng.normal(size=SHAPE)
    b = a + 0.5 * rng.normal(size=SHAPE)
    return a, b


def _best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_bench_lens_recall_224(benchmark, maps):
    a, b = maps
    value = benchmark(R.lens_recall, a, b, K, W)
    assert value == pytest.approx(naive_lens_recall(a, b, K, W))
    fast = _best_of(lambda: R.lens_recall(a, b, K, W))
    slow = _best_of(lambda: naive_lens_recall(a, b, K, W))
    benchmark.extra_info.update({"vectorised_s": fast, "naive_s": slow, "speedup": slow / fast})
    print(f"\nlens_recall 224x224 k={K} w={W}: vectorised {fast * 1e3:.2f} ms, naive {slow * 1e3:.2f} ms, "
          f"ratio {slow / fast:.1f}x")
    assert benchmark.stats.stats.median < 0.050  # the budget: under 50 ms


def test_bench_naive_reference_224(benchmark, maps):
    a, b = maps
    benchmark(naive_lens_recall, a, b, K, W)


def test_bench_topk_div_224(benchmark, maps):
    a, _ = maps
    picks = benchmark(R.topk_div, a, K, W)
    assert len(set(picks.tolist())) == K


def test_bench_lens_recall_tokens_4096(benchmark):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=4096), rng.normal(size=4096)
    benchmark(R.lens_recall, a, b, 400, 5)


def test_bench_chance_overlap_224(benchmark):
    """Exact chance level of a 224x224 map, k = 1000, w = 3: one product per entry over k terms."""
    value = benchmark(R.chance_overlap, SHAPE, K, W)
    assert K / (224 * 224) < value < 9 * K / (224 * 224)
    assert benchmark.stats.stats.median < 1.0


def test_bench_chance_div_overlap_tokens(benchmark):
    """Top-k-div chance by simulation (20,000 random rankings), uncached: the report needs one per (n, k, w)."""
    from xattr_lab.evaluation.robustness import chance as RC

    benchmark(RC._simulate_div, 40, 8, 5, 20000, 0)
    assert benchmark.stats.stats.median < 1.0
