"""Architecture adapters: where a model keeps its attention output projections, and its head kind.

An architecture is one small file in this package that defines ``FAMILY`` (a :class:`Family`),
added to :data:`FAMILIES` below. docs/ARCHITECTURE.md, section "Core".
"""
from __future__ import annotations

from torch import nn

from ...errors import ModelError
from . import bart, bert, bloom, distilbert, falcon, gpt2, gpt_neox, llama, modernbert, opt, t5, vit
from .base import Adapter, Family, build_adapter, head_kind, parameter

#: Tried in this order; the first family whose model types and module names match builds the adapter.
FAMILIES: list[Family] = [
    vit.FAMILY,  # before bert: older ViTs share BERT's module names
    t5.FAMILY,
    bart.FAMILY,
    bert.FAMILY,
    distilbert.FAMILY,
    gpt2.FAMILY,
    llama.FAMILY,
    gpt_neox.FAMILY,
    opt.FAMILY,
    falcon.FAMILY,
    bloom.FAMILY,
    modernbert.FAMILY,
]


def detect_adapter(model: nn.Module) -> Adapter:
    """The adapter of the first family in :data:`FAMILIES` that matches ``model``."""
    for family in FAMILIES:
        adapter = build_adapter(model, family)
        if adapter is not None:
            return adapter
    known = ", ".join(f.name for f in FAMILIES)
    raise ModelError(
        f"unsupported architecture {type(model).__name__} (model_type "
        f"{getattr(model.config, 'model_type', None)!r}): xattr-lab knows the families {known}; its heads "
        "cannot be split otherwise. An architecture is one small file in xattr_lab/core/adapters/."
    )


__all__ = ["Adapter", "FAMILIES", "Family", "build_adapter", "detect_adapter", "head_kind", "parameter"]
