"""Peak RSS of each phase of a gradient attribution at n tokens of smollm2-135m, against the memory budget's estimate.

    XATTR_LAB_MEMORY_LIMIT=1G .venv/bin/python scripts/peak_memory_phases.py 1024 plain,score,row,call 3

Phases (the text is "word" repeated; each phase runs ``repeats`` times):
  plain  the plain eager forward pass with every position's logits (what other heads than a causal LM score with)
  score  the scoring pass of a causal LM read at its last token (methods/embedding_path.prepare: lean, one position)
  row    one forward+backward row as IG runs it (methods/embedding_path.scores_and_grads; checkpointed when the row
         does not fit the limit otherwise)
  call   the whole ``ex.attribute(text, method="grad_x_input")``

Before each phase the freed heap is handed back to the system (glibc ``malloc_trim``) and VmHWM is reset through
/proc/self/clear_refs, so "call" = peak - resident before, i.e. memory the phase itself took from the system. Without
the trim a phase can reuse what an earlier one freed and read lower (0.10-0.41 GiB for the same row): the trimmed
figure is the one an estimate must bound. Printed output: results/measured/peak_memory_1024_phases.log.
"""
import ctypes
import gc
import re
import sys
import time
from pathlib import Path

if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
    sys.exit(__doc__)

import torch

import xattr_lab as xa
from xattr_lab.core import budget
from xattr_lab.methods import embedding_path

torch.set_num_threads(2)
_LIBC = ctypes.CDLL("libc.so.6")


def resident_gib() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in GiB."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 2**20 for key in ("VmRSS", "VmHWM"))


def phase_peak_gib(call) -> float:
    """Resident memory the call added at its peak (GiB), after handing the freed heap back."""
    gc.collect()
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = resident_gib()[0]
    call()
    return resident_gib()[1] - before


def main(n: int, phases: list[str], repeats: int) -> None:
    ex = xa.load("smollm2-135m", device="cpu")
    ex.attribute("word word", method="grad_x_input")  # weights paged in
    text = " ".join(["word"] * (n - 1))
    shape, options = budget.shape_of(ex), budget.pass_options(ex)
    limit = budget.memory_limit(ex.device)[0]
    with ex.restored():
        problem = embedding_path.prepare(ex, text, None, "zero", check_baseline=False)
    m = problem.encoding.n
    checkpoint = options["checkpoint"] and limit < budget.forward_bytes(shape, m, grad=True, logit_positions=1,
                                                                       lean=True)
    print(f"n {m} limit {limit / 2**30:.2f} GiB row checkpointed {checkpoint}", flush=True)

    def plain():
        with ex.restored(), torch.no_grad():
            ex.forward(inputs_embeds=problem.x, attention_mask=problem.encoding.attention_mask)

    def score():
        with ex.restored():
            embedding_path.prepare(ex, problem.encoding, None, "zero", check_baseline=False)

    def row():
        with ex.restored():
            embedding_path.scores_and_grads(ex, problem, problem.x)

    runs = {"plain": (plain, budget.forward_bytes(shape, m, grad=False)),
            "score": (score, budget.forward_bytes(shape, m, grad=False, logit_positions=1, lean=True)),
            "row": (row, budget.forward_bytes(shape, m, grad=True, logit_positions=1, lean=True,
                                              checkpoint=checkpoint)),
            "call": (lambda: ex.attribute(text, method="grad_x_input"),
                     budget.method_estimate(shape, "grad_x_input", m, ex.name, **options, limit=limit).total)}
    for name in phases:
        call, estimate = runs[name]
        for repeat in range(repeats):
            start = time.time()
            peak = phase_peak_gib(call)
            print(f"{name} n={m} run {repeat + 1} call {peak:.3f} GiB estimate {estimate / 2**30:.3f} GiB "
                  f"wall {time.time() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]) if len(sys.argv) > 3 else 1)
