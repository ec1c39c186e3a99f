"""Falcon (``transformer.h.N.self_attention.dense``).

Fused QKV with multi-query (one K/V head) or grouped K/V heads (new decoder architecture): the
K/V heads are shared, but every query head has its own slice of ``dense``'s input."""
from .base import Family

FAMILY = Family("falcon", r"(?:^|\.)h\.(\d+)\.self_attention\.dense$", causal=True, model_types=("falcon",),
                notes="fused query_key_value; multi-query or grouped K/V heads; rotary or ALiBi")
