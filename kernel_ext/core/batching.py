"""Memory-aware batching: how many rows fit, chunked work that halves on out-of-memory, and the
lean passes of gradient-only methods (SDPA attention, activation checkpointing).

Used by the gradient methods (interpolated sequences) and anything that runs the model on many
rows at once (docs/ARCHITECTURE.md, section "Core"). Row sizes come from the memory budget
(:mod:`.budget`): the same estimates that refuse a computation decide how many rows a chunk holds.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import BudgetError, InputError
from . import budget
from .budget import available_bytes
from .locking import complete

if TYPE_CHECKING:  # pragma: no cover
    from .session import ModelSession

#: on CPU, chunks are kept under this many bytes: bigger ones stop paying off in speed
CPU_CHUNK_BYTES = 2 << 30


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: free device memory; CPU: the OS's available memory)."""
    return available_bytes(device)


def budget_bytes(device: Any) -> int:
    """Bytes one computation may use: the memory limit (``$XATTR_LAB_MEMORY_LIMIT``, else 75 % of
    the available memory); with the limit turned off, 75 % of the available memory."""
    limit = budget.memory_limit(device)[0]
    return int(limit) if limit is not None else int(budget.DEFAULT_FRACTION * available_memory(device))


def lean_by_default(ex: "ModelSession") -> bool:
    """Whether ``ex``'s gradient rows run lean (:func:`lean_pass`): the text methods' passes do
    (``methods/embedding_path.target_scores``), where the model has SDPA; the vision and
    encoder-decoder methods' passes are eager."""
    return ex.lean_attention != "eager" and ex.head != "seq2seq_lm" and ex.adapter.family != "vit"


def auto_batch_size(ex: "ModelSession", n: int, *, cap: int = 256, lean: bool | None = None) -> int:
    """Rows (interpolated sequences of n tokens) per forward+backward chunk, from the memory budget.

    As many rows as :func:`budget.forward_bytes` says fit in :func:`budget_bytes`, and on CPU in
    ``CPU_CHUNK_BYTES``; at most ``cap`` and at least 1 (a row that does not fit runs with
    activation checkpointing in :func:`lean_pass`). ``lean`` (default :func:`lean_by_default`): the
    rows are lean passes (no attention maps; the target read at one position for causal LMs).
    """
    shape = budget.shape_of(ex)
    limit = budget_bytes(ex.device)
    if ex.device.type != "cuda":
        limit = min(limit, CPU_CHUNK_BYTES)
    lean = lean_by_default(ex) if lean is None else lean
    keep = 1 if ex.adapter.causal and lean else None

    def fits(rows: int) -> bool:
        return budget.forward_bytes(shape, n, rows, grad=True, lean=lean, logit_positions=keep) <= limit

    return max(1, budget.largest(fits, cap))


def resolve_batch_size(ex: "ModelSession", n: int, batch_size: Any) -> int:
    """``batch_size`` checked, or for None/"auto" :func:`auto_batch_size`."""
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


# ---------------------------------------------------------------------------- lean passes
def sdpa_supported(model: nn.Module) -> bool:
    """Whether ``model`` can switch to PyTorch's fused attention per call (transformers models
    built on the attention-interface registry that support SDPA)."""
    can = getattr(model, "_can_set_attn_implementation", None)
    try:
        return bool(getattr(model, "_supports_sdpa", False)) and (can is None or bool(can()))
    except Exception:  # noqa: BLE001 - an exotic model: keep eager
        return False


def attention_implementation(model: nn.Module) -> str:
    """The attention implementation ``model`` computes with now ("eager", "sdpa", ...)."""
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


@contextlib.contextmanager
def attention(model: nn.Module, implementation: str) -> Iterator[None]:
    """Compute with ``implementation`` inside the block (``model.set_attn_implementation``), then
    put the previous one back (also on error)."""
    previous = attention_implementation(model)
    if previous == implementation:
        yield
        return
    try:
        try:
            model.set_attn_implementation(implementation)
        except (ValueError, ImportError, NotImplementedError):  # this model or config cannot: stay as it is
            pass
        yield
    finally:
        # by the state, not a flag: an interrupt between the switch and a flag would leave SDPA behind
        complete(lambda: restore_attention(model, previous))


def restore_attention(model: nn.Module, implementation: str) -> None:
    """Put ``implementation`` back if the model computes with another one (idempotent: safe to
    repeat inside :func:`locking.complete`)."""
    if attention_implementation(model) != implementation:
        model.set_attn_implementation(implementation)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (transformers' ``GradientCheckpointingLayer`` modules), outermost only."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - older transformers
        return []
    found: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and not any(module in list(b.modules()) for b in found):
            found.append(module)
    return found


@contextlib.contextmanager
def checkpointed(model: nn.Module) -> Iterator[None]:
    """Activation checkpointing per block inside the block: each block keeps only its inputs for
    the backward pass and runs its forward again there (``torch.utils.checkpoint``, non-reentrant;
    the recomputation uses the attention implementation of the first pass). Works in eval mode,
    unlike transformers' ``gradient_checkpointing_enable``. Never with a key/value cache."""
    from torch.utils.checkpoint import checkpoint

    patched = []
    for block in blocks(model):
        original = block.forward
        impl = attention_implementation(model)

        def forward(*args, _original=original, _impl=impl, **kwargs):
            def run(*inner):
                with attention(model, _impl):
                    return _original(*inner, **kwargs)

            return checkpoint(run, *args, use_reentrant=False)

        block.forward = forward
        patched.append(block)
    try:
        yield
    finally:
        for block in patched:
            del block.forward  # the class's forward again


@contextlib.contextmanager
def lean_pass(ex: "ModelSession", rows: int, n: int, *, past: int = 0,
              logit_positions: int | None = None) -> Iterator[bool]:
    """What ``ModelSession.lean`` does: the model computes with ``ex.lean_attention`` (SDPA: no
    attention maps kept) inside the block; when grad mode is on, no key/value cache is used
    (``past`` == 0) and a forward+backward pass over ``rows`` x n tokens does not fit
    :func:`budget_bytes` without it, each block is checkpointed (:func:`checkpointed`). Yields
    whether it checkpoints; ``ex.checkpointing`` says so to the forward guard meanwhile."""
    impl = ex.lean_attention
    heavy = (torch.is_grad_enabled() and past == 0 and impl != "eager" and ex.can_checkpoint
             and budget.forward_bytes(budget.shape_of(ex), n, rows, grad=True, lean=impl != "eager",
                                      logit_positions=logit_positions) > budget_bytes(ex.device))
    with ex.lock, attention(ex.model, impl), (checkpointed(ex.model) if heavy else contextlib.nullcontext()):
        previous, ex.checkpointing = ex.checkpointing, heavy
        try:
            yield heavy
        finally:
            ex.checkpointing = previous
