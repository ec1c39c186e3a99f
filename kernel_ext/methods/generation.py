"""Explaining a generation: every generated token attributed to the prompt and the earlier tokens.

``ex.attribute_generation(prompt, ...)``. The sequence is
produced first, greedily (argmax of the next-token logits, no sampling: the same tokens as
``model.generate(do_sample=False)``) or by teacher-forcing a given target text. Then row t explains
generated token t, which sits at position ``p + t`` (p = prompt tokens incl. BOS) and is read from the
logits at position ``p + t - 1``: the chosen method runs on the prefix ``tokens[:p + t]`` with the
generated token's vocabulary index as the target (its pre-softmax logit, as for any next-token
target). Row t therefore covers columns ``0 .. p + t - 1``; the columns from ``p + t`` on are not
inputs of that prediction and hold NaN (the token itself and everything after it).
"""
from __future__ import annotations

import numbers
import re
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from ..core.encoding import Encoding
from ..core.targets import CAUSAL_LM
from ..errors import InputError, ModelError
from ..results import GenerationResult
from . import registry
from .gradients import Cancelled
from .registry import GENERATION_METHODS, implements

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession

__all__ = ["attribute_generation", "greedy", "Cancelled"]

_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")
#: per-row entries of a method's options kept in ``options["rows"]`` (the rest is per token or bulky)
_ROW_KEYS = ("f_x", "f_baseline", "baseline_token", "relative_completeness_error", "converged", "nodes", "value", "mu")


def _eos_ids(ex: "ModelSession") -> set[int]:
    config = getattr(ex.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    if eos is None:
        eos = ex.tokenizer.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def greedy(ex: "ModelSession", ids: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """Greedy continuation of ``ids``: (max_new_tokens,) token ids or fewer (stops after an EOS).

    One forward pass over the whole sequence per token (no key/value cache: the prefixes are
    short next to the attributions that follow).
    """
    eos, out = _eos_ids(ex), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            seq = torch.tensor([ids + out], device=ex.device)
            logits = ex.forward(input_ids=seq, attention_mask=torch.ones_like(seq)).logits
            out.append(int(logits[0, -1].argmax()))
            if stop_at_eos and out[-1] in eos:
                break
    return out


def _check(ex: "ModelSession", method: str, max_new_tokens: Any, options: dict) -> None:
    if ex.head != CAUSAL_LM:
        raise ModelError(f"attribute_generation explains a causal language model; {ex.name} is a {ex.head}")
    if method not in GENERATION_METHODS:
        raise InputError(f"attribute_generation runs one of {list(GENERATION_METHODS)}, not {method!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
    for name in ("granularity", "sources", "positions"):
        if name in options:
            raise InputError(f"attribute_generation takes no {name!r} option: each row explains its own token")


@implements("generate")
def attribute_generation(ex: "ModelSession", prompt: str, *, max_new_tokens: int = 20, method: str = "ig",
                         target: str | None = None, stop_at_eos: bool = True,
                         callback: Callable[[GenerationResult], Any] | None = None,
                         **options: Any) -> GenerationResult:
    """Generate, then attribute every generated token -> :class:`~xattr_lab.results.GenerationResult`.

    prompt: the text (special tokens added as the model expects). target: None (greedy, up to
    ``max_new_tokens``, stopping after an EOS when ``stop_at_eos``) or a text whose tokens (no
    special tokens added) are teacher-forced, all of them. options go to the method (e.g.
    ``steps``). callback: after each row, ``callback(partial)`` with the rows so far (the others
    NaN, ``options["rows_done"]``); returning False stops the run with :class:`Cancelled`.
    """
    _check(ex, method, max_new_tokens, options)
    encoding = ex.encode(prompt, truncate=bool(options.pop("truncate", False)))
    prompt_ids = encoding.input_ids[0].tolist()
    if target is not None:
        with ex.lock:
            new_ids = [int(i) for i in ex.tokenizer(target, add_special_tokens=False)["input_ids"]]
        if not new_ids:
            raise InputError("the target text tokenises to nothing; give some text, or None to generate greedily")
    else:
        new_ids = greedy(ex, prompt_ids, int(max_new_tokens), stop_at_eos)
    all_ids = prompt_ids + new_ids
    if ex.max_length is not None and len(all_ids) > ex.max_length:
        raise InputError(f"prompt and generation are {len(all_ids)} tokens; {ex.name} takes at most {ex.max_length}")
    with ex.lock:
        tokens = ex.tokenizer.convert_ids_to_tokens(all_ids)
        generated = [ex.tokenizer.decode([i]) for i in new_ids]
    p, T = len(prompt_ids), len(new_ids)
    matrix, raw = np.full((T, p + T), np.nan), np.full((T, p + T), np.nan)
    rows: list[dict] = []
    caught: list[str] = []
    for t in range(T):
        m = p + t
        prefix = Encoding(prompt + "".join(generated[:t]), torch.tensor([all_ids[:m]], device=ex.device),
                          torch.ones(1, m, dtype=torch.long, device=ex.device), tokens[:m],
                          list(encoding.special_mask) + [False] * t)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            row = _row(ex, prefix, method, new_ids[t], options)
        caught += [f"row {t} ({generated[t]!r}): {w.message}" for w in seen]
        matrix[t, :m], raw[t, :m] = row.scores, row.raw
        rows.append({k: row.options[k] for k in _ROW_KEYS if k in (row.options or {})})
        if callback is not None:
            partial = _result(ex, prompt, target, method, tokens, generated, new_ids, p, matrix, raw, rows, options)
            if callback(partial) is False:
                raise Cancelled(f"attribute_generation cancelled after {t + 1} of {T} tokens")
    if caught:
        warnings.warn(f"{len(caught)} warning(s) from the rows; first: {caught[0]}", RuntimeWarning, stacklevel=3)
    return _result(ex, prompt, target, method, tokens, generated, new_ids, p, matrix, raw, rows, options)


def _row(ex, prefix: Encoding, method: str, token: int, options: dict):
    """One row: ``method`` on the prefix, the generated token's logit as the target; an option the
    method does not take is an :class:`InputError` naming the ones it does."""
    try:
        return registry.function(method)(ex, prefix, method=method, target=token, **dict(options))
    except TypeError as error:
        match = _UNEXPECTED.search(str(error))
        if match is None or match.group(1) not in options:
            raise
        known = ", ".join(o.name for o in registry.spec(method).options if o.name != "granularity")
        raise InputError(f"unknown option {match.group(1)!r} for {method}; its options are: {known}") from None


def _result(ex, prompt, target, method, tokens, generated, new_ids, p, matrix, raw, rows, options) -> GenerationResult:
    used = {k: v for k, v in options.items() if k not in ("callback", "progress")}
    return GenerationResult(
        tokens=list(tokens), generated=list(generated), matrix=matrix.copy(), raw=raw.copy(),
        generated_ids=list(new_ids), prompt_length=p, method=method, prompt=prompt, target=target, model=ex.name,
        options={**used, "mode": "greedy" if target is None else "teacher_forced", "rows_done": len(rows),
                 "rows": [dict(r) for r in rows], "after_token": "nan"})
