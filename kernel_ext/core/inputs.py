"""What a model takes, resolved once when it is loaded: its input kind.

docs/ARCHITECTURE.md, section "Core". Each kind has one input adapter in the methods layer
(:mod:`xattr_lab.methods.modalities`: prepare, embed, capture, graph), so a request goes straight to
its kind's code and never through another kind's:

- ``TEXT``: one token sequence; the head (``ModelSession.head``: text classifier, causal LM,
  masked LM) says where the target is read. Texts go through the method registry.
- ``ENCODER_DECODER``: a source text and a decoder prefix (T5, BART: ``…ForConditionalGeneration``).
- ``IMAGE``: pixels cut into patches (ViT: ``config.model_type`` in :data:`VISION_MODEL_TYPES`).

:func:`is_image` tells an image argument from a text without importing any vision code.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .adapters.base import SEQ2SEQ_LM, head_kind

TEXT = "text"
ENCODER_DECODER = "encoder_decoder"
IMAGE = "image"
INPUT_KINDS = (TEXT, ENCODER_DECODER, IMAGE)
#: ``config.model_type`` values whose inputs are images
VISION_MODEL_TYPES = ("vit",)


def input_kind(model: Any) -> str:
    """The input kind of a loaded model (one of :data:`INPUT_KINDS`); ``ModelError`` for a model with no head."""
    if getattr(getattr(model, "config", None), "model_type", None) in VISION_MODEL_TYPES:
        return IMAGE
    return ENCODER_DECODER if head_kind(model) == SEQ2SEQ_LM else TEXT


def is_image(value: Any) -> bool:
    """A PIL image or an (H, W, 3) numpy array, not a text (checked by type: no vision code imported)."""
    if isinstance(value, np.ndarray):
        return True
    return type(value).__module__.startswith("PIL.") and hasattr(value, "convert")
