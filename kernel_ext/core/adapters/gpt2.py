"""GPT-2 (``transformer.h.N.attn.c_proj``, a Conv1D whose weight is stored (in, out))."""
from .base import Family

FAMILY = Family("gpt2", r"(?:^|\.)h\.(\d+)\.attn\.c_proj$", causal=True, model_types=("gpt2",),
                notes="fused QKV (c_attn); Conv1D output projection")
