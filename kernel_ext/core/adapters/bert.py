"""BERT-style encoders: BERT, RoBERTa, ELECTRA, DeBERTa-v2 (``encoder.layer.N.attention.output.dense``)."""
from .base import Family

FAMILY = Family("bert", r"(?:^|\.)layer\.(\d+)\.attention\.output\.dense$", causal=False,
                notes="BERT, RoBERTa, ELECTRA, DeBERTa-v2 (relative positions inside the attention scores)")
