"""Inputs other than one text for one stack: images (ViT, :mod:`.vision`) and encoder-decoders
(T5, BART, :mod:`.seq2seq`). ``Explainer``'s verbs ask :func:`routed` first and hand such requests to
:func:`explain`; everything else goes through the method registry as before.
"""
from __future__ import annotations

from typing import Any

from ..core.adapters.base import SEQ2SEQ_LM
from ..errors import InputError
from .vision_input import is_image, is_vision


def routed(ex: Any, inputs: Any) -> bool:
    """Whether the request goes to :func:`explain`: an image, a vision model, or an encoder-decoder."""
    return is_image(inputs) or is_vision(ex) or ex.head == SEQ2SEQ_LM


def explain(ex: Any, verb: str, inputs: Any, method: str = "", target: Any = None, granularity: str = "token",
            **options: Any):
    """``verb`` ("attribute", "flow", "heads", "circuit") for an image or an encoder-decoder model."""
    if granularity != "token":
        what = "image patches" if is_vision(ex) or is_image(inputs) else "encoder-decoder tokens"
        raise InputError(f"granularity={granularity!r} is not available for {what}; use granularity='token'")
    if ex.head == SEQ2SEQ_LM:
        from . import seq2seq

        return seq2seq.explain(ex, verb, inputs, method, target, **options)
    from . import vision

    return vision.explain(ex, verb, inputs, method, target, **options)


def generate(ex: Any, source: Any, max_new_tokens: int, method: str, target: Any, callback: Any, **options: Any):
    """``attribute_generation`` for an encoder-decoder (:func:`.seq2seq.attribute_generation`)."""
    if ex.head != SEQ2SEQ_LM:
        raise InputError(f"{ex.name} classifies images and generates no text: use ex.attribute(image, ...)")
    from . import seq2seq

    return seq2seq.attribute_generation(ex, source, max_new_tokens, method, target, callback, **options)
