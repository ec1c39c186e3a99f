"""SIG's exact limit on a long smollm2-135m text: the prefixes' key/value caches sliced from one
forward pass of the whole text, against one forward pass per prefix (as before), side by side (opt-in).

``pytest tests/benchmarks/test_bench_sig_prefix.py --benchmark-only -o addopts="" -p no:cacheprovider -s``

``SIG_PREFIX_BENCH_TOKENS`` (default 256) tokens of Rotten Tomatoes prose (``prose_of_tokens``), SIG's
default (``steps="exact"``: one forward pass per token, each after the cached prefix before it),
torch on ``SIG_PREFIX_BENCH_THREADS`` (default 2) threads. Variants: ``per_prefix`` — every chunk's
prefix cache from its own forward pass of the prefix (the last one kept for the next chunk) —
and ``whole_text`` — :class:`xattr_lab.methods.embedding_path.PrefixCaches`. Wall and CPU seconds go to
``extra_info``; then the ratio per_prefix / whole_text. Both must give the same scores (1e-4 of the
largest |score|: the two caches differ by float32 round-off of different kernel shapes).
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from tests.support.gaf_length_cases import prose_of_tokens
from xattr_lab.methods import embedding_path, sig_paths

TOKENS = int(os.environ.get("SIG_PREFIX_BENCH_TOKENS", "256"))
THREADS = int(os.environ.get("SIG_PREFIX_BENCH_THREADS", "2"))
RESULTS: dict[str, dict] = {}


class PerPrefix(embedding_path.PrefixCaches):
    """The previous scheme: a forward pass of x[:, :length] for each new prefix length."""

    def __call__(self, length):
        if length <= 0:
            return None
        if getattr(self, "length", None) != length:
            self.length, self.cache = length, embedding_path.prefix_cache(self.ex, self.problem, length)
        return self.cache


@pytest.mark.parametrize("variant", ["per_prefix", "whole_text"])
def test_bench_sig_prefix(benchmark, smollm, monkeypatch, variant):
    if variant == "per_prefix":
        monkeypatch.setattr(sig_paths, "PrefixCaches", PerPrefix)
    text = prose_of_tokens(smollm.tokenizer, TOKENS)
    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    times = {}

    def run():
        wall, cpu = time.perf_counter(), time.process_time()
        result = smollm.attribute(text, method="sig", progress=False)
        times.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu)
        return result

    try:
        result = benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(saved)
    assert result.options["converged"] and result.options["prefix_reuse"]
    RESULTS[variant] = {**times, "raw": np.asarray(result.raw), "tokens": len(result.tokens)}
    benchmark.extra_info.update(times, tokens=len(result.tokens), threads=THREADS)
    print(f"\n{variant}: {len(result.tokens)} tokens, wall {times['wall_s']:.1f} s, CPU {times['cpu_s']:.1f} s")
    if len(RESULTS) == 2:
        old, new = RESULTS["per_prefix"], RESULTS["whole_text"]
        scale = np.abs(old["raw"]).max()
        assert np.abs(old["raw"] - new["raw"]).max() <= 1e-4 * scale
        print(f"per_prefix / whole_text: wall {old['wall_s'] / new['wall_s']:.2f}x, "
              f"CPU {old['cpu_s'] / new['cpu_s']:.2f}x (same scores to "
              f"{np.abs(old['raw'] - new['raw']).max() / scale:.1e} of the largest)")
