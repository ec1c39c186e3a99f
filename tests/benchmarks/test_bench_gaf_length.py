"""GAF at length, side by side with the solver as it was before issue 33 (opt-in benchmark).

``pytest tests/benchmarks/test_bench_gaf_length.py --benchmark-only -o addopts="" -p no:cacheprovider -s``

Instances: (12, 512) random attention-like capacities (the ``attention_like`` of
test_bench_flows.py, every token a source) and smollm2-135m's AGF capacities for 512 tokens of
Rotten Tomatoes prose (the predicting position as source, as ``ex.flow`` does). Variants:
``reference`` — the solver as it was before issue 33 (``barrier.PRIMAL_DUAL_START = False``:
proportional-split start, primal Newton centring at every μ stage; random instance only: on smollm2 it
ran 400 steps and raised SolverError after 625 s) — ``previous`` — the first stage reached by
primal-dual steps, then primal centring at every stage (``barrier.PRIMAL_DUAL_PATH = False``) — and
``current`` — ``barrier_max_flow`` (the whole μ grid followed by primal-dual steps, primal centring
only where a stage's cut nearly certifies the value). All on ``THREADS`` CPU threads, the same μ grid
and certificate. Wall and CPU seconds, Newton iterations, μ and the certified gap go to
``extra_info`` and are printed; after the variants of an instance, the ratios to ``current``. A
variant that raises SolverError records its time to failure (a ratio is then a lower bound). Each
value is checked against scipy's max-flow (``max_flow_bracket``, as in
tests/graphs/test_graphs_gaf_length.py): the value lies below scipy's cut priced at the true capacities
and within 1e-6 of it.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.support.gaf_length_cases import max_flow_bracket, prose_of_tokens
from xattr_lab.errors import SolverError
from xattr_lab.graphs import barrier, barrier_max_flow

#: CPU threads of both solvers (GAF_BENCH_THREADS; default 1, the solver's default: on this shared
#: 2-core machine 2 threads spun — the reference used 163 s CPU in 6 min on (12, 512) without finishing)
THREADS = int(os.environ.get("GAF_BENCH_THREADS", "1"))
RESULTS: dict[str, dict[str, dict]] = {}


def attention_like(L, n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.random((L, n, n)) ** 4
    return A / A.sum(axis=2, keepdims=True)


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


VARIANTS = {"reference": (False, False), "previous": (True, False), "current": (True, True)}


@pytest.mark.parametrize("name, variant", [("random-12x512", v) for v in VARIANTS]
                         + [("smollm2-512", v) for v in ("previous", "current")])
def test_bench_gaf_length(benchmark, request, monkeypatch, name, variant):
    C, sources = instance(name, request)
    start, path = VARIANTS[variant]
    monkeypatch.setattr(barrier, "PRIMAL_DUAL_START", start)
    monkeypatch.setattr(barrier, "PRIMAL_DUAL_PATH", path)
    outcome: dict = {}

    def run():
        try:
            outcome["sol"] = barrier_max_flow(C, None, sources, threads=THREADS)
        except SolverError as err:
            outcome["error"] = err

    cpu = time.process_time()
    benchmark.pedantic(run, rounds=1, iterations=1)
    info = {"wall_s": benchmark.stats.stats.mean, "cpu_s": time.process_time() - cpu, "threads": THREADS,
            "shape": list(C.shape)}
    if "error" in outcome:
        info.update(failed=str(outcome["error"])[:160], iterations=len(outcome["error"].residuals.get("history", [])))
        assert variant == "reference", f"the {variant} solver failed: {outcome['error']}"
    else:
        sol = outcome["sol"]
        lower, upper = max_flow_bracket(C, sources)  # lower <= exact max-flow value <= upper
        info.update(iterations=sol.iterations, primal_dual_iterations=sol.residuals["primal_dual_iterations"],
                    mu=sol.mu, value=sol.value, certified_gap=sol.gap / sol.value, scipy_lower=lower,
                    scipy_upper=upper)
        assert sol.gap <= 1e-6 * sol.value
        assert sol.value <= upper * (1 + 1e-9) and sol.upper_bound >= lower * (1 - 1e-9)
        assert upper - sol.value <= 1e-6 * sol.value  # scipy's cut certifies the value too
        RESULTS.setdefault(name + ":flows", {})[variant] = sol.edge_flow
    RESULTS.setdefault(name, {})[variant] = info
    benchmark.extra_info.update(info)
    print(f"\nGAF {name} {variant}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in info.items()))
    done = RESULTS[name]
    if variant != "current" or len(done) < 2:
        return
    cur = done["current"]
    for other, ref in done.items():
        if other == "current":
            continue
        ratios = {"wall_ratio": ref["wall_s"] / cur["wall_s"], "cpu_ratio": ref["cpu_s"] / cur["cpu_s"],
                  "iteration_ratio": ref["iterations"] / cur["iterations"]}
        if "value" in ref:
            assert cur["mu"] == ref["mu"]  # the same stage of the same μ grid certifies: the same centre
            assert cur["value"] == pytest.approx(ref["value"], rel=1e-9)
            flows = RESULTS[name + ":flows"]
            assert np.abs(flows["current"] - flows[other]).max() <= 1e-7 * cur["value"]
        else:
            ratios["reference_failed"] = True  # ratios are lower bounds
        benchmark.extra_info.update({f"{other}_{k}": v for k, v in ratios.items()})
        print(f"GAF {name} {other} / current: " + ", ".join(f"{k}={v:.3g}" for k, v in ratios.items()))
