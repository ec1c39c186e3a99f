"""ModernBERT (``model.layers.N.attn.Wo``).

Fused ``Wqkv``; every ``global_attn_every_n_layers``-th layer attends globally, the others within
a sliding window of ``local_attention`` tokens (their attention is 0 outside it)."""
from .base import Family

FAMILY = Family("modernbert", r"(?:^|\.)layers\.(\d+)\.attn\.Wo$", causal=False, model_types=("modernbert",),
                notes="fused Wqkv; alternating global and sliding-window (local) attention; rotary")
