"""Faithfulness of token attributions: log-odds, comprehensiveness, sufficiency, AOPC (docs/ARCHITECTURE.md, section "Faithfulness").

For one text x and attribution scores s (n,), tokens are ranked by signed score (largest first);
the top-k are the first ``top_count(k, m)`` non-special tokens (m = number of non-special tokens,
k a fraction in (0, 1]: round(k*m), at least 1; an int k >= 1 is a count). Special tokens are never
removed. y = the class predicted on x, p(y | .) = softmax probability.

- log_odds = log p(y | top-k embeddings replaced by [MASK]) - log p(y | x)      (lower is better)
- comprehensiveness = p(y | x) - p(y | top-k tokens deleted)                     (higher is better)
- sufficiency = p(y | x) - p(y | only the top-k kept)                            (lower is better)
- aopc = mean over k in {0.1, 0.2, 0.3, 0.4, 0.5} of comprehensiveness          (higher is better)

Replacing with [MASK] keeps the sequence length; deleting removes the tokens (later tokens move
up a position). Tokenizers without a [MASK] token use the fallback of
:func:`xattr_lab.gradients.baseline_token` (unknown token, then EOS).

:func:`evaluate` runs several methods over many texts and returns a tidy table (mean and 95% CI).
Metrics are defined for classifiers; language models raise an error.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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


# ---------------------------------------------------------------------------- evaluation harness
#: the SIG paper's comparison (label -> method and options)
PAPER_METHODS: dict[str, dict[str, Any]] = {
    "ig[pad]": {"method": "ig", "baseline": "pad"},
    "ig[mask]": {"method": "ig", "baseline": "mask"},
    "sig[mask]": {"method": "sig", "baseline": "mask"},
    "grad_x_input": {"method": "grad_x_input"},
    "random": {"method": "random"},
}


def random_attribution(ex, text, *, seed: int = 0):
    """Uniform random scores (seeded by the text): the floor every method should beat."""
    from ..results import Attribution

    encoding = ex.encode(text)
    digest = int(hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()[:8], 16)
    scores = np.random.default_rng(digest).random(encoding.n)
    return Attribution(tokens=encoding.tokens, scores=scores, raw=scores, method="random", options={"seed": seed},
                       text=text, model=ex.name)


def _model_fingerprint(ex) -> str:
    """Name plus a hash of a few parameter values: the same alias with other weights gets another key."""
    import torch

    digest = hashlib.sha256(ex.name.encode())
    params = list(ex.model.parameters())
    for p in (params[0], params[len(params) // 2], params[-1]):
        digest.update(p.detach().float().reshape(-1)[:4096].cpu().numpy().tobytes())
    digest.update(str(torch.__version__).encode())
    return digest.hexdigest()[:16]


def _spec_key(fingerprint: str, label: str, spec: Mapping[str, Any], k: float) -> str:
    payload = json.dumps({"model": fingerprint, "label": label, "spec": spec, "k": k}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _load_cache(path: Path) -> dict[str, dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _method_specs(methods, method_options) -> dict[str, dict[str, Any]]:
    method_options = dict(method_options or {})
    specs: dict[str, dict[str, Any]] = {}
    for label in methods:
        spec = dict(PAPER_METHODS.get(label, {}))
        spec.update(method_options.get(label, {}))
        spec.setdefault("method", label)
        specs[label] = spec
    unknown = set(method_options) - set(specs)
    if unknown:
        raise _error(f"method_options names methods not in `methods`: {sorted(unknown)}")
    return specs


def _attribute(ex, text: str, spec: Mapping[str, Any]):
    options = dict(spec)
    method = options.pop("method")
    if method == "random":
        return random_attribution(ex, text, **options)
    return ex.attribute(text, method=method, **options)


def evaluate(
    ex,
    texts: Iterable[str | tuple[str, Any]],
    methods: Sequence[str] = ("ig[pad]", "ig[mask]", "sig[mask]", "grad_x_input"),
    k: float = 0.2,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    cache: bool | str | Path = True,
    progress: bool = True,
    metrics: Sequence[str] = ("log_odds", "comprehensiveness", "sufficiency"),
    return_per_text: bool = False,
):
    """Faithfulness of several attribution methods over many texts -> tidy pandas DataFrame.

    texts: strings, or (text, label) pairs (labels are ignored: metrics use the predicted class).
    methods: labels; a label in ``PAPER_METHODS`` ("ig[pad]", "ig[mask]", "sig[mask]",
        "grad_x_input", "random") carries its options, any other label is a method name for
        ``ex.attribute`` ("ig", "sig", "rollout", "gaf", ...).
    method_options: label -> options passed to ``ex.attribute`` (may override "method"), e.g.
        ``{"sig[mask]": {"steps": "auto"}}``.
    cache: True (under ``xattr_lab.zoo.cache_dir()/eval``), a folder, or False. Per-text results
        are stored by (model weights, label, options, k, text), so reruns and resumed runs skip
        work already done.
    metrics: subset of ``METRICS``.

    Returns columns method, metric, mean, ci_low, ci_high (95% t-interval), std, n, better
    ("higher"/"lower"), seconds (mean attribution time per text, as first computed).
    With ``return_per_text=True`` returns ``(table, per_text)``, per_text holding one row per
    (method, text): method, text, seconds, metrics.
    """
    import pandas as pd
    from scipy import stats
    from tqdm.auto import tqdm

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise _error(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    texts = [t[0] if isinstance(t, (tuple, list)) else t for t in texts]
    if not texts:
        raise _error("evaluate needs at least one text")
    specs = _method_specs(methods, method_options)
    fingerprint = _model_fingerprint(ex)
    folder = None
    if cache:
        from ..core.cache import cache_dir

        folder = (cache_dir() / "eval") if cache is True else Path(cache)

    paths = {label: folder / f"{_spec_key(fingerprint, label, spec, k)}.json" if folder else None
             for label, spec in specs.items()}
    stored = {label: _load_cache(path) if path else {} for label, path in paths.items()}
    dirty = {label: 0 for label in specs}
    rows = []
    # Texts outside, methods inside: an interrupted run leaves every method with the same texts done.
    with tqdm(total=len(texts) * len(specs), desc="evaluate", disable=not progress) as bar:
        for count, text in enumerate(texts, 1):
            key = _text_key(text)
            for label, spec in specs.items():
                record = stored[label].get(key)
                if record is None or any(m not in record for m in metrics):
                    started = time.perf_counter()
                    attribution = _attribute(ex, text, spec)
                    seconds = time.perf_counter() - started
                    record = scores_all(ex, text, attribution, k)
                    record["seconds"] = seconds
                    stored[label][key] = record
                    dirty[label] += 1
                rows.append({"method": label, "text": text, "seconds": record.get("seconds"),
                             **{m: record[m] for m in metrics}})
                bar.update(1)
            if count % 5 == 0 or count == len(texts):
                for label, path in paths.items():
                    if path and dirty[label]:
                        _save_cache(path, stored[label])
                        dirty[label] = 0

    per_text = pd.DataFrame(rows)
    summary = []
    for label in specs:
        part = per_text[per_text["method"] == label]
        for metric in metrics:
            values = part[metric].to_numpy(dtype=float)
            count = len(values)
            mean = float(values.mean())
            std = float(values.std(ddof=1)) if count > 1 else float("nan")
            half = float(stats.t.ppf(0.975, count - 1) * std / math.sqrt(count)) if count > 1 else float("nan")
            summary.append({"method": label, "metric": metric, "mean": mean, "ci_low": mean - half,
                            "ci_high": mean + half, "std": std, "n": count,
                            "better": "higher" if BETTER[metric] > 0 else "lower",
                            "seconds": float(part["seconds"].astype(float).mean())})
    table = pd.DataFrame(summary)
    return (table, per_text) if return_per_text else table


def wide_table(table) -> Any:
    """The tidy table as method x metric cells "mean ± half-CI" (for READMEs and notes)."""
    cells = table.assign(cell=[f"{m:.3f} ± {(h - l) / 2:.3f}" for m, l, h in zip(table["mean"], table["ci_low"], table["ci_high"])])
    return cells.pivot(index="method", columns="metric", values="cell").reindex(index=list(dict.fromkeys(table["method"])))
