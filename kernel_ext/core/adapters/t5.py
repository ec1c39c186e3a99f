"""T5 encoder-decoders: the encoder's ``encoder.block.N.layer.0.SelfAttention.o`` (the decoder's
self- and cross-attention are read from the model's outputs by ``xattr_lab.methods.seq2seq``)."""
from .base import Family

FAMILY = Family("t5", r"(?:^|\.)encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.o$", causal=False,
                model_types=("t5", "mt5", "umt5"),
                notes="encoder-decoder; relative position buckets; flows through cross-attention (methods/seq2seq.py)")
