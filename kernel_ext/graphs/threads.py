"""CPU thread count for the GAF solver and its capture (torch), restored afterwards.

docs/ARCHITECTURE.md, section "Flows and GAF".
"""
from __future__ import annotations

import threading
from typing import Any

import torch

__all__ = ["cpu_threads"]


class cpu_threads:
    """Run CPU torch work on ``count`` threads (default 1), restored afterwards; no-op off CPU.

    Measured on the shared 2-core machine: with torch's default 2 OpenMP threads a (6, 32) solve
    took 16.4 s against 0.87 s on one thread, and a (12, 256) solve 445 s (spinning threads
    under load); most of the work is elementwise over L·n² edges, which gains little from threads.
    The same holds for the small forward/backward pass of a GAF capture (minilm-rt, 29 tokens:
    1.0–3.9 s on 2 threads under load, 0.10–0.15 s on one). Pass ``threads=k`` on an idle
    many-core machine for large n or large models.
    """

    def __init__(self, count: int | None, device: Any):
        self.count = 1 if count is None else int(count)
        self.active = torch.device(device).type == "cpu"
        self.saved: int | None = None
        self.owned = False

    def __enter__(self):
        # One solve at a time changes the count (two threads solving at once put back each
        # other's count, and MKL's count is process-wide). Another thread's solve already running on
        # `count` threads: run as it is rather than wait (no lock-order deadlock with session locks).
        if self.active and _COUNT_LOCK.acquire(blocking=False):
            self.owned = True
            self.saved = torch.get_num_threads()
            if self.saved != self.count:
                torch.set_num_threads(self.count)
        return self

    def __exit__(self, *exc):
        if not self.owned:
            return
        try:
            if torch.get_num_threads() != self.saved:
                torch.set_num_threads(self.saved)
        finally:
            self.owned = False
            _COUNT_LOCK.release()


#: held by the cpu_threads block that changed torch's thread count (re-entrant: nested blocks)
_COUNT_LOCK = threading.RLock()
