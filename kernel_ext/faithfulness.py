"""``xattr_lab.faithfulness``: faithfulness of token attributions (docs/ARCHITECTURE.md, section "Faithfulness").

The metrics of one text live in :mod:`xattr_lab.evaluation.faithfulness_metrics` (log-odds,
comprehensiveness, sufficiency, AOPC, and the top-k rule); the harness over many texts and methods, its
cache and its paired-bootstrap tables in :mod:`xattr_lab.evaluation.faithfulness_harness`; the bootstrap
itself in :mod:`xattr_lab.evaluation.bootstrap`; cache keys (code version, model fingerprint) in
:mod:`xattr_lab.evaluation.provenance`.
"""
from .evaluation.bootstrap import holm, mean_intervals, pairwise
from .evaluation.faithfulness_harness import (
    DEFAULT_METHODS, PAPER_METHODS, compare, evaluate, method_specs, spec_key, summarise, wide_table,
)
from .evaluation.faithfulness_metrics import (
    AOPC_FRACTIONS, BETTER, METRICS, aopc, attribute, comprehensiveness, log_odds, random_attribution, scores_all,
    sufficiency, text_record, top_count, top_tokens,
)
from .evaluation.provenance import code_version, model_fingerprint

__all__ = [
    "AOPC_FRACTIONS", "BETTER", "DEFAULT_METHODS", "METRICS", "PAPER_METHODS", "aopc", "attribute", "code_version",
    "compare", "comprehensiveness", "evaluate", "holm", "log_odds", "mean_intervals", "method_specs",
    "model_fingerprint", "pairwise", "random_attribution", "scores_all", "spec_key", "sufficiency", "summarise",
    "text_record", "top_count", "top_tokens", "wide_table",
]
