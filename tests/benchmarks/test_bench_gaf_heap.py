"""The GAF solver with glibc's freed edge vectors kept in the heap, against glibc's defaults (opt-in).

``pytest tests/benchmarks/test_bench_gaf_heap.py --benchmark-only -o addopts="" -p no:cacheprovider -s``

(6, 1,024) random attention-like capacities (``attention_like`` of test_bench_gaf_length.py, every
token a source), one solver thread. What malloc keeps is state of the whole process, so the two
variants cannot share one: each runs in a fresh interpreter, back to back — ``default``
(:func:`xattr_lab.graphs.heap.retained_heap` around the solve) and ``mapped`` (its size threshold
set out of reach, so every temporary above 32 MiB is a fresh mapping, as before). CPU seconds (user
and system), minor page faults, peak RSS and the value go to ``extra_info``; then the ratios
mapped / default. Both values must agree to 1e-9 and certify against scipy's max-flow.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

SHAPE = (6, 1024)
RESULTS: dict[str, dict] = {}

_RUN = """
import json, resource, sys, time
from tests.benchmarks.test_bench_gaf_length import attention_like
from tests.support.gaf_length_cases import max_flow_bracket
from xattr_lab.graphs import barrier_max_flow, heap
if sys.argv[1] == "mapped":
    heap.RETAIN_ABOVE_BYTES = 1 << 62
L, n = int(sys.argv[2]), int(sys.argv[3])
C = attention_like(L, n)
start, wall = resource.getrusage(resource.RUSAGE_SELF), time.time()
sol = barrier_max_flow(C, None, list(range(n)), threads=1)
end, wall = resource.getrusage(resource.RUSAGE_SELF), time.time() - wall
lower, upper = max_flow_bracket(C, list(range(n)))
print(json.dumps({"wall_s": wall, "user_s": end.ru_utime - start.ru_utime, "sys_s": end.ru_stime - start.ru_stime,
                  "minor_faults": end.ru_minflt - start.ru_minflt, "peak_rss_gb": end.ru_maxrss / 2**20,
                  "iterations": sol.iterations, "value": sol.value, "gap": sol.gap, "scipy_upper": upper}))
"""


@pytest.mark.parametrize("variant", ["mapped", "default"])
def test_bench_gaf_heap(benchmark, variant):
    outcome = {}

    def run():
        done = subprocess.run([sys.executable, "-c", _RUN, variant, *map(str, SHAPE)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-2000:]
        outcome.update(json.loads(done.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    info = dict(outcome, cpu_s=outcome["user_s"] + outcome["sys_s"], shape=list(SHAPE))
    assert info["gap"] <= 1e-6 * info["value"]
    assert info["scipy_upper"] - info["value"] <= 1e-6 * info["value"]
    RESULTS[variant] = info
    benchmark.extra_info.update(info)
    print(f"\nGAF random {SHAPE} {variant}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in info.items()))
    if len(RESULTS) == 2:
        ref, cur = RESULTS["mapped"], RESULTS["default"]
        assert cur["value"] == pytest.approx(ref["value"], rel=1e-9) and cur["iterations"] == ref["iterations"]
        ratios = {k: ref[k] / cur[k] for k in ("cpu_s", "sys_s", "minor_faults", "wall_s", "peak_rss_gb")}
        benchmark.extra_info.update({f"mapped_over_default_{k}": v for k, v in ratios.items()})
        print("GAF mapped / default: " + ", ".join(f"{k}={v:.3g}" for k, v in ratios.items()))
