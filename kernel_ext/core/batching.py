"""Memory-aware batching: how many rows fit, and chunked work that halves on out-of-memory.

Used by the gradient methods (interpolated sequences) and anything that runs the model on many
rows at once (docs/ARCHITECTURE.md, section "Core").
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from ..errors import BudgetError, InputError
from .budget import available_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .session import ModelSession


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: free device memory; CPU: the OS's available memory)."""
    return available_bytes(device)


def auto_batch_size(ex: "ModelSession", n: int, *, cap: int = 256) -> int:
    """Rows (interpolated sequences of n tokens) per forward+backward chunk, from free memory.

    Estimate per row: every layer keeps ~(12 d + 2 d_ff) floats per token and ~4 H n floats of
    attention for the backward pass (float32). The budget is a quarter of free memory (at most
    2 GiB on CPU, where bigger chunks stop paying off).
    """
    config = ex.config
    d = ex.adapter.d_model
    d_ff = int(getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None)
               or getattr(config, "n_inner", None) or 4 * d)
    per_row = 4 * ex.n_layers * n * (12 * d + 2 * d_ff + 4 * ex.n_heads * n) + 4 * n * d * 4
    budget = available_memory(ex.device) // 4
    if ex.device.type != "cuda":
        budget = min(budget, 2 << 30)
    return int(max(1, min(cap, budget // max(per_row, 1))))


def resolve_batch_size(ex: "ModelSession", n: int, batch_size: Any) -> int:
    if batch_size in (None, "auto"):
        return auto_batch_size(ex, n)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
    return int(batch_size)


def run_chunked(total: int, batch_size: int, work: Callable[[int, int], None], *, bar=None) -> int:
    """Call ``work(start, stop)`` over [0, total) in chunks of at most ``batch_size`` rows.

    Out of memory in a chunk halves the chunk size (with a warning) and retries from the same
    start; a chunk of one row that still does not fit re-raises. Returns the last chunk size used.
    """
    start = 0
    while start < total:
        stop = min(total, start + batch_size)
        try:
            work(start, stop)
        except Exception as error:  # noqa: BLE001 - only memory errors are handled
            # a chunk the memory guard refused (ModelSession.restored's forward pre-hook) is halved too
            if not (is_out_of_memory(error) or isinstance(error, BudgetError)) or batch_size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size = max(1, (stop - start) // 2)
            warnings.warn(f"out of memory with {stop - start} rows per chunk; retrying with {batch_size}", RuntimeWarning, stacklevel=2)
            continue
        if bar is not None:
            bar.update(stop - start)
        start = stop
    return batch_size
