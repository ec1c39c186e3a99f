"""``xattr_lab.toy``: the hand-built induction model; :func:`load_toy` gives an :class:`xattr_lab.Explainer`.

The code lives in :mod:`xattr_lab.core.toy`; docs/ARCHITECTURE.md, section "Embedded models".
"""
from .core.toy import (
    CIRCUIT_HEADS, FIRE, HALF, LAYER0, LAYER1, SINK, SPECIAL, TOY_NAME, TOY_RECIPE, AttentionOnlyForCausalLM,
    ToyAttention, ToyConfig, ToyLayer, build_toy_model, induction_metric, induction_prompts, load_toy_model,
    toy_tokenizer,
)
from .explainer import load_toy

__all__ = [
    "CIRCUIT_HEADS", "FIRE", "HALF", "LAYER0", "LAYER1", "SINK", "SPECIAL", "TOY_NAME", "TOY_RECIPE",
    "AttentionOnlyForCausalLM", "ToyAttention", "ToyConfig", "ToyLayer", "build_toy_model", "induction_metric",
    "induction_prompts", "load_toy", "load_toy_model", "toy_tokenizer",
]
