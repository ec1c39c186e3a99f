"""GAF solve on 1 and 2 CPU threads, side by side in one process: (12, 512) random attention-like
capacities and smollm2-135m's AGF capacities for 512 tokens of prose (as ex.flow builds them).

    .venv/bin/python results/measured/gaf_threads_measure.py > results/measured/gaf_threads.txt

Order alternates (1, 2, 2, 1 for random; 1, 2 for smollm2) so drift in machine load falls on both.
Wall and CPU seconds (time.process_time: all threads), Newton + primal-dual iterations, value,
certified gap; the values must agree to 1e-9 relative.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.getcwd())
from tests.benchmarks.test_bench_gaf_length import attention_like  # noqa: E402
from tests.support.gaf_length_cases import prose_of_tokens  # noqa: E402
from xattr_lab.graphs import barrier_max_flow  # noqa: E402


def solve(name, C, src, threads):
    wall, cpu = time.perf_counter(), time.process_time()
    sol = barrier_max_flow(C, None, src, threads=threads)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    gap = (sol.upper_bound - sol.value) / sol.value
    print(f"{name} threads={threads}: wall {wall:.1f} s, CPU {cpu:.1f} s, iterations {sol.iterations}, "
          f"value {sol.value:.12g}, certified gap {gap:.2e}", flush=True)
    return sol.value, wall, cpu


def main():
    print("load average at start:", open("/proc/loadavg").read().split()[:3], flush=True)
    C, src = attention_like(12, 512), list(range(512))
    runs = [solve("random (12, 512)", C, src, t) for t in (1, 2, 2, 1)]
    values = [r[0] for r in runs]
    assert max(values) - min(values) <= 1e-9 * max(values), values
    for t, idx in ((1, (0, 3)), (2, (1, 2))):
        print(f"random (12, 512) threads={t}: mean wall {np.mean([runs[i][1] for i in idx]):.1f} s, "
              f"mean CPU {np.mean([runs[i][2] for i in idx]):.1f} s")

    import xattr_lab as xa
    from xattr_lab.methods import flows as method_flows

    ex = xa.load("smollm2-135m", device="cpu")
    text = prose_of_tokens(ex.tokenizer, 512)
    cap = ex.capture(ex.encode(text), None, attention_grads=True)
    valid = method_flows._valid_positions(cap.encoding)
    C = method_flows._capacities(ex, cap, "agf", valid)
    src = method_flows._pick_sources(ex, cap.encoding, None, valid)
    del cap
    runs = [solve(f"smollm2 512 tokens {tuple(C.shape)}", C, src, t) for t in (1, 2)]
    assert abs(runs[0][0] - runs[1][0]) <= 1e-9 * runs[0][0]
    print("load average at end:", open("/proc/loadavg").read().split()[:3], flush=True)


if __name__ == "__main__":
    main()
