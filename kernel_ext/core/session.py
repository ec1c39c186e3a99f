"""`ModelSession`: a model, its tokenizer and a device, with the state a computation borrows.

The methods layer works on a ``ModelSession``; the public :class:`xattr_lab.Explainer` (in
``xattr_lab.explainer``) is a ``ModelSession`` with the user-facing verbs on top.

Everything the model is changed for (eval mode, ``requires_grad`` off, forward hooks, torch's
grad mode and thread count) is undone when a call returns, raises, or is interrupted, also inside
the clean-up (:meth:`ModelSession.restored`). One :meth:`ModelSession.capture` call runs one
forward (and optional backward) pass (:mod:`xattr_lab.core.capture`). One session serialises its
work: a re-entrant lock is held by every ``restored()`` block, ``forward`` and ``encode``, so
widget callbacks, the magic and user code may share one Explainer; each block sees only its hooks.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from ..errors import InputError
from . import batching, budget
from .adapters import detect_adapter, head_kind
from .inputs import input_kind
from .devices import device_summary, ensure_eager_attention, input_device, is_dispatched, resolve_device  # noqa: F401
from .locking import complete
from .encoding import Encoding
from .targets import CAUSAL_LM, CLASSIFIER, Target, resolve_target

if TYPE_CHECKING:  # pragma: no cover
    from .capture import Capture


@dataclass
class _SavedState:
    """What one ``restored()`` block changed, to be put back (each step safe to repeat)."""

    training: list[tuple[nn.Module, bool]]
    requires_grad: list[tuple[nn.Parameter, bool]]
    grad_enabled: bool
    threads: int  # torch's thread count: per thread (OpenMP), like grad mode
    thread: int
    entry: Any  # the frame that opened the block: blocks opened below it are nested in it
    attention: str = "eager"  # the model's attention implementation (lean passes switch it to SDPA)
    hooks: list[Any] = field(default_factory=list)
    generator: Any = None  # weak reference to the block's generator, to close it if it is left suspended
    done: bool = False


def _remove_hooks(state: _SavedState, keep: int) -> None:
    """Remove the hooks of ``state`` added after the first ``keep`` (repeatable)."""
    while len(state.hooks) > keep:
        state.hooks[-1].remove()
        state.hooks.pop()


def _on_stack(frame) -> bool:
    """Whether ``frame`` is executing in the current thread (is the caller or one of its callers)."""
    current = sys._getframe(1)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


class ModelSession:
    """A model, its tokenizer and a device: encode, forward, capture, and borrow-and-restore state.

    ``head`` is "classifier", "causal_lm" or "masked_lm"; ``adapter`` knows the head layout;
    ``input_kind`` (:mod:`.inputs`: text, encoder-decoder, image) picks the input adapter, once.
    """

    def __init__(self, model: nn.Module, tokenizer, device: Any = "auto", name: str = ""):
        ensure_eager_attention(model)
        if is_dispatched(model):  # a device map placed (or offloaded) its modules: never move them
            if device not in (None, "auto"):
                raise InputError(f"this model is spread over devices by a device map ({device_summary(model)}); "
                                 f"device={device!r} would move it whole: leave device='auto'")
            self.device = input_device(model)
            self.model = model
        else:
            self.device = resolve_device(device)
            self.model = model.to(self.device)
        self.model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.head, self.input_kind = head_kind(model), input_kind(model)
        self.adapter = detect_adapter(model)
        self._state: _SavedState | None = None
        self._lock = threading.RLock()
        self.max_length = self._max_positions()

    # ------------------------------------------------------------------ basics
    @property
    def config(self):
        return self.model.config

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (its input embeddings'): float32, bfloat16, float16."""
        return self.model.get_input_embeddings().weight.dtype

    def cast(self, embeds: torch.Tensor) -> torch.Tensor:
        """Embeddings as the model takes them (its dtype). Methods keep their paths in float32 and
        cast at the model's input; gradients flow back through the cast in float32."""
        return embeds if embeds.dtype == self.dtype else embeds.to(self.dtype)

    @property
    def sliding_window(self) -> int | None:
        """The attention window of models whose layers (some or all) attend only to the last tokens
        (Mistral, Gemma 2/3, ModernBERT's local layers), or None."""
        config = self.config
        window = getattr(config, "sliding_window", None) or getattr(config, "local_attention", None)
        if not window or getattr(config, "use_sliding_window", True) is False:
            return None
        return int(window)

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def n_heads(self) -> int:
        return self.adapter.n_heads

    @property
    def labels(self) -> list[str]:
        if self.head != CLASSIFIER:
            return []
        id2label = self.config.id2label or {}
        return [str(id2label.get(i, i)) for i in range(self.config.num_labels)]

    checkpointing = False  # True inside a lean() block that checkpoints activations (the forward guard reads it)

    @property
    def attention_implementation(self) -> str:
        """The model's attention now: "eager" (maps readable) or, inside :meth:`lean`, "sdpa"."""
        return batching.attention_implementation(self.model)

    @property
    def lean_attention(self) -> str:
        """The attention of passes that need no maps: "sdpa" where the model has it, else "eager"."""
        return "sdpa" if batching.sdpa_supported(self.model) else "eager"

    @property
    def can_checkpoint(self) -> bool:
        return bool(batching.blocks(self.model))

    def lean(self, rows: int, n: int, *, past: int = 0, logit_positions: int | None = None):
        """Context for passes that need no attention maps (gradients, scores): SDPA, and checkpointing
        when ``rows`` x n tokens would not fit otherwise (:func:`batching.lean_pass`); yields whether it checkpoints."""
        return batching.lean_pass(self, rows, n, past=past, logit_positions=logit_positions)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, {self.head}, {self.adapter.family}: L={self.n_layers}, "
            f"H={self.n_heads}, d={self.adapter.d_model}, device={self.device})"
        )

    def _max_positions(self) -> int | None:
        for attr in ("max_position_embeddings", "n_positions"):
            value = getattr(self.config, attr, None)
            if value:
                # RoBERTa reserves padding_idx + 1 position ids.
                offset = 2 if self.config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
                return int(value) - offset
        return None

    # ------------------------------------------------------------------ state
    @property
    def lock(self) -> threading.RLock:
        """The session's re-entrant lock (held by ``restored()``, ``forward`` and ``encode``)."""
        return self._lock

    def restored(self) -> contextlib.AbstractContextManager[_SavedState]:
        """Run a block with the model in eval mode and no parameter gradients, then restore.

        Holds the session's lock for the whole block. On exit, also on error or interrupt, every
        module's train/eval mode, each parameter's ``requires_grad``, torch's grad mode and thread
        count are put back and every hook added through :meth:`add_hook` is removed. An interrupt
        inside that clean-up restarts it and is raised when it is done; a block left without its
        clean-up (an interrupt between the ``with`` and it) is cleaned up by the session's next
        block. Re-entrant: a block opened inside another one (same thread) is part of it, and removes
        the hooks it added when it exits.
        """
        holder: list = []
        manager = self._restored(holder)
        holder.append(weakref.ref(manager.gen))
        return manager

    @contextlib.contextmanager
    def _restored(self, holder: list) -> Iterator[_SavedState]:
        outer = self._state
        if outer is not None and not outer.done and outer.thread == threading.get_ident() and _on_stack(outer.entry):
            mark = len(outer.hooks)  # nested: the outer block restores the rest; this one removes its hooks
            try:
                try:
                    yield outer
                finally:
                    complete(lambda: _remove_hooks(outer, mark))
            except KeyboardInterrupt:  # it landed before the clean-up's own retries began: finish it
                complete(lambda: _remove_hooks(outer, mark))
                raise
            return
        with self._lock:
            self._heal()
            state = _SavedState(
                training=[(m, m.training) for m in self.model.modules()],
                requires_grad=[(p, p.requires_grad) for p in self.model.parameters()],
                grad_enabled=torch.is_grad_enabled(), threads=torch.get_num_threads(), thread=threading.get_ident(),
                entry=sys._getframe(2), generator=holder[0] if holder else None,
                attention=batching.attention_implementation(self.model))
            try:
                try:
                    self._state = state
                    self.model.eval()
                    for p, _ in state.requires_grad:
                        p.requires_grad_(False)
                    self.add_hook(self.model, lambda module, args, kwargs: budget.check_forward(self, args, kwargs),
                                  pre=True, with_kwargs=True)  # refuses a pass that would not fit in memory
                    yield state
                finally:
                    complete(lambda: self._give_back(state))
            except KeyboardInterrupt:  # it landed before the clean-up's own retries began: finish it
                complete(lambda: self._give_back(state))
                raise

    def _give_back(self, state: _SavedState) -> None:
        """Undo what ``state``'s block changed. Every step can be repeated (see ``locking.complete``)."""
        if state.done:
            return
        _remove_hooks(state, 0)
        for p, flag in state.requires_grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        for module, flag in state.training:
            module.training = flag
        batching.restore_attention(self.model, state.attention)
        if state.thread == threading.get_ident():  # grad mode and torch's thread count are per thread
            torch.set_grad_enabled(state.grad_enabled)
            if torch.get_num_threads() != state.threads:
                torch.set_num_threads(state.threads)
        if self._state is state:
            self._state = None
        state.done = True

    def _heal(self) -> None:
        """Clean up a block that ended without its clean-up (its generator left suspended)."""
        stale = self._state
        if stale is None or stale.done:
            self._state = None
            return
        complete(lambda: self._give_back(stale))
        generator = stale.generator() if stale.generator is not None else None
        if generator is not None and stale.thread == threading.get_ident():
            try:
                generator.close()  # ends its `with self._lock`, so other threads are not locked out
            except (RuntimeError, ValueError):  # pragma: no cover - already running or closed
                pass

    def add_hook(self, module: nn.Module, fn, *, pre: bool = False, with_kwargs: bool = False):
        """Register a forward (pre-)hook that :meth:`restored` removes on exit."""
        state = self._state
        if state is None or state.done or state.thread != threading.get_ident():
            raise RuntimeError("add_hook must be called inside `with explainer.restored():`")
        if pre:
            handle = module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
        else:
            handle = module.register_forward_hook(fn, with_kwargs=with_kwargs)
        state.hooks.append(handle)
        return handle

    def fingerprint(self) -> str:
        """Identifies this model and its current weights (changes when a parameter is modified in
        place): a key for caches of results."""
        params = list(self.model.parameters())
        versions = sum(int(p._version) for p in params)  # bumped by every in-place change
        storage = sum(p.data_ptr() for p in params) % (1 << 61)  # changed when .data is replaced
        return f"{self.name}:{type(self.model).__name__}:{id(self.model):x}:{len(params)}:{versions}:{storage:x}"

    # ------------------------------------------------------------------ text
    def encode(self, text: str, *, truncate: bool = False) -> Encoding:
        """Tokenise one text (special tokens added as the model expects).

        Raises on empty text, control characters and lone surrogates (:func:`budget.check_text`). Too
        long a text raises unless ``truncate=True``, which keeps the first tokens and warns.
        """
        budget.check_text(text)
        with self._lock:  # fast tokenizers are not thread-safe ("Already borrowed")
            return self._encode(text, truncate)

    def _encode(self, text: str, truncate: bool) -> Encoding:
        full = self.tokenizer(text, return_tensors="pt", truncation=False, return_special_tokens_mask=True)
        input_ids = full["input_ids"]
        truncated = 0
        limit = self.max_length
        if limit is not None and input_ids.shape[1] > limit:
            if not truncate:
                raise InputError(
                    f"the text is {input_ids.shape[1]} tokens long; {self.name} takes at most {limit}. "
                    "Shorten it, or pass truncate=True to keep the first tokens."
                )
            truncated = input_ids.shape[1] - limit
            full = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=limit,
                                  return_special_tokens_mask=True)
            input_ids = full["input_ids"]
            warnings.warn(f"text truncated to {limit} tokens: the last {truncated} tokens were dropped", stacklevel=3)
        ids = input_ids[0].tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        # Special = added by the tokenizer ([CLS], [SEP], BOS...). "[MASK]" or "[UNK]" typed inside the
        # text is the user's word and is explained like any other.
        if "special_tokens_mask" in full:
            special = [bool(flag) for flag in full["special_tokens_mask"][0].tolist()]
        else:  # tokenizers that cannot say: fall back to the special-token ids
            special_ids = set(self.tokenizer.all_special_ids)
            special = [i in special_ids for i in ids]
        mask = full.get("attention_mask", torch.ones_like(input_ids))
        return Encoding(text, input_ids.to(self.device), mask.to(self.device), tokens, special, truncated)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings (B, n) -> (B, n, d); position/type embeddings are added by the model."""
        return self.model.get_input_embeddings()(input_ids)

    def readout_position(self, encoding: Encoding) -> int | None:
        """Where the target is read: None for classifiers, the last token (causal), the [MASK] (masked)."""
        if self.head == CLASSIFIER:
            return None
        if self.head == CAUSAL_LM:
            return encoding.n - 1
        mask_id = self.tokenizer.mask_token_id
        ids = encoding.input_ids[0].tolist()
        if mask_id is None or mask_id not in ids:
            raise InputError(f"a masked LM explains the prediction at a {self.tokenizer.mask_token} token: put one in the text")
        return ids.index(mask_id)

    def source_position(self, encoding: Encoding) -> int:
        """The token whose final representation the model reads out: [CLS]/first, or last for causal models."""
        position = self.readout_position(encoding)
        if position is not None:
            return position
        return encoding.n - 1 if self.adapter.causal else 0

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        *,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ):
        """Model forward from ids or word embeddings (B, n, d). Returns the HF output object."""
        kwargs: dict[str, Any] = {"attention_mask": attention_mask}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = self.cast(inputs_embeds)
        else:
            kwargs["input_ids"] = input_ids
        if output_attentions:
            kwargs["output_attentions"] = True
        if output_hidden_states:
            kwargs["output_hidden_states"] = True
        if self.adapter.causal or self.head != CLASSIFIER:
            kwargs["use_cache"] = False
        with self._lock:
            out = self.model(**kwargs)
        if out.logits.dtype != torch.float32:  # half-precision models: targets are scored in float32
            out.logits = out.logits.float()
        return out

    def target_logits(self, logits: torch.Tensor, position: int | None) -> torch.Tensor:
        """Logits of the first row that the target reads: (C,) or (V,) at ``position``."""
        return logits[0] if position is None else logits[0, position]

    def resolve_target(self, target: Any, logits: torch.Tensor, position: int | None) -> Target:
        return resolve_target(
            target, head=self.head, logits=logits, model_config=self.config, tokenizer=self.tokenizer, position=position
        )

    def prediction(self, logits: torch.Tensor, top: int = 5) -> dict[str, float]:
        """label -> probability (all classes), or the top next tokens for language models."""
        probs = torch.softmax(logits.detach().float(), dim=-1)
        if self.head == CLASSIFIER:
            return {label: float(p) for label, p in zip(self.labels, probs.tolist())}
        values, indices = torch.topk(probs, min(top, probs.numel()))
        with self._lock:
            return {self.tokenizer.decode([int(i)]): float(v) for v, i in zip(values, indices)}

    def capture(self, text: "str | Encoding", target: Any = None, **options: Any) -> "Capture":
        """One forward (and, with ``attention_grads``, backward) pass over one text: :func:`.capture.capture`."""
        from .capture import capture

        return capture(self, text, target, **options)
