"""Input adapters: one per input kind (:mod:`xattr_lab.core.inputs`, resolved once at load), each
naming the code that prepares, embeds, captures and builds the graph of that kind's inputs.

docs/ARCHITECTURE.md, section "Data flow". ``Explainer``'s verbs ask :func:`routed` first; it reads
the session's ``input_kind`` (and, for a text model, whether the argument is an image, by type
only), so a text for a text model goes on through the method registry without importing or calling
any image or encoder-decoder code. Other kinds are handed to :func:`explain`, which imports only
that kind's module. An image given to a text model goes to the image adapter, which says why not.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from ..core.inputs import ENCODER_DECODER, IMAGE, TEXT, is_image
from ..errors import InputError


@dataclass(frozen=True)
class InputAdapter:
    """Where one input kind's steps live, as ``module:function`` names inside ``xattr_lab``.

    explain: the verbs ("attribute", "flow", "heads", "circuit") for this kind, "" = the method
    registry (texts); prepare: raw input -> the prepared input (an ``Encoding``, an ``ImageInput``
    with pixels (1, 3, S, S), a ``Seq2SeqInput``); embed: the layer the gradient methods
    differentiate (word embeddings (1, n, d), the source and decoder embedders, the patch
    embedding); capture: attentions (L, H, n, n) (and their gradients) of one input; graph: the
    attention graph of rollout / attention flow / GAF; tokens: how its tokens are named in messages.
    """

    kind: str
    explain: str
    prepare: str
    embed: str
    capture: str
    graph: str
    tokens: str

    def function(self, step: str):
        """The function of ``step`` ("explain", "prepare", ...), its module imported on first use."""
        module, _, name = getattr(self, step).partition(":")
        found: Any = import_module(f"xattr_lab.{module}")
        for part in name.split("."):
            found = getattr(found, part)
        return found


ADAPTERS = {
    TEXT: InputAdapter(TEXT, "", "core.session:ModelSession.encode", "core.session:ModelSession.embed",
                       "core.capture:capture", "methods.flows:explain_flow", "tokens"),
    ENCODER_DECODER: InputAdapter(ENCODER_DECODER, "methods.seq2seq:explain", "methods.seq2seq_input:prepare",
                                  "methods.seq2seq_input:embedders", "methods.seq2seq_input:capture",
                                  "methods.seq2seq:graph", "encoder-decoder tokens"),
    IMAGE: InputAdapter(IMAGE, "methods.vision:explain", "methods.vision_input:prepare",
                        "methods.vision:patch_module", "methods.vision_input:capture", "methods.vision:graph",
                        "image patches"),
}


def adapter(ex: Any, inputs: Any = None) -> InputAdapter:
    """The input adapter for ``inputs`` on ``ex``: the session's kind, or the image adapter for an
    image given to a text model (it refuses it with the reason)."""
    kind = ex.input_kind
    return ADAPTERS[IMAGE if kind == TEXT and is_image(inputs) else kind]


def routed(ex: Any, inputs: Any) -> bool:
    """Whether the request goes to :func:`explain` (any input kind but text; an image for a text model)."""
    return adapter(ex, inputs).kind != TEXT


def explain(ex: Any, verb: str, inputs: Any, method: str = "", target: Any = None, granularity: str = "token",
            **options: Any):
    """``verb`` ("attribute", "flow", "heads", "circuit") for an image or an encoder-decoder model."""
    chosen = adapter(ex, inputs)
    if granularity != "token":
        what = ADAPTERS[IMAGE].tokens if is_image(inputs) else chosen.tokens
        raise InputError(f"granularity={granularity!r} is not available for {what}; use granularity='token'")
    return chosen.function("explain")(ex, verb, inputs, method, target, **options)


def generate(ex: Any, source: Any, max_new_tokens: int, method: str, target: Any, callback: Any, **options: Any):
    """``attribute_generation`` for an encoder-decoder (:func:`.seq2seq.attribute_generation`)."""
    if ex.input_kind != ENCODER_DECODER:
        raise InputError(f"{ex.name} classifies images and generates no text: use ex.attribute(image, ...)")
    from . import seq2seq

    return seq2seq.attribute_generation(ex, source, max_new_tokens, method, target, callback, **options)
