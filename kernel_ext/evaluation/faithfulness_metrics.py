"""Faithfulness metrics of token attributions for one text (docs/ARCHITECTURE.md, section "Faithfulness").

For one text x and attribution scores s (n,), tokens are ranked by signed score (largest first);
the top-k are the first ``top_count(k, m)`` non-special tokens (m = number of tokens the tokenizer
did not add; k a fraction in (0, 1]: round(k*m) with halves rounded up, at least 1; an int k >= 1 is
a count). Special tokens ([CLS], [SEP], padding) are never removed. y = the class predicted on x,
p(y | .) = softmax probability of that class.

- log_odds = log p(y | top-k embeddings replaced by [MASK]) - log p(y | x)      (lower is better)
- comprehensiveness = p(y | x) - p(y | top-k tokens deleted)                     (higher is better)
- sufficiency = p(y | x) - p(y | only the top-k kept, special tokens too)        (lower is better)
- aopc = mean over k in {0.1, 0.2, 0.3, 0.4, 0.5} of comprehensiveness          (higher is better)

Replacing with [MASK] keeps the sequence length; deleting removes the tokens (later tokens move
up a position). Tokenizers without a [MASK] token use the fallback of
:func:`xattr_lab.gradients.baseline_token` (unknown token, then EOS).

:func:`text_record` is one cached unit of the evaluation harness: a method's attribution of one text
and all four metrics. Metrics are defined for classifiers; language models raise an error.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np

AOPC_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
METRICS = ("log_odds", "comprehensiveness", "sufficiency", "aopc")
#: direction of each metric: +1 higher is better, -1 lower is better
BETTER = {"log_odds": -1, "comprehensiveness": 1, "sufficiency": -1, "aopc": 1}


# ---------------------------------------------------------------------------- pure helpers
def top_count(k: float, m: int) -> int:
    """How many of m removable tokens the top-k holds: round(k*m) (at least 1) for a fraction, or k."""
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise _error(f"k must be a fraction in (0, 1] or a token count >= 1, not {k!r}")
    if isinstance(k, (int, np.integer)) and k >= 1:
        return int(min(k, m))
    if not 0 < k <= 1:
        raise _error(f"k must be a fraction in (0, 1] or a token count >= 1, not {k!r}")
    return int(min(m, max(1, math.floor(k * m + 0.5))))


def top_tokens(scores: np.ndarray, special_mask: Sequence[bool], k: float) -> np.ndarray:
    """Positions of the top-k non-special tokens by signed score (ties: earlier position first)."""
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.array([i for i, special in enumerate(special_mask) if not special], dtype=int)
    if candidates.size == 0:
        raise _error("the text has no non-special tokens to remove")
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return np.sort(order[: top_count(k, candidates.size)])


def _error(message: str):
    from ..errors import InputError as XattrError

    return XattrError(message)


# ---------------------------------------------------------------------------- model side
def _checked(ex, text, scores):
    """(encoding, scores (n,) float64, predicted class, p(y|x)) for a classifier."""
    from ..core.session import Encoding
    from ..results import Attribution
    from ..core.targets import CLASSIFIER

    if ex.head != CLASSIFIER:
        raise _error(
            f"faithfulness metrics need a classifier; {ex.name} is a {ex.head}. Load a sequence classifier "
            "(e.g. xa.load('minilm-rt'))."
        )
    if isinstance(scores, Attribution):
        if text is None:
            text = scores.text
        scores = scores.scores
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    encoding = text if isinstance(text, Encoding) else ex.encode(text)
    if scores.shape[0] != encoding.n:
        raise _error(f"got {scores.shape[0]} scores for a text of {encoding.n} tokens ({encoding.tokens})")
    if not np.all(np.isfinite(scores)):
        raise _error("scores contain NaN or inf")
    probs = _probabilities(ex, [encoding.input_ids[0].tolist()])[0]
    predicted = int(np.argmax(probs))
    return encoding, scores, predicted, float(probs[predicted])


def _probabilities(ex, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """Class probabilities (len(sequences), C) for token-id lists (right-padded into one batch)."""
    import torch

    width = max(len(s) for s in sequences)
    pad = ex.tokenizer.pad_token_id if ex.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(sequences), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=ids.to(ex.device), attention_mask=mask.to(ex.device)).logits
    return torch.softmax(logits.double(), dim=-1).cpu().numpy()


def _mask_id(ex) -> int:
    from ..methods.gradients import baseline_token

    return int(baseline_token(ex.tokenizer, "mask"))


def _perturbed(ex, encoding, top: np.ndarray) -> dict[str, list[int]]:
    ids = encoding.input_ids[0].tolist()
    keep_special = encoding.special_mask
    top_set = set(int(i) for i in top)
    mask_id = _mask_id(ex)
    return {
        "masked": [mask_id if i in top_set else t for i, t in enumerate(ids)],
        "deleted": [t for i, t in enumerate(ids) if i not in top_set],
        "kept": [t for i, t in enumerate(ids) if i in top_set or keep_special[i]],
    }


def scores_all(ex, text, scores, k: float = 0.2, aopc_fractions: Sequence[float] = AOPC_FRACTIONS) -> dict[str, float]:
    """All four metrics for one text in one batched forward pass -> {metric: value}."""
    encoding, scores, predicted, p_full = _checked(ex, text, scores)
    top = top_tokens(scores, encoding.special_mask, k)
    variants = _perturbed(ex, encoding, top)
    deletions = [_perturbed(ex, encoding, top_tokens(scores, encoding.special_mask, f))["deleted"] for f in aopc_fractions]
    probs = _probabilities(ex, [variants["masked"], variants["deleted"], variants["kept"], *deletions])[:, predicted]
    return {
        "log_odds": float(np.log(probs[0]) - np.log(p_full)),
        "comprehensiveness": float(p_full - probs[1]),
        "sufficiency": float(p_full - probs[2]),
        "aopc": float(np.mean(p_full - probs[3:])),
    }


def log_odds(ex, text, scores, k: float = 0.2) -> float:
    """log p(y | top-k embeddings replaced by [MASK]) - log p(y | x); lower is better."""
    encoding, scores, predicted, p_full = _checked(ex, text, scores)
    ids = _perturbed(ex, encoding, top_tokens(scores, encoding.special_mask, k))["masked"]
    return float(np.log(_probabilities(ex, [ids])[0, predicted]) - np.log(p_full))


def comprehensiveness(ex, text, scores, k: float = 0.2) -> float:
    """p(y | x) - p(y | top-k tokens deleted); higher is better."""
    encoding, scores, predicted, p_full = _checked(ex, text, scores)
    ids = _perturbed(ex, encoding, top_tokens(scores, encoding.special_mask, k))["deleted"]
    return float(p_full - _probabilities(ex, [ids])[0, predicted])


def sufficiency(ex, text, scores, k: float = 0.2) -> float:
    """p(y | x) - p(y | only the top-k tokens kept, plus special tokens); lower is better."""
    encoding, scores, predicted, p_full = _checked(ex, text, scores)
    ids = _perturbed(ex, encoding, top_tokens(scores, encoding.special_mask, k))["kept"]
    return float(p_full - _probabilities(ex, [ids])[0, predicted])


def aopc(ex, text, scores, k: Sequence[float] = AOPC_FRACTIONS) -> float:
    """Mean comprehensiveness over the fractions ``k`` (default 0.1 ... 0.5); higher is better."""
    encoding, scores, predicted, p_full = _checked(ex, text, scores)
    fractions = [k] if np.isscalar(k) else list(k)
    sequences = [_perturbed(ex, encoding, top_tokens(scores, encoding.special_mask, f))["deleted"] for f in fractions]
    return float(np.mean(p_full - _probabilities(ex, sequences)[:, predicted]))


# ---------------------------------------------------------------------------- one text, one method
def random_attribution(ex, text, *, seed: int = 0):
    """Uniform random scores (seeded by the text): the floor every method should beat."""
    from ..results import Attribution

    encoding = ex.encode(text)
    digest = int(hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()[:8], 16)
    scores = np.random.default_rng(digest).random(encoding.n)
    return Attribution(tokens=encoding.tokens, scores=scores, raw=scores, method="random", options={"seed": seed},
                       text=text, model=ex.name)


#: methods whose functions draw their own progress bars (switched off inside the harness)
_QUIET = {"ig": {"progress": False}, "sig": {"progress": False}}


def attribute(ex, text: str, spec: Mapping[str, Any]):
    """The attribution a spec ({"method": name, **options}) asks for; "random" is :func:`random_attribution`."""
    import warnings

    options = dict(spec)
    method = options.pop("method")
    if method == "random":
        return random_attribution(ex, text, **options)
    with warnings.catch_warnings():  # convergence warnings: the record keeps the completeness error
        warnings.simplefilter("ignore", RuntimeWarning)
        return ex.attribute(text, method=method, **{**_QUIET.get(method, {}), **options})


def text_record(ex, text: str, spec: Mapping[str, Any], k: float = 0.2) -> dict[str, Any]:
    """Attribute ``text`` as ``spec`` says, then score it: every metric, the wall and CPU seconds the
    attribution took, m (non-special tokens), top (tokens in the top-k), and the options the method
    reported."""
    started, cpu = time.perf_counter(), time.process_time()
    attribution = attribute(ex, text, spec)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    record: dict[str, Any] = dict(scores_all(ex, text, attribution, k))
    special = ex.encode(text).special_mask
    m = int(sum(not s for s in special))
    record.update(seconds=seconds, cpu_seconds=cpu_seconds, m=m, top=top_count(k, m))
    used = {key: value for key, value in (attribution.options or {}).items()
            if key in ("sources", "baseline", "steps", "nodes", "residual", "info", "relative_completeness_error")
            and (key == "sources" or np.ndim(value) == 0)}
    record["used"] = _jsonable(used)
    return record


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
