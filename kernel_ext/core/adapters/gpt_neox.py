"""GPT-NeoX / Pythia (``gpt_neox.layers.N.attention.dense``).

Fused QKV (``query_key_value``) and partial rotary positions change nothing here: the output
projection ``dense`` still reads the concatenated per-head outputs, head-major."""
from .base import Family

FAMILY = Family("gpt_neox", r"(?:^|\.)layers\.(\d+)\.attention\.dense$", causal=True, model_types=("gpt_neox",),
                notes="Pythia; fused query_key_value, partial rotary, parallel residual")
