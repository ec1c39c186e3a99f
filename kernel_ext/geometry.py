"""``xattr_lab.geometry``: attention-head geometry — entropy, cone index, attention patterns and their taxonomy.

The code lives in :mod:`xattr_lab.methods.geometry` (``ex.heads``); docs/ARCHITECTURE.md, section "Geometry".
"""
from .methods.geometry import (
    PATTERN_THRESHOLDS, PATTERNS, POSITIONAL, TAXONOMY, attention_entropy, classify_patterns, cone_index,
    cone_index_above_floor, cone_index_floor, cone_indices, head_patterns, head_stats, is_punctuation,
    pattern_counts, pattern_scores,
)

__all__ = [
    "PATTERN_THRESHOLDS", "PATTERNS", "POSITIONAL", "TAXONOMY", "attention_entropy", "classify_patterns",
    "cone_index", "cone_index_above_floor", "cone_index_floor", "cone_indices", "head_patterns", "head_stats",
    "is_punctuation", "pattern_counts", "pattern_scores",
]
