"""Faithfulness of token attributions (docs/ARCHITECTURE.md, section "Faithfulness"): the public module.

``xattr_lab.faithfulness`` is this module. The metrics of one text live in
:mod:`.faithfulness_metrics` (log-odds, comprehensiveness, sufficiency, AOPC, and the top-k rule);
the harness over many texts and methods, its cache and its paired-bootstrap tables in
:mod:`.faithfulness_harness`; the bootstrap itself in :mod:`.bootstrap`; cache keys (code version,
model fingerprint) in :mod:`.provenance`.
"""
from __future__ import annotations

from .bootstrap import holm, mean_intervals, pairwise
from .faithfulness_harness import (DEFAULT_METHODS, PAPER_METHODS, compare, evaluate, method_specs, spec_key,
                                   summarise, wide_table)
from .faithfulness_metrics import (AOPC_FRACTIONS, BETTER, METRICS, aopc, attribute, comprehensiveness, log_odds,
                                   random_attribution, scores_all, sufficiency, text_record, top_count, top_tokens)
from .provenance import code_version, model_fingerprint

__all__ = [
    "AOPC_FRACTIONS", "BETTER", "DEFAULT_METHODS", "METRICS", "PAPER_METHODS", "aopc", "attribute", "code_version",
    "compare", "comprehensiveness", "evaluate", "holm", "log_odds", "mean_intervals", "method_specs",
    "model_fingerprint", "pairwise", "random_attribution", "scores_all", "spec_key", "sufficiency", "summarise",
    "text_record", "top_count", "top_tokens", "wide_table",
]
