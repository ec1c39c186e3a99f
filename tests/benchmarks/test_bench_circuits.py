"""Benchmarks for SAE circuit scoring (opt-in: ``pytest tests/benchmarks/test_bench_circuits.py``).

Side by side in one process, on random codes shaped like smollm2-135m IOI runs (270 heads,
F = 200 codes, 10 positive and 10 negative examples):
- ``edge_scores`` (one vectorised set difference over int64 keys) against the direct Python
  loop over head pairs with ``set`` differences (the definition);
- ``roc_auc`` (ranks, Mann-Whitney) against ``sklearn.metrics.roc_auc_score``;
- ``paper_edge_node_scores`` against the paper's Python loop; ``jsd_scores`` on 250 prompts per class.
Ratios go to ``extra_info`` (``--benchmark-json``) and are printed (run with ``-s``).
"""
from __future__ import annotations

import time

import numpy as np

from xattr_lab import circuits


def _codes(seed=0, heads=270, examples=10, features=200):
    rng = np.random.default_rng(seed)
    # most heads reuse a few codes; like trained SAEs, not uniform over F
    base = rng.integers(0, features, size=(1, heads))
    noise = rng.integers(0, features, size=(examples, heads))
    pick = rng.random((examples, heads)) < 0.3
    return np.where(pick, noise, base)


def _edge_scores_loop(pos, neg):
    heads = pos.shape[1]
    out = np.zeros((heads, heads))
    for a in range(heads):
        for b in range(a + 1, heads):
            only = {(p[a], p[b]) for p in pos} - {(q[a], q[b]) for q in neg}
            out[a, b] = out[b, a] = len(only)
    return out


def test_bench_edge_scores(benchmark):
    pos, neg = _codes(0), _codes(1)
    start = time.perf_counter()
    reference = _edge_scores_loop(pos, neg)
    loop_s = time.perf_counter() - start
    result = benchmark(circuits.edge_scores, pos, neg)
    np.testing.assert_array_equal(result, reference)
    ratio = loop_s / benchmark.stats.stats.mean
    benchmark.extra_info.update({"python_loop_s": loop_s, "speedup_vs_loop": ratio})
    print(f"\nedge_scores 270 heads: {benchmark.stats.stats.mean * 1e3:.1f} ms vs loop {loop_s * 1e3:.0f} ms (x{ratio:.1f})")


def test_bench_roc_auc(benchmark):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 10, 270 * 269 // 2).astype(float)
    truth = rng.random(scores.size) < 0.1
    start = time.perf_counter()
    for _ in range(20):
        reference = roc_auc_score(truth, scores)
    sk_s = (time.perf_counter() - start) / 20
    result = benchmark(circuits.roc_auc, scores, truth)
    assert abs(result - reference) < 1e-12
    ratio = sk_s / benchmark.stats.stats.mean
    benchmark.extra_info.update({"sklearn_s": sk_s, "speedup_vs_sklearn": ratio})
    print(f"\nroc_auc 36k edges: {benchmark.stats.stats.mean * 1e3:.2f} ms vs sklearn {sk_s * 1e3:.2f} ms (x{ratio:.2f})")


def _paper_edge_loop(edge):
    """The paper's edge evaluation as written (src/edge.py lines 120-139): a Python list of endpoints."""
    heads = edge.shape[0]
    order = np.argsort(edge.flatten())[::-1]
    rows, cols = np.unravel_index(order, edge.shape)
    components = []
    for h1, h2 in zip(rows, cols):
        components += [h1, h2]
    y = np.zeros(heads)
    for h in components[: heads ** 2 // 2]:
        y[h] += 1
    return y


def test_bench_paper_edge_metric(benchmark):
    E = circuits.edge_scores(_codes(0), _codes(1))
    start = time.perf_counter()
    reference = _paper_edge_loop(E)
    loop_s = time.perf_counter() - start
    result = benchmark(circuits.paper_edge_node_scores, E)
    np.testing.assert_array_equal(result, reference)
    ratio = loop_s / benchmark.stats.stats.mean
    benchmark.extra_info.update({"python_loop_s": loop_s, "speedup_vs_loop": ratio})
    print(f"\npaper edge metric 270 heads: {benchmark.stats.stats.mean * 1e3:.1f} ms vs loop {loop_s * 1e3:.0f} ms (x{ratio:.1f})")


def test_bench_jsd_scores(benchmark):
    pos, neg = _codes(0, examples=250), _codes(1, examples=250)
    result = benchmark(circuits.jsd_scores, pos, neg)
    assert result.shape == (270,) and np.all((result >= 0) & (result <= 1))


def _paper_epochs_unfolded(X, epochs, seed=0):
    """The paper SAE's training as first written: the tied bias subtracted from the (N, d) input inside
    the autograd graph (so every step also computes the gradient with respect to that input)."""
    import torch
    from torch.nn import functional as nnf

    torch.manual_seed(seed)
    sae = circuits.PaperSparseAutoencoder(X.shape[1], 200)
    optimiser = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(epochs):
        sae._unit_rows()
        z = torch.relu(nnf.linear(X - sae.tied_bias, sae.encoder.weight, sae.encoder.bias))
        recon = sae.decode(z)
        loss = (recon - X).pow(2).mean() + 0.02 * z.abs().sum(dim=1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return sae


def test_bench_sae_epochs(benchmark):
    """train_sae (paper recipe) on smollm2-135m-shaped data, 20 prompts x 270 heads x 576, against the
    unfolded training step; CPU seconds per epoch, 1 thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X = torch.randn(20 * 270, 576, generator=torch.Generator().manual_seed(0))
        epochs = 10
        start = time.process_time()
        _paper_epochs_unfolded(X, epochs)
        unfolded = (time.process_time() - start) / epochs
        benchmark.pedantic(circuits.train_sae, args=(X,), kwargs={"epochs": epochs}, rounds=3, iterations=1)
        start = time.process_time()
        circuits.train_sae(X, epochs=epochs)
        folded = (time.process_time() - start) / epochs
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info.update({"unfolded_cpu_s_per_epoch": unfolded, "cpu_s_per_epoch": folded,
                                 "speedup": unfolded / folded})
    print(f"\nSAE epoch (5,400 x 576, F=200): {folded * 1e3:.0f} ms CPU vs unfolded {unfolded * 1e3:.0f} ms "
          f"(x{unfolded / folded:.2f})")
