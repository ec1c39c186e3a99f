"""GAF-at-length cases shared by tests/graphs/test_graphs_gaf_length.py and the benchmark
tests/benchmarks/test_bench_gaf_length.py: ordinary prose cut to a token count, and an exact bracket
around a layered graph's max-flow value from scipy."""
from __future__ import annotations

import numpy as np


def prose_of_tokens(tokenizer, n: int) -> str:
    """The longest run of whole words of Rotten Tomatoes snippets (the zoo's data) with at most n tokens."""
    from xattr_lab.core import zoo

    words: list[str] = []
    for row in zoo._rotten_tomatoes_rows():
        words += row["text"].split()
        if len(words) > 3 * n:
            break
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer(" ".join(words[:mid]))["input_ids"]) <= n:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def max_flow_bracket(C, sources, resolution=2.0**30):
    """(lower, upper) around the exact max-flow value of the layered graph of C (L, n, n): scipy's
    max flow on floor(C·unit) (feasible for C: a lower bound), and the capacity in C
    of the cut between the nodes its residual graph reaches from s and the rest (an upper bound)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    L, n, _ = C.shape
    # every edge flow is at most the value, itself at most the sources' out-capacity and any
    # layer's total: scaled so, no integer flow overflows scipy's int32
    bound = min(float(C[L - 1][list(sources)].sum()), float(C.sum(axis=(1, 2)).min()))
    unit = resolution / max(float(C.max()), bound)
    k, i, j = np.nonzero(C > 0)
    s, t = (L + 1) * n, (L + 1) * n + 1
    U, big = float(C.sum()), np.iinfo(np.int32).max
    tails = np.concatenate([(k + 1) * n + i, np.full(len(sources), s), np.arange(n)])
    heads = np.concatenate([k * n + j, L * n + np.asarray(sources), np.full(n, t)])
    true_caps = np.concatenate([C[k, i, j], np.full(len(sources) + n, U)])
    ints = np.concatenate([np.floor(C[k, i, j] * unit), np.full(len(sources) + n, big)]).astype(np.int32)
    graph = csr_matrix((ints, (tails, heads)), shape=(t + 1, t + 1))
    result = maximum_flow(graph, s, t)
    flow = np.asarray(result.flow[tails, heads]).ravel()
    residual = csr_matrix(((ints - flow).astype(np.int64) + 0, (tails, heads)), shape=(t + 1, t + 1))
    back = csr_matrix((flow.astype(np.int64), (heads, tails)), shape=(t + 1, t + 1))
    reach = np.zeros(t + 1, dtype=bool)
    open_edges = residual + back
    open_edges.data = (open_edges.data > 0).astype(np.int8)
    open_edges.eliminate_zeros()
    reach[breadth_first_order(open_edges, s, return_predecessors=False)] = True
    assert not reach[t]
    crossing = reach[tails] & ~reach[heads]
    return result.flow_value / unit, float(true_caps[crossing].sum())


def certify_random(L: int, n: int) -> None:
    """Certify GAF on (L, n) random attention-like capacities (every token a source); print wall and CPU
    seconds, steps, peak RSS, and check the value against scipy's bracket. ``python -m tests.support.gaf_length_cases L n``."""
    import gc
    import resource
    import sys
    import time

    from tests.benchmarks.test_bench_gaf_length import attention_like
    from xattr_lab.graphs import barrier_max_flow

    C = attention_like(L, n)
    t0, c0 = time.time(), time.process_time()
    sol = barrier_max_flow(C, None, list(range(n)), threads=1)
    w, c = time.time() - t0, time.process_time() - c0
    print(f"GAF random ({L}, {n}) threads=1: wall_s={w:.1f} cpu_s={c:.1f} iterations={sol.iterations} "
          f"primal_dual_iterations={sol.residuals['primal_dual_iterations']} mu={sol.mu:.4g} value={sol.value:.10g} "
          f"certified_gap={sol.gap / sol.value:.3g} peak_rss_GB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f}",
          flush=True)
    value = sol.value
    del sol
    gc.collect()
    lo, up = max_flow_bracket(C, list(range(n)))
    print(f"scipy bracket [{lo:.10g}, {up:.10g}]; (upper - value)/value = {(up - value) / value:.3g}", flush=True)
    assert up - value <= 1e-6 * value and value <= up * (1 + 1e-9)


if __name__ == "__main__":
    import sys

    certify_random(int(sys.argv[1]), int(sys.argv[2]))
