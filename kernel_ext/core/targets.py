"""What is explained: a class logit, a next-token logit, or a logit difference.

A :class:`Target` is resolved once per text from the user's request (``None``, an index, a label
or token string, or a pair) and the model's logits, then turns any batch of model outputs into
one scalar per row with :meth:`Target.score`. Scores are pre-softmax logits (docs/ARCHITECTURE.md, section "Targets").
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError

#: the kinds of head an Explainer can explain
CLASSIFIER, CAUSAL_LM, MASKED_LM = "classifier", "causal_lm", "masked_lm"


@dataclass(frozen=True)
class Target:
    """A resolved target.

    kind: "class" (classifier logit), "token" (vocabulary logit) or "diff" (logit a - logit b).
    index: class/vocab index, or ``(a, b)`` for "diff".
    position: token position whose logits are read (causal/masked LMs); ``None`` for classifiers.
    label: human-readable name ("POSITIVE", "' Mary' - ' John'").
    """

    kind: str
    index: int | tuple[int, int]
    position: int | None = None
    label: str = ""

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Scalar target per batch row.

        logits: (B, C) for classifiers or (B, n, V) for language models. Returns (B,).
        """
        if self.position is not None:
            if logits.dim() != 3:
                raise InputError(f"expected (B, n, V) logits for a token target, got {tuple(logits.shape)}")
            logits = logits[:, self.position, :]
        if isinstance(self.index, tuple):
            a, b = self.index
            return logits[:, a] - logits[:, b]
        return logits[:, self.index]

    @property
    def public(self) -> int | tuple[int, int]:
        """What ``Attribution.target`` holds: an int or a pair of ints."""
        return self.index


def _single_token_id(tokenizer, token: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) == 1:
        return int(ids[0])
    pieces = tokenizer.convert_ids_to_tokens(ids)
    hint = ""
    if not token.startswith(" "):
        spaced = tokenizer.encode(" " + token, add_special_tokens=False)
        if len(spaced) == 1:
            hint = f" Did you mean {' ' + token!r} (with a leading space)?"
    raise InputError(
        f"target token {token!r} is not a single token for this tokenizer: it splits into {pieces}.{hint} "
        "Pass one token string, a vocabulary index, or a pair (token_a, token_b)."
    )


def _class_index(model_config, label: Any) -> int:
    n_classes = int(getattr(model_config, "num_labels", 0) or 0)
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):  # numpy ints too
        label = int(label)
        if not 0 <= label < n_classes:
            raise InputError(f"class index {label} is out of range: this model has {n_classes} classes (0..{n_classes - 1})")
        return int(label)
    if isinstance(label, str):
        label = label.strip()
        label2id = {str(k).lower(): int(v) for k, v in (model_config.label2id or {}).items()}
        if label.lower() in label2id:
            return label2id[label.lower()]
        if label.isdigit():
            return _class_index(model_config, int(label))
        raise InputError(f"unknown label {label!r}; this model's labels are {list(model_config.id2label.values())}")
    raise TypeError(f"a class target must be an int or a label string, not {type(label).__name__}")


def _vocab_index(tokenizer, vocab_size: int, token: Any) -> int:
    if isinstance(token, numbers.Integral) and not isinstance(token, bool):  # numpy ints too
        token = int(token)
        if not 0 <= token < vocab_size:
            raise InputError(f"vocabulary index {token} is out of range (vocabulary size {vocab_size})")
        return int(token)
    if isinstance(token, str):
        return _single_token_id(tokenizer, token)
    raise TypeError(f"a token target must be an int or a token string, not {type(token).__name__}")


def resolve_target(
    request: Any,
    *,
    head: str,
    logits: torch.Tensor,
    model_config,
    tokenizer,
    position: int | None = None,
) -> Target:
    """Turn the user's target request into a :class:`Target`.

    request: None (predicted class / next token), int, label or token string, or a pair.
    head: CLASSIFIER, CAUSAL_LM or MASKED_LM.
    logits: (C,) for a classifier, (V,) at ``position`` for a language model; used for ``None``.
    position: the position whose logits are read (language models).
    """
    if head == CLASSIFIER:
        id2label = getattr(model_config, "id2label", None) or {}

        def name(i: int) -> str:
            return str(id2label.get(i, id2label.get(str(i), i)))

        if request is None:
            idx = int(torch.argmax(logits).item())
            return Target("class", idx, None, name(idx))
        if isinstance(request, (tuple, list)):
            if len(request) != 2:
                raise InputError("a logit-difference target is a pair (a, b)")
            a, b = (_class_index(model_config, r) for r in request)
            return Target("diff", (a, b), None, f"{name(a)} - {name(b)}")
        idx = _class_index(model_config, request)
        return Target("class", idx, None, name(idx))

    vocab_size = int(logits.shape[-1])

    def tok(i: int) -> str:
        return repr(tokenizer.decode([i]))

    if request is None:
        idx = int(torch.argmax(logits).item())
        return Target("token", idx, position, tok(idx))
    if isinstance(request, (tuple, list)):
        if len(request) != 2:
            raise InputError("a logit-difference target is a pair (token_a, token_b)")
        a, b = (_vocab_index(tokenizer, vocab_size, r) for r in request)
        return Target("diff", (a, b), position, f"{tok(a)} - {tok(b)}")
    idx = _vocab_index(tokenizer, vocab_size, request)
    return Target("token", idx, position, tok(idx))
