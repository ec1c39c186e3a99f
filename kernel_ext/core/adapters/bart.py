"""BART encoder-decoders: the encoder's ``encoder.layers.N.self_attn.out_proj`` (the decoder's
self- and cross-attention are read from the model's outputs by ``xattr_lab.methods.seq2seq``)."""
from .base import Family

FAMILY = Family("bart", r"(?:^|\.)encoder\.layers\.(\d+)\.self_attn\.out_proj$", causal=False,
                model_types=("bart", "mbart"),
                notes="encoder-decoder; learned positions (offset 2); flows through cross-attention (methods/seq2seq.py)")
