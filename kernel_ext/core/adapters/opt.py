"""OPT (``model.decoder.layers.N.self_attn.out_proj``); learned positions with an offset of 2."""
from .base import Family

FAMILY = Family("opt", r"(?:^|\.)decoder\.layers\.(\d+)\.self_attn\.out_proj$", causal=True, model_types=("opt",),
                notes="learned positions (offset 2); optional project_in/out of the embeddings")
