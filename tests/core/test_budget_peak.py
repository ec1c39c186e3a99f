"""The memory estimates bound the measured peak: the scoring pass, a checkpointed gradient row (the one that runs when
a row would not fit the limit otherwise) and a whole grad x input call at 1,023 tokens of smollm2-135m (core/budget.py).

The peak is the process's resident high-water mark (VmHWM, reset through /proc/self/clear_refs) over the call, minus
its resident memory just before (the weights are paged in by a warm-up call first), i.e. what the call itself added.
The freed heap is handed back to the system first (glibc malloc_trim): without it a call can reuse what an earlier one
freed and read far lower (0.10-0.41 GiB for the same row), so the trimmed figure is the one an estimate must bound.
It varies from run to run with the allocator (0.337-0.461 GiB for the row in results/measured/
peak_memory_1024_phases.log, up to 0.514 GiB in other runs), so each is measured twice and the larger is compared.
"""
from __future__ import annotations

import ctypes
import gc
import re
import sys
from pathlib import Path

import pytest

from xattr_lab.core import budget

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
N = 1023
RUNS = 2
#: how far above a measured peak an estimate may be. The same row or call reads from ~0.25 to ~0.51 GiB from run to
#: run (what the allocator keeps of the freed layers: a clean-clone CI run's whole call read 0.276 GiB, the
#: committed log 0.269-0.414), so a bound of 2x the larger of two runs failed on a low pair; the committed log is
#: held to 2x in tests/core/test_budget_checkpointed.py
_NOT_TOO_HIGH = 3


def _resident_gib() -> tuple[float, float]:
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 2**20 for key in ("VmRSS", "VmHWM"))


def _call_peak_gib(call) -> float:
    """The most resident memory ``call`` added over RUNS runs (GiB), each after handing the freed heap back."""
    peaks = []
    for _ in range(RUNS):
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _resident_gib()[0]
        call()
        peaks.append(_resident_gib()[1] - before)
    return max(peaks)


@pytest.fixture
def problem(smollm, monkeypatch):
    """The text of N tokens prepared for attribution, under a 1G limit (one un-checkpointed row, 1.8 GiB, does not
    fit it: the rows are checkpointed)."""
    from xattr_lab.methods import embedding_path

    smollm.attribute("word word", method="grad_x_input")  # weights paged in
    monkeypatch.setenv(budget.ENV, "1G")
    with smollm.restored():
        return embedding_path.prepare(smollm, " ".join(["word"] * (N - 1)), None, "zero", check_baseline=False)


@pytest.mark.slow
def test_scoring_pass_of_a_causal_lm_keeps_one_position(smollm, problem):
    """The pass that scores the text is lean with the last position's logits: 0.063-0.068 GiB measured at 1,023
    tokens; the eager pass over every position takes 0.229-0.251 GiB (results/measured/peak_memory_1024_phases.log),
    and with it the whole call read 0.50-0.63 GiB (0.528 GiB in a CI run, over its 0.479 GiB estimate)."""
    from xattr_lab.methods import embedding_path

    estimate = budget.forward_bytes(budget.shape_of(smollm), N, grad=False, logit_positions=1, lean=True) / 2**30
    with smollm.restored():
        peak = _call_peak_gib(lambda: embedding_path.prepare(smollm, problem.encoding, None, "zero",
                                                             check_baseline=False))
    assert 0 < peak <= estimate <= 2 * peak, (peak, estimate)
    assert peak < budget.shape_of(smollm).logits(N) / 2**30  # under one copy of every position's logits


@pytest.mark.slow
def test_checkpointed_row_estimate_bounds_its_peak(smollm, problem):
    """Measured 0.337-0.461 GiB (committed log) and up to 0.514 GiB at 1,023 tokens; the estimate counted 0.181, 0.352,
    then 0.466 GiB (each too low for some run) and counts 0.580 GiB now."""
    from xattr_lab.methods import embedding_path

    shape = budget.shape_of(smollm)
    estimate = budget.forward_bytes(shape, N, grad=True, logit_positions=1, lean=True, checkpoint=True) / 2**30
    with smollm.restored(), smollm.lean(1, N, logit_positions=1) as checkpointed:
        assert checkpointed  # the row does not fit the limit otherwise
    with smollm.restored():
        peak = _call_peak_gib(lambda: embedding_path.scores_and_grads(smollm, problem, problem.x))
    assert 0 < peak <= estimate, (peak, estimate)
    assert estimate <= _NOT_TOO_HIGH * peak, (peak, estimate)  # and not so high that it refuses what fits


@pytest.mark.slow
def test_whole_call_estimate_bounds_its_peak(smollm, problem):
    """The whole call: its estimate is the larger of the scoring pass and the row, plus the path's tensors."""
    shape = budget.shape_of(smollm)
    text = problem.encoding.text
    total = budget.method_estimate(shape, "grad_x_input", N, **budget.pass_options(smollm), limit=1 << 30)
    assert any("checkpointed" in part for part in total.parts)
    peak = _call_peak_gib(lambda: smollm.attribute(text, method="grad_x_input"))
    assert 0 < peak <= total.total / 2**30, (peak, total.parts)
    assert total.total / 2**30 <= _NOT_TOO_HIGH * peak, (peak, total.parts)
