"""GAF at length, side by side with the solver as it was before issue 33 (opt-in benchmark).

``pytest tests/benchmarks/test_bench_gaf_length.py --benchmark-only -o addopts="" -p no:cacheprovider -s``

Instances: (12, 512) random attention-like capacities (the ``attention_like`` of
test_bench_flows.py, every token a source) and smollm2-135m's AGF capacities for 512 tokens of
Rotten Tomatoes prose (the predicting position as source, as ``ex.flow`` does). Variants:
``reference`` — the frozen pre-issue-33 solver in ``gaf_reference/`` (proportional-split start,
primal Newton steps from the first μ stage on) — and ``current`` — ``barrier_max_flow`` (a
primal-dual phase to the first stage, then the same stages). Both on ``THREADS`` CPU threads,
the same μ grid and certificate. Wall and CPU seconds, Newton iterations, μ and the certified gap go to
``extra_info`` and are printed; after both variants of an instance, the ratios. A reference that
raises SolverError records its time to failure (the ratio is then a lower bound). Each value is
checked against scipy's max-flow (``max_flow_bracket``, as in tests/test_graphs_gaf_length.py):
the value lies below scipy's cut priced at the true capacities and within 1e-6 of it.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import gaf_reference
from xattr_lab.errors import SolverError
from xattr_lab.graphs import barrier_max_flow

#: CPU threads of both solvers (GAF_BENCH_THREADS; default 1, the solver's default: on this shared
#: 2-core machine 2 threads spun — the reference used 163 s CPU in 6 min on (12, 512) without finishing)
THREADS = int(os.environ.get("GAF_BENCH_THREADS", "1"))
RESULTS: dict[str, dict[str, dict]] = {}


def attention_like(L, n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.random((L, n, n)) ** 4
    return A / A.sum(axis=2, keepdims=True)


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


INSTANCES: dict[str, tuple] = {}


def instance(name, request):
    if name not in INSTANCES:
        if name == "random-12x512":
            INSTANCES[name] = (attention_like(12, 512), list(range(512)))
        else:
            from xattr_lab.methods import flows as method_flows

            ex = request.getfixturevalue("smollm")
            text = prose_of_tokens(ex.tokenizer, 512)
            cap = ex.capture(ex.encode(text), None, attention_grads=True)
            valid = method_flows._valid_positions(cap.encoding)
            C = method_flows._capacities(ex, cap, "agf", valid)
            INSTANCES[name] = (C, method_flows._pick_sources(ex, cap.encoding, None, valid))
    return INSTANCES[name]


@pytest.mark.parametrize("variant", ["reference", "current"])
@pytest.mark.parametrize("name", ["random-12x512", "smollm2-512"])
def test_bench_gaf_length(benchmark, request, name, variant):
    C, sources = instance(name, request)
    solve = gaf_reference.barrier_max_flow if variant == "reference" else barrier_max_flow
    outcome: dict = {}

    def run():
        try:
            outcome["sol"] = solve(C, None, sources, threads=THREADS)
        except SolverError as err:
            outcome["error"] = err

    cpu = time.process_time()
    benchmark.pedantic(run, rounds=1, iterations=1)
    info = {"wall_s": benchmark.stats.stats.mean, "cpu_s": time.process_time() - cpu, "threads": THREADS,
            "shape": list(C.shape)}
    if "error" in outcome:
        info.update(failed=str(outcome["error"])[:160], iterations=len(outcome["error"].residuals.get("history", [])))
        assert variant == "reference", f"the current solver failed: {outcome['error']}"
    else:
        sol = outcome["sol"]
        lower, upper = max_flow_bracket(C, sources)  # lower <= exact max-flow value <= upper
        info.update(iterations=sol.iterations, mu=sol.mu, value=sol.value, certified_gap=sol.gap / sol.value,
                    scipy_lower=lower, scipy_upper=upper)
        assert sol.gap <= 1e-6 * sol.value
        assert sol.value <= upper * (1 + 1e-9) and sol.upper_bound >= lower * (1 - 1e-9)
        assert upper - sol.value <= 1e-6 * sol.value  # scipy's cut certifies the value too
    RESULTS.setdefault(name, {})[variant] = info
    benchmark.extra_info.update(info)
    print(f"\nGAF {name} {variant}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in info.items()))
    both = RESULTS[name]
    if {"reference", "current"} <= set(both):
        ref, cur = both["reference"], both["current"]
        ratios = {"wall_ratio": ref["wall_s"] / cur["wall_s"], "cpu_ratio": ref["cpu_s"] / cur["cpu_s"],
                  "iteration_ratio": ref["iterations"] / cur["iterations"]}
        if "value" in ref:
            assert cur["mu"] == ref["mu"]  # the same stage of the same μ grid certifies
            assert cur["value"] == pytest.approx(ref["value"], rel=1e-9)
        else:
            ratios["reference_failed"] = True  # ratios are lower bounds
        benchmark.extra_info.update(ratios)
        print(f"GAF {name} reference / current: " + ", ".join(f"{k}={v:.3g}" for k, v in ratios.items()))
