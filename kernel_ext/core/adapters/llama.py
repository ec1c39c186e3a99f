"""Llama-style decoders (``layers.N.self_attn.o_proj``): Llama, Mistral, Qwen2, Gemma, Phi-3, SmolLM,
and any model that keeps that layout (the toy model too)."""
from .base import Family

FAMILY = Family("llama", r"(?:^|\.)layers\.(\d+)\.self_attn\.o_proj$", causal=True,
                notes="Llama, Mistral, Qwen2, Gemma, Phi-3 (fused qkv_proj), SmolLM; grouped-query attention")
