"""BLOOM (``transformer.h.N.self_attention.dense``).

Fused QKV; positions enter as ALiBi biases on the attention scores (no position embedding, so
no maximum length from the config), which the returned attention probabilities already include."""
from .base import Family

FAMILY = Family("bloom", r"(?:^|\.)h\.(\d+)\.self_attention\.dense$", causal=True, model_types=("bloom",),
                notes="fused query_key_value; ALiBi positions; embedding LayerNorm")
