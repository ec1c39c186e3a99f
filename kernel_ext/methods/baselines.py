"""Baseline tokens that are not degenerate (docs/ARCHITECTURE.md, section "Gradients").

A baseline row x' that is (near) zero is degenerate on a model whose first operation on the word
embeddings is scale-invariant (RMSNorm or LayerNorm straight on the embeddings, no position
embedding added first: Llama, Mistral, Qwen, SmolLM, GPT-NeoX, Falcon, BLOOM). Along the straight
path x' + a (x - x') = a x the normalised input is the same for every a > 0, so the score only
moves inside a sliver near a = 0 of width about sqrt(eps) / rms(x): IG and SIG from there measure
"token present vs an all-zero vector the model never sees", and a fixed quadrature misses the
jump (tiny random Llama, zero [PAD] row, 50 nodes: completeness error 11 %).

Rules (:func:`choose_baseline`):

- "near zero": the row's L2 norm is under ``ZERO_ROW`` (1 %) of the median norm of the text's
  word embeddings (the normalised path then turns through most of its angle for a < 0.01).
- "scale-invariant first operation": probed once per model (:func:`norm_first`) by one forward
  pass with hooks. The first leaf module that receives the word embeddings themselves (leaves
  whose output does not depend on them, like rotary tables, and identities, like dropout in eval,
  are passed over) is called on 2 x and 4 x; it is scale-invariant when the outputs equal its
  output on x within 1 %. BERT, GPT-2 and OPT add position embeddings first: never degenerate.
- A degenerate token baseline falls back along [MASK] -> pad -> unk -> eos -> bos -> " " (the
  requested token's own fallbacks first), skipping near-zero rows; ``options["baseline_token"]``
  names the token used and ``options["baseline_note"]`` says why. No usable token, or
  ``baseline="zero"`` on such a model: :class:`InputError` naming the baseline and the fix.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch

from ..errors import InputError

#: the baselines of the embedding path: a [PAD] row, a [MASK] row, or zeros
BASELINES = ("pad", "mask", "zero")
#: a baseline row shorter than this fraction of the text's median word-embedding norm counts as ~0
ZERO_ROW = 0.01
#: order of the fallbacks after the requested token's own: mask, pad, unk, then the sequence markers
FALLBACK_ATTRS = ("mask_token_id", "pad_token_id", "unk_token_id", "eos_token_id", "bos_token_id")
_NORM_FIRST: "weakref.WeakKeyDictionary[Any, str | None]" = weakref.WeakKeyDictionary()


def baseline_token(tokenizer, baseline: str) -> int | None:
    """Vocabulary id whose embedding is the baseline ("pad"/"mask"), or None for "zero".

    Fallbacks for tokenizers without the token: "mask" -> unk -> eos -> pad; "pad" -> eos -> unk.
    """
    if baseline == "zero":
        return None
    if baseline == "mask":
        order = ("mask_token_id", "unk_token_id", "eos_token_id", "pad_token_id")
    elif baseline == "pad":
        order = ("pad_token_id", "eos_token_id", "unk_token_id")
    else:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}")
    for attr in order:
        token_id = getattr(tokenizer, attr, None)
        if token_id is not None:
            return int(token_id)
    raise InputError(f"this tokenizer has no token to use as the {baseline!r} baseline; use baseline='zero'")


class _Found(Exception):
    """Stops the probe's forward pass once the first operation is known."""


def candidate_ids(tokenizer, first: int) -> list[int]:
    """``first``, then the fallback tokens of :data:`FALLBACK_ATTRS` and the single-token " ", unique."""
    ids = [int(first)]
    for attr in FALLBACK_ATTRS:
        token_id = getattr(tokenizer, attr, None)
        if token_id is not None:
            ids.append(int(token_id))
    try:
        space = tokenizer.encode(" ", add_special_tokens=False)
    except Exception:  # pragma: no cover - tokenizers that reject a bare space
        space = []
    if len(space) == 1:
        ids.append(int(space[0]))
    return list(dict.fromkeys(ids))


def _same(a, b, rtol: float) -> bool:
    """Tensors (or tuples of them) equal within ``rtol`` of their largest magnitude."""
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y, rtol) for x, y in zip(a, b))
    if not torch.is_tensor(a) or not torch.is_tensor(b) or a.shape != b.shape:
        return a is b
    scale = float(a.detach().abs().max()) if a.numel() else 0.0
    return bool(torch.all((a.detach().float() - b.detach().float()).abs() <= rtol * max(scale, 1e-30)))


def norm_first(ex, embeds: torch.Tensor, attention_mask: torch.Tensor) -> str | None:
    """Class name of the model's first operation on the word embeddings when it is scale-invariant,
    else None. embeds (1, n, d) in the model's dtype. One forward with hooks, cached per model."""
    model = ex.model
    if model in _NORM_FIRST:
        return _NORM_FIRST[model]
    aliases, found, busy = {id(embeds)}, [], [False]

    def hook(module, args, kwargs, output):
        if busy[0] or not module_is_leaf(module):
            return None
        h = args[0] if args else kwargs.get("hidden_states")
        if not torch.is_tensor(h) or id(h) not in aliases:
            return None
        if output is h:  # an identity (dropout in eval)
            aliases.add(id(output))
            return None
        rest = args[1:]
        busy[0] = True
        try:
            with torch.no_grad():
                def call(z):
                    return module(z, *rest, **kwargs) if args else module(**{**kwargs, "hidden_states": z})

                if _same(output, call(h.roll(1, dims=-1) * 1.5 + 0.1), 1e-6):
                    return None  # does not read the values (a rotary table): not an operation on them
                if _same(output, h, 0.0):
                    aliases.add(id(output))
                    return None
                invariant = all(_same(output, call(c * h), 1e-2) for c in (2.0, 4.0))
                found.append(type(module).__name__ if invariant else None)
        finally:
            busy[0] = False
        raise _Found

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules() if module_is_leaf(m)]
    try:
        with torch.no_grad():
            ex.forward(inputs_embeds=embeds, attention_mask=attention_mask)
    except _Found:
        pass
    finally:
        for handle in handles:
            handle.remove()
    _NORM_FIRST[model] = found[0] if found else None
    return _NORM_FIRST[model]


def module_is_leaf(module) -> bool:
    return next(module.children(), None) is None


def choose_baseline(ex, encoding, x: torch.Tensor, moving: list[int], baseline: str, token_id: int | None,
                    check: bool = True) -> tuple[int | None, torch.Tensor, str | None]:
    """(token id used or None, its embedding row (d,) float32, note or None) for ``baseline``.

    x (1, n, d): the text's word embeddings (float32); token_id: the requested baseline's token
    (:func:`baseline_token`), None for "zero"; check: False = take it as
    it is (grad x input has no path). See the module docstring.
    """
    typical = float(x[0, moving].norm(dim=-1).median())
    embed = ex.model.get_input_embeddings()

    def row_of(tid: int) -> torch.Tensor:
        with torch.no_grad():
            return embed(torch.tensor([[tid]], device=ex.device))[0, 0].detach().float()

    first = torch.zeros_like(x[0, 0]) if token_id is None else row_of(token_id)
    if not check or float(first.norm()) >= ZERO_ROW * typical:
        return token_id, first, None
    op = norm_first(ex, ex.cast(x), encoding.attention_mask)
    if op is None:
        return token_id, first, None
    why = (f"this model's first operation on the word embeddings is scale-invariant ({op}), so from a (near) zero "
           f"embedding the score only moves near alpha = 0 and IG/SIG are degenerate")
    if token_id is None:
        raise InputError(f"baseline='zero' is degenerate here: {why}. Use baseline='mask' or baseline='pad'.")
    name = ex.tokenizer.convert_ids_to_tokens(token_id)
    tried = []
    for tid in candidate_ids(ex.tokenizer, token_id)[1:]:
        row = row_of(tid)
        norm = float(row.norm())
        if norm >= ZERO_ROW * typical:
            used = ex.tokenizer.convert_ids_to_tokens(tid)
            return tid, row, (f"the {baseline!r} baseline token {name!r} has a (near) zero embedding (norm "
                              f"{float(first.norm()):.3g}, the text's median {typical:.3g}) and {why}; used {used!r} "
                              f"(norm {norm:.3g}) instead")
        tried.append(f"{ex.tokenizer.convert_ids_to_tokens(tid)!r} ({norm:.3g})")
    raise InputError(
        f"no usable {baseline!r} baseline: {name!r} and its fallbacks {', '.join(tried) or '(none)'} have (near) zero "
        f"embeddings (the text's median norm is {typical:.3g}) and {why}. Fix: set ex.tokenizer.mask_token to a "
        f"token whose embedding is not zero (e.g. ' ') and use baseline='mask'.")
