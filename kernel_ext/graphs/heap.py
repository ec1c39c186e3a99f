"""Keep the GAF solver's freed edge vectors in the process heap while it runs (glibc only).

docs/ARCHITECTURE.md, section "Flows and GAF". glibc's malloc serves every block above its mmap
threshold (at most 32 MiB, raised dynamically up to that) by a fresh mapping and unmaps it on free.
From about (6, 1,024) up, each of the solver's per-edge vectors is above 32 MiB (126 MB for the
causal (30, 1,024) edge set), so every temporary of a step faults its pages in and zeroes them
again. Measured, (6, 1,024) random capacities on one thread of this machine: 68.6 CPU-s, 42.3 of
them in the kernel (23.3M page faults); with the threshold raised for the solve 26.4 CPU-s (1.1 in
the kernel, 0.57M faults), peak RSS 2.54 GB against 2.28; no change at (12, 512), whose vectors lie
below the threshold; torch's transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``) gave 40.2
(results/measured/gaf_heap_random.txt). Hand-managed buffers would avoid the remapping too, at the
cost of rewriting each formula of the solver with ``out=`` arguments.

Threads other than the main one allocate blocks this large by mmap whatever the threshold (their
arenas are at most 64 MiB), so there this block changes nothing.
"""
from __future__ import annotations

import ctypes
import functools
import platform
import threading

__all__ = ["retained_heap", "RETAIN_ABOVE_BYTES"]

#: arrays of at least this many bytes make the solve run with the heap retained (glibc's largest
#: dynamic mmap threshold, DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
RETAIN_ABOVE_BYTES = 32 << 20
#: mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: during the solve: no block of the solver is mapped apart, and freed blocks stay in the heap
_RETAINED = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: (1 << 31) - 1}
#: after it: the values glibc's dynamic rule reaches once a 32 MiB block has been freed (what a
#: numpy/torch process reaches early; glibc has no call that reads the current values back)
_AFTER = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20}

_LOCK = threading.Lock()
_depth = 0


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc's mallopt and malloc_trim, or None on another C library or platform."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


class retained_heap:
    """Raise glibc's mmap and trim thresholds for the block when ``array_bytes`` ≥
    ``RETAIN_ABOVE_BYTES`` and the work is on CPU; afterwards set them to ``_AFTER`` and hand the
    freed heap back to the system (``malloc_trim``). Nested and concurrent blocks: the first in sets,
    the last out restores. A no-op elsewhere (small arrays, GPU, not glibc)."""

    def __init__(self, array_bytes: int, on_cpu: bool = True):
        self.active = on_cpu and array_bytes >= RETAIN_ABOVE_BYTES and _libc() is not None

    def __enter__(self):
        global _depth
        if self.active:
            with _LOCK:
                if _depth == 0:
                    _set(_RETAINED)
                _depth += 1
        return self

    def __exit__(self, *exc):
        global _depth
        if self.active:
            with _LOCK:
                _depth -= 1
                if _depth == 0:
                    _set(_AFTER)
                    _libc().malloc_trim(0)


def _set(values: dict[int, int]) -> None:
    libc = _libc()
    for parameter, value in values.items():
        libc.mallopt(parameter, ctypes.c_int(value))
