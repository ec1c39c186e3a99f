"""DistilBERT (``transformer.layer.N.attention.out_lin``)."""
from .base import Family

FAMILY = Family("distilbert", r"(?:^|\.)layer\.(\d+)\.attention\.out_lin$", causal=False)
