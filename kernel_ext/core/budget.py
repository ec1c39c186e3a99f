"""Memory budgets: estimate the peak memory of a computation before it runs, and refuse it
clearly (:class:`~xattr_lab.errors.BudgetError`) when it would not fit, or say how many rows do.

docs/ARCHITECTURE.md, section "Core". Estimates come from the model's shape (L layers, H heads,
d_model, d_ff, vocabulary) and the token count n; they were fitted on smollm2-135m (CPU, float32)
at n = 254, 510 and 1,022 tokens, and err on the high side (by up to ~30%):

- attention maps: A = L·H·n²·4 bytes per row. Eager attention keeps one map per layer for the
  backward pass, plus transients: a forward+backward row costs ~1.5·A + L·n·(8·d + 5·d_ff)·4.
- lean passes (IG, SIG, grad x input: ``batching.lean_pass``): SDPA keeps no map; a row costs
  L·n·(10·d + 6·d_ff)·4 (smollm2 at 1,023 tokens: 16 % over the measured peak), or checkpointed
  (when that is what fits) the layers' inputs L·n·d·4 plus eight layers' activations (the recomputed
  one, the backward's gradients and the allocator's retention; smollm2 at 1,023 tokens: 0.580 GiB
  counted, 0.337-0.514 GiB measured; tests/core/test_budget_checkpointed.py, test_budget_peak.py).
- ``capture``: logits (n·V·4 for language models) + 2.2·A; with attention gradients, the
  forward+backward row + 3·A (the gradients and the stacked copies) + twice the logits.
- flow arrays (GAF, rollout, attention flow): float64 copies of the maps (6·A), and for GAF the
  barrier solver's ~32 arrays of L·n² float64 (measured 28-31 on random capacities).
- SAE training: the head outputs, codes and Adam state (small next to the above).

Texts are checked here too (:func:`check_text`): what a text may contain before it is tokenised.

The limit is ``$XATTR_LAB_MEMORY_LIMIT`` (bytes, or with a unit: ``8G``, ``512M``; ``0`` or
``off`` turns the checks off), else 75% of the memory available when the check runs (CPU: the
operating system's available memory; CUDA: the device's free memory).
"""
from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BudgetError, InputError, InputTypeError

ENV = "XATTR_LAB_MEMORY_LIMIT"
#: fraction of the available memory one computation may use when ``$XATTR_LAB_MEMORY_LIMIT`` is unset
DEFAULT_FRACTION = 0.75
#: fixed bytes a lean (SDPA) pass allocates besides its tensors: autograd and kernel workspace
LEAN_WORKSPACE = 8 << 20  # measured ~2.5 MiB over the tensors on a tiny Llama at 1,024 tokens
#: a checkpointed row holds this many layers' activations more than the recomputed one (the backward's gradients
#: and the allocator's retention over 2 x L layer passes): fitted to bound the measured peak (_lean_bytes)
CHECKPOINT_EXTRA_LAYERS = 7
#: float64 arrays over the layered graph's edges that the GAF solver holds at its peak (process baseline included):
#: peak RSS / (L·n²·8 bytes) was 36.9 at (30, 511) on smollm2-135m capacities and 37.3 at (30, 1,024) random ones
#: (results/measured/bench_gaf_smollm2_512_solve.log, bench_gaf_random_30x1024.log)
FLOW_SOLVER_ARRAYS = 38
#: the same while glibc keeps the solver's freed arrays in its heap (graphs.heap: no page faults for
#: each temporary, 2.5x less CPU at (6, 1,024), more resident memory), which the flow methods use
#: when it fits the limit: peak RSS / (L·n²·8 bytes), process baseline left out, was 56.6 at
#: (6, 1,024) random (results/measured/gaf_heap_random.txt)
FLOW_SOLVER_ARRAYS_RETAINED = 58
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


@dataclass(frozen=True)
class Shape:
    """What memory estimates need of a model."""

    layers: int
    heads: int
    d_model: int
    d_ff: int
    vocab: int  # logits per position (the vocabulary for language models, the classes otherwise)

    def attention(self, n: int, keys: int | None = None, rows: int = 1) -> int:
        """Bytes of every layer's attention maps (float32) for ``rows`` rows of n queries."""
        return 4 * self.layers * self.heads * n * (n if keys is None else keys) * rows

    def activations(self, n: int, rows: int = 1) -> int:
        """Bytes a forward+backward pass keeps per layer besides the attention maps."""
        return 4 * self.layers * n * (8 * self.d_model + 5 * self.d_ff) * rows

    def logits(self, n: int, rows: int = 1) -> int:
        return 4 * n * self.vocab * rows

    def flow_arrays(self, n: int) -> int:
        """One float64 array over the edges of the layered graph: L·n²·8 bytes."""
        return 8 * self.layers * n * n


def shape_of(session: Any) -> Shape:
    """The :class:`Shape` of a :class:`~xattr_lab.core.session.ModelSession`."""
    config = session.config
    d = int(session.adapter.d_model)
    d_ff = int(getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None)
               or getattr(config, "n_inner", None) or 4 * d)
    vocab = int(config.vocab_size) if session.head != "classifier" else max(int(config.num_labels), 1)
    return Shape(int(session.n_layers), int(session.n_heads), d, d_ff, vocab)


@dataclass
class Estimate:
    """Peak bytes of one computation, by part. ``what``: "GAF on smollm2-135m at 8,192 tokens";
    ``lower``: what the user can change to lower it."""

    what: str
    parts: dict[str, int] = field(default_factory=dict)
    lower: str = "use a shorter text"

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))


def forward_bytes(shape: Shape, n: int, rows: int = 1, *, grad: bool, attentions: bool = False,
                  logit_positions: int | None = None, past: int = 0, lean: bool = False,
                  checkpoint: bool = False) -> int:
    """One forward pass over ``rows`` rows of n tokens (after ``past`` cached ones), with the
    backward pass's saved tensors when ``grad``; ``attentions``: every map is returned.

    ``lean``: fused attention (SDPA), which keeps no n x n map (only its output and one log-sum-exp
    per query and head); ``checkpoint``: with ``lean`` and ``grad``, each layer keeps only its input
    (L·n·d floats) and one layer's activations exist at a time (batching.checkpointed).
    """
    keys = n + past
    logits = shape.logits(n if logit_positions is None else logit_positions, rows)
    kept = shape.attention(n, keys, rows) if attentions else 0
    if lean and not attentions:
        return logits * (2 if grad else 1) + _lean_bytes(shape, n, rows, keys, grad=grad, checkpoint=checkpoint)
    if not grad:
        transient = 3 * shape.attention(n, keys, rows) // max(shape.layers, 1)
        return logits + kept + transient + 2 * 4 * n * (4 * shape.d_model + shape.d_ff) * rows
    return 2 * logits + kept + int(1.5 * shape.attention(n, keys, rows)) + shape.activations(n, rows)


def _lean_bytes(shape: Shape, n: int, rows: int, keys: int, *, grad: bool, checkpoint: bool) -> int:
    """A lean pass's bytes besides the logits: without ``grad``, a few (rows, n, d_ff)-sized
    transients, one layer's (rows, H, n, keys) scores (SDPA on CPU with a mask computes them, one
    layer at a time) and the kernels' workspace; with it, every layer's saved activations, or with
    ``checkpoint`` the layers' inputs plus one layer's activations and the gradient flowing back.
    Per token and layer ~(10 d + 6 d_ff) floats: measured 12,600 on smollm2 (d = 576, d_ff = 1,536)
    at 1,023 tokens, i.e. ~16 % under this; tiny models add ~8 MiB of fixed workspace. Without
    ``grad`` (a causal LM's scoring pass) smollm2 at 1,023 tokens measured 0.063-0.068 GiB against
    0.084 counted (results/measured/peak_memory_1024_phases.log). Checkpointed, the peak resident memory held
    ``CHECKPOINT_EXTRA_LAYERS`` layers' activations more than the inputs plus one layer: smollm2 at
    1,023 tokens measured 0.337-0.461 GiB in three runs (results/measured/peak_memory_1024_phases.log;
    the allocator's retention varies: up to 0.514 GiB in other runs, and a CI run's whole call read
    0.528 GiB when the scoring pass still kept every position's logits); 7 extra layers count
    0.580 GiB. Capped at L - 2 extra layers, so a checkpointed row never
    counts more than an un-checkpointed one."""
    transient = 4 * 4 * rows * n * (2 * shape.d_model + shape.d_ff) + LEAN_WORKSPACE
    layer = 4 * rows * n * (10 * shape.d_model + 6 * shape.d_ff)  # one layer's saved activations
    if not grad:
        return transient + shape.attention(n, keys, rows) // max(shape.layers, 1)
    if not checkpoint:
        return shape.layers * layer + transient
    extra = min(CHECKPOINT_EXTRA_LAYERS, max(shape.layers - 2, 0)) * layer  # never more than un-checkpointed
    return 4 * rows * n * shape.d_model * (shape.layers + 4) + layer + extra + transient


def capture_parts(shape: Shape, n: int, *, attention_grads: bool = False, hidden_states: bool = False,
                  head_outputs: bool = False) -> dict[str, int]:
    """What :func:`xattr_lab.core.capture.capture` holds at its peak, by part."""
    A = shape.attention(n)
    if attention_grads:
        parts = {"forward and backward pass": forward_bytes(shape, n, grad=True),
                 "attention maps and their gradients": 3 * A}
    else:
        parts = {"forward pass": shape.logits(n), "attention maps": int(2.2 * A)}
    if hidden_states:
        parts["hidden states"] = 2 * 4 * (shape.layers + 1) * n * shape.d_model
    if head_outputs:
        parts["per-head outputs"] = 2 * 4 * shape.layers * shape.heads * n * shape.d_model
    return parts


def pass_options(session: Any) -> dict[str, bool]:
    """How ``session``'s passes run, as :func:`method_estimate` takes them: ``lean`` (SDPA: no
    attention maps), ``checkpoint`` (its blocks can be checkpointed), ``last_token`` (a causal LM,
    whose target is read at the last token: the pass that scores the text is lean and keeps one
    position's logits, methods/embedding_path.prepare)."""
    return {"lean": session.lean_attention != "eager", "checkpoint": session.can_checkpoint,
            "last_token": session.head == "causal_lm"}


def method_estimate(shape: Shape, method: str, n: int, name: str = "", options: dict | None = None, *,
                    lean: bool = False, checkpoint: bool = False, last_token: bool = False,
                    limit: int | None = None) -> Estimate:
    """Peak memory of ``Explainer.attribute/flow/heads`` with ``method`` on a text of n tokens.

    Gradient methods are counted at one row per chunk (the least they can run with): with
    ``lean`` (the model has SDPA) its pass keeps no attention map, with ``checkpoint`` (the
    model's blocks can be checkpointed) it keeps one layer's activations; the pass that scores the
    text runs before the rows (eager with every position's logits, or with ``lean`` and
    ``last_token`` lean with the last position's), so the peak is the larger of the two plus the
    path's tensors. With ``limit`` (bytes), the row is counted as it will run (batching.lean_pass):
    checkpointed only when it does not fit otherwise.
    ``circuit`` is estimated by :func:`circuit_estimate`.
    """
    options = options or {}
    at = f"{method} on {name or 'the model'} at {n:,} tokens"
    A = shape.attention(n)
    if method in ("ig", "sig", "grad_x_input"):
        plain = (forward_bytes(shape, n, grad=False, logit_positions=1, lean=True) if lean and last_token
                 else forward_bytes(shape, n, grad=False))
        checkpoint = lean and checkpoint and (limit is None or limit < forward_bytes(
            shape, n, grad=True, logit_positions=1, lean=True))
        row = forward_bytes(shape, n, grad=True, logit_positions=1, lean=lean, checkpoint=checkpoint)
        how = (" (SDPA, checkpointed)" if checkpoint else " (SDPA)") if lean else ""
        parts = {"the plain forward pass": plain} if plain > row else {f"one row's forward and backward pass{how}": row}
        parts["text, baseline and gradient tensors"] = 4 * 6 * n * shape.d_model
        return Estimate(at, parts)
    grads = method in ("gaf", "flow") and options.get("info", "agf") != "af"
    parts = capture_parts(shape, n, attention_grads=grads, hidden_states=method == "heads")
    if method in ("attention_flow", "heads"):
        parts["float64 copies of the attention maps"] = 6 * A
    if method == "rollout":  # the maps are turned into float64 capacities one layer at a time
        parts["the capacities and rollout's products (~4 x L·n² float64)"] = 4 * shape.flow_arrays(n)
    if method in ("gaf", "flow"):
        # the capture is freed before the solver runs: the peak is the larger of the two phases
        parts["the capacities (L·n² float64)"] = shape.flow_arrays(n)
        arrays = FLOW_SOLVER_ARRAYS_RETAINED if flow_heap_retained(shape, n, limit) else FLOW_SOLVER_ARRAYS
        solver = {"the capacities (L·n² float64)": shape.flow_arrays(n),
                  f"flow solver arrays (~{arrays} x L·n² float64)": arrays * shape.flow_arrays(n)}
        if sum(solver.values()) > sum(parts.values()):
            parts = solver
    return Estimate(at, parts)


def flow_heap_retained(shape: Shape, n: int, limit: int | None) -> bool:
    """Whether the GAF solver keeps its freed arrays in the heap at n tokens (faster, more memory):
    when the solver's estimate with them fits ``limit`` (bytes; None: no limit). Otherwise it runs
    with glibc's default, in ``FLOW_SOLVER_ARRAYS`` instead of ``FLOW_SOLVER_ARRAYS_RETAINED``."""
    return limit is None or (FLOW_SOLVER_ARRAYS_RETAINED + 1) * shape.flow_arrays(n) <= limit


def circuit_estimate(shape: Shape, rows: int, n: int, features: int, name: str = "") -> Estimate:
    """Peak memory of ``Explainer.circuit`` over ``rows`` prompts of at most n tokens (one batch of
    one prompt at a time at least) with an SAE of ``features`` features."""
    vectors = rows * shape.layers * shape.heads
    parts = {"one prompt's forward pass": forward_bytes(shape, n, grad=False),
             "head outputs": 2 * 4 * vectors * shape.d_model,
             "SAE activations and gradients": 3 * 4 * vectors * features,
             "SAE weights and Adam state": 4 * 4 * 2 * shape.d_model * features}
    return Estimate(f"circuit on {name or 'the model'} over {rows:,} prompts of up to {n:,} tokens", parts,
                    lower="use fewer or shorter prompts (examples=), or fewer SAE features (features=)")


# ---------------------------------------------------------------------------- the limit
def parse_bytes(text: str) -> int | None:
    """``"8G"`` -> 8 GiB, ``"512MB"``, ``"2e9"``; ``"0"``, ``"off"``, ``"none"`` -> None (no limit)."""
    value = str(text).strip().lower()
    if value in ("", "0", "off", "none", "no"):
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)", value)
    if not match or match.group(2) not in _UNITS:
        raise InputError(f"{ENV}={text!r} is not a size: give bytes or a number with a unit, e.g. 8G or 512M")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def available_bytes(device: Any = None) -> int:
    """Free memory on ``device`` (CUDA: the device's free memory; else the OS's available memory)."""
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with jupyter
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return 4 << 30  # pragma: no cover


def memory_limit(device: Any = None) -> tuple[int | None, str]:
    """(bytes one computation may use or None for no limit, where that number comes from)."""
    configured = os.environ.get(ENV)
    if configured is not None:
        limit = parse_bytes(configured)
        return limit, f"{ENV}={configured}" if limit is not None else f"{ENV}={configured} (off)"
    free = available_bytes(device)
    return int(DEFAULT_FRACTION * free), f"{DEFAULT_FRACTION:.0%} of the {_size(free)} available now"


def _size(n: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def largest(fits: Callable[[int], bool], high: int) -> int:
    """The largest k in [0, high] with ``fits(k)`` (``fits`` is monotone: true up to some k)."""
    lo, hi = 0, max(int(high), 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def check(estimate: Estimate, device: Any = None, *, tokens_that_fit: Callable[[int], int] | None = None,
          limit: int | None = None) -> None:
    """Raise :class:`BudgetError` when ``estimate`` is over the limit: the estimate and its biggest
    parts, the limit and where it comes from, and what lowers it (``tokens_that_fit(limit)``, when
    given, adds how many tokens would fit)."""
    source = "the limit given"
    if limit is None:
        limit, source = memory_limit(device)
        if limit is None:
            return
    total = estimate.total
    if total <= limit:
        return
    parts = sorted(estimate.parts.items(), key=lambda kv: -kv[1])
    listing = ", ".join(f"{name} {_size(size)}" for name, size in parts if size >= 0.05 * total)
    hint = estimate.lower
    if tokens_that_fit is not None:
        fit = tokens_that_fit(limit)
        hint = f"{hint} (at most {fit:,} tokens fit)" if fit > 0 else "no text of any length fits this limit"
    message = (f"{estimate.what} needs about {_size(total)} of memory ({listing}), over the limit of "
               f"{_size(limit)} ({source}). To run it, {hint}; or set {ENV} (e.g. {ENV}=32G) if more memory "
               "is really free.")
    error = BudgetError(message)
    error.estimate, error.limit, error.option = total, limit, hint
    raise error


def check_method(session: Any, method: str, n: int, options: dict | None = None) -> None:
    """:func:`check` for ``method`` (a registry name) on a text of n tokens of ``session``'s model,
    saying how many tokens would fit. What the Explainer's verbs, ``methods/flows.py`` and
    ``methods/integration.py`` call before they compute."""
    shape = shape_of(session)
    lean = pass_options(session)
    limit = memory_limit(session.device)[0]

    def tokens_that_fit(limit: int) -> int:
        return largest(lambda k: method_estimate(shape, method, k, session.name, options, **lean,
                                                 limit=limit).total <= limit, n)

    check(method_estimate(shape, method, n, session.name, options, **lean, limit=limit), session.device,
          tokens_that_fit=tokens_that_fit)


def check_forward(session: Any, args: tuple, kwargs: dict) -> None:
    """:func:`check` for one forward pass of ``session``'s model called with ``args``/``kwargs``
    (rows, tokens, cached tokens, grad mode, returned maps): the model's forward pre-hook inside
    ``ModelSession.restored()``, so even a direct ``model(...)`` call there is guarded."""
    import torch

    x = kwargs.get("inputs_embeds")
    x = kwargs.get("input_ids", args[0] if args else None) if x is None else x
    if x is None or x.dim() < 2:
        return
    rows, n = int(x.shape[0]), int(x.shape[1])
    past = kwargs.get("past_key_values")
    keep = kwargs.get("logits_to_keep")
    grad = torch.is_grad_enabled()
    need = forward_bytes(shape_of(session), n, rows, grad=grad, attentions=bool(kwargs.get("output_attentions")),
                         logit_positions=keep if isinstance(keep, int) and keep > 0 else None,
                         past=int(past.get_seq_length()) if hasattr(past, "get_seq_length") else 0,
                         lean=session.attention_implementation != "eager", checkpoint=session.checkpointing)
    what = f"a forward{' and backward' if grad else ''} pass over {rows:,} row(s) of {n:,} tokens on {session.name}"
    check(Estimate(what, {"the pass": need}, "lower batch_size" if rows > 1 else "use a shorter text"), session.device)


# ---------------------------------------------------------------------------- texts
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def check_text(text: Any, what: str = "the text") -> str:
    """``text`` if it can be explained; an :class:`InputError` naming the first character that cannot.

    Refused: not a string (:class:`InputTypeError`); empty or whitespace only; invisible control
    characters (C0/C1 controls other than tab, newline and carriage return — tokenizers drop them
    silently, gluing words together; U+0085 NEXT LINE is one); lone surrogates (not characters).
    Bidi marks, embeddings, overrides and isolates (U+200E, U+200F, U+061C, U+202A-E, U+2066-9) are
    accepted: they are ordinary in Hebrew, Arabic and Persian text. The views keep the display honest
    instead: each token is drawn isolated, with those characters as visible escapes (xattr_lab.widgets.core).
    """
    if not isinstance(text, str):
        raise InputTypeError(f"{what} must be a str, not {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{what} is empty: give at least one word to explain")
    for position, char in enumerate(text):
        code = ord(char)
        if code >= 0x20 and not 0x7F <= code <= 0x9F and not 0xD800 <= code <= 0xDFFF:
            continue
        if char in _ALLOWED_CONTROLS:
            continue
        surrogate = 0xD800 <= code <= 0xDFFF
        name = unicodedata.name(char, "lone surrogate" if surrogate else "control character")
        kind = "a lone surrogate (half of a UTF-16 pair, not a character: the text was decoded wrongly)" if surrogate \
            else "an invisible control character"
        raise InputError(f"{what} contains U+{code:04X} ({name}) at character {position}, {kind}; "
                         "remove it or replace it with a space")
    return text
