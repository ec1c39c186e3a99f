"""Attention geometry: per-head entropy, cone index of hidden states, rule-based head patterns.

- :func:`attention_entropy`: attn (L, H, n, n) -> (L, H), the mean over valid query rows of
  -Σ_j a_ij ln a_ij, in nats (0 ln 0 = 0). Uniform rows over n keys give ln n; one-hot rows 0.
- :func:`cone_index`: X (n, d) -> ‖Σ_i x_i/‖x_i‖‖₂ in [0, n] (``normalise=True`` divides by n):
  n when all vectors point the same way, 0 when they cancel. :func:`cone_indices` does it for every
  layer's hidden states (L+1, n, d) -> (L+1,).
- :func:`cone_index_floor`: the chance level, √n (normalised 1/√n): the root-mean-square cone index
  of n independent uniformly random directions, exactly, in any dimension (E‖Σu_i‖² = n). A
  normalised cone index of 0.25 on 16 tokens is chance level, not "a quarter aligned".
  :func:`cone_index_above_floor` rescales (c − floor)/(1 − floor): 0 at the floor, 1 when all
  vectors are parallel (ours).
- :func:`pattern_scores` / :func:`classify_patterns` / :func:`head_patterns`: a rule-based head
  taxonomy of our own (:data:`TAXONOMY`; not a paper's, and not gated like one), every threshold in
  :data:`PATTERN_THRESHOLDS` (see :data:`PATTERNS`).
- :func:`head_stats`: all of the above for a text or a list of texts -> ``HeadStats``
  (what ``Explainer.heads`` returns).

Arrays may be numpy or torch; results are numpy float64.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .registry import implements

#: What the head patterns are: our rule, not a published taxonomy or its gates.
TAXONOMY = ("xattr-lab's own rule-based taxonomy (not from a paper): a head gets the positional pattern "
            "(diagonal, previous, next, first, sink) whose mean attention mass over query rows 1..n-1 is largest, "
            "if that mass is >= 0.5; else 'broad' if its mean normalised row entropy is >= 0.75; else 'mixed'. "
            "Statistics are averaged over the texts before classifying.")

#: pattern name -> what it means. The statistic of each positional pattern is the mean, over the
#: query rows i = 1..n-1 (row 0 is skipped: in causal models it can only see itself), of the
#: attention mass row i puts on the keys named below.
PATTERNS: dict[str, str] = {
    "diagonal": "attends to itself (key j = i)",
    "previous": "attends to the previous token (j = i - 1)",
    "next": "attends to the next token (j = i + 1; encoders only)",
    "first": "attends to the first token ([CLS] / BOS / first word): a first-token sink",
    "sink": "attends to separators and punctuation ([SEP], EOS, '.', ',', ...), other than the first token and itself",
    "broad": "no dominant position; rows spread out (mean normalised entropy >= threshold)",
    "mixed": "none of the above",
}

#: Every threshold of the taxonomy, in one place. A head is given the positional pattern
#: (diagonal, previous, next, first, sink) with the largest statistic when that statistic reaches
#: its threshold; otherwise "broad" when its mean normalised row entropy (entropy / ln(number of
#: keys the row can see)) reaches PATTERN_THRESHOLDS["broad"]; otherwise "mixed".
PATTERN_THRESHOLDS: dict[str, float] = {
    "diagonal": 0.5,
    "previous": 0.5,
    "next": 0.5,
    "first": 0.5,
    "sink": 0.5,
    "broad": 0.75,
}
POSITIONAL = ("diagonal", "previous", "next", "first", "sink")

_MARKERS = ("##", "Ġ", "▁", "Ċ")


def _as_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    array = np.asarray(x, dtype=np.float64)
    if np.isnan(array).any():
        raise InputError(f"{name} holds NaN values")
    return array


def _check_attn(attn: Any) -> np.ndarray:
    attn = _as_array(attn, "attn")
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise InputError(f"attn must have shape (L, H, n, n), got {attn.shape}")
    return attn


def _valid_mask(mask: Any, n: int) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask).reshape(-1).astype(bool)
    if mask.shape != (n,):
        raise InputError(f"mask must have one entry per token ({n}), got {mask.shape}")
    if not mask.any():
        raise InputError("mask marks no token as valid")
    return mask


def attention_entropy(attn: Any, mask: Any = None) -> np.ndarray:
    """Mean row entropy of every head: attn (L, H, n, n) -> (L, H), nats.

    mask: optional (n,) bool/0-1 of valid tokens (padding = False): only valid query rows are
    averaged. Each row is used as given (post-softmax rows already sum to 1 over valid keys).
    """
    from scipy.special import xlogy

    attn = _check_attn(attn)
    if (attn < 0).any():
        raise InputError("attention probabilities must be non-negative")
    valid = _valid_mask(mask, attn.shape[-1])
    rows = -xlogy(attn, attn).sum(-1)  # (L, H, n)
    return rows[..., valid].mean(-1)


def cone_index(X: Any, normalise: bool = False) -> float:
    """‖Σ_i x_i/‖x_i‖‖₂ for X (n, d), in [0, n]; ``normalise=True`` divides by n (-> [0, 1]).

    Zero rows have no direction and contribute nothing (they still count in n).
    """
    X = _as_array(X, "X")
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(f"X must have shape (n, d) with n >= 1, got {X.shape}")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    units = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    value = float(np.linalg.norm(units.sum(0)))
    return value / X.shape[0] if normalise else value


def cone_index_floor(n: Any, normalise: bool = True) -> Any:
    """Chance level of the cone index for n vectors: √n (``normalise=True``: 1/√n).

    The root-mean-square cone index of n independent uniformly random unit vectors, exactly, in any
    dimension d (E‖Σ u_i‖² = n since E⟨u_i, u_j⟩ = 0 for i ≠ j); the mean is slightly below it for
    small d. n may be an int or an array of lengths.
    """
    n = np.asarray(n, dtype=np.float64)
    if (n < 1).any():
        raise InputError("the cone-index floor needs n >= 1 vectors")
    floor = 1.0 / np.sqrt(n) if normalise else np.sqrt(n)
    return float(floor) if floor.ndim == 0 else floor


def cone_index_above_floor(normalised: Any, n: Any) -> Any:
    """(c − 1/√n) / (1 − 1/√n) for a normalised cone index c of n vectors (ours): 0 at the
    random-direction floor, 1 when all are parallel, negative below the floor; NaN for n = 1."""
    floor = np.asarray(cone_index_floor(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(floor < 1.0, (np.asarray(normalised, dtype=np.float64) - floor) / (1.0 - floor), np.nan)
    return float(out) if out.ndim == 0 else out


def cone_indices(hidden_states: Any, normalise: bool = False) -> np.ndarray:
    """Cone index of each layer: hidden states (L+1, n, d) -> (L+1,) float64."""
    hidden = _as_array(hidden_states, "hidden_states")
    if hidden.ndim != 3:
        raise InputError(f"hidden_states must have shape (L+1, n, d), got {hidden.shape}")
    return np.array([cone_index(layer, normalise=normalise) for layer in hidden])


def is_punctuation(token: str) -> bool:
    """True when a token, without subword markers, is only punctuation/symbols ("." "," "Ġ!" "...")."""
    core = token
    for marker in _MARKERS:
        core = core.replace(marker, "")
    core = core.strip()
    return bool(core) and all(unicodedata.category(c)[0] in "PS" for c in core)


def _is_causal(attn: np.ndarray) -> bool:
    upper = np.triu(np.ones(attn.shape[-2:], dtype=bool), k=1)
    return bool(np.all(attn[..., upper] <= 1e-9))


def pattern_scores(attn: Any, tokens: Sequence[str], special_mask: Sequence[bool] | None = None,
                   causal: bool | None = None) -> dict[str, np.ndarray]:
    """The statistics behind :func:`classify_patterns`: name -> (L, H) float64.

    Keys: the positional patterns (mean attention mass on the pattern's keys over query rows
    1..n-1) and "broad" (mean normalised row entropy over the same rows). ``causal`` is inferred
    from the maps (no weight above the diagonal) when None. Needs n >= 2.
    """
    attn = _check_attn(attn)
    n = attn.shape[-1]
    if len(tokens) != n:
        raise InputError(f"{len(tokens)} tokens for attention maps over {n} tokens")
    if n < 2:
        raise InputError("head patterns need at least 2 tokens")
    special = np.zeros(n, dtype=bool) if special_mask is None else np.asarray(special_mask, dtype=bool)
    if causal is None:
        causal = _is_causal(attn)
    rows = np.arange(1, n)
    sink_keys = special | np.array([is_punctuation(t) for t in tokens])
    sink_keys[0] = False
    sink_matrix = np.broadcast_to(sink_keys, (n, n)).copy()
    np.fill_diagonal(sink_matrix, False)
    scores = {
        "diagonal": attn[..., rows, rows].mean(-1),
        "previous": attn[..., rows, rows - 1].mean(-1),
        "next": attn[..., rows[:-1], rows[:-1] + 1].mean(-1) if n > 2 else np.zeros(attn.shape[:2]),
        "first": attn[..., rows, 0].mean(-1),
        "sink": (attn * sink_matrix).sum(-1)[..., rows].mean(-1),
    }
    from scipy.special import xlogy

    entropy = -xlogy(attn, attn).sum(-1)[..., rows]  # (L, H, n-1)
    keys = (rows + 1) if causal else np.full(n - 1, n)
    scores["broad"] = (entropy / np.log(keys)).mean(-1)
    return {name: np.asarray(value, dtype=np.float64) for name, value in scores.items()}


def classify_patterns(scores: dict[str, Any], thresholds: dict[str, float] | None = None) -> list[list[str]]:
    """Pattern names (L lists of H str) from :func:`pattern_scores` output (or its mean over texts).

    Rule: the positional pattern with the largest statistic if it reaches its threshold, else
    "broad" if the normalised entropy reaches its threshold, else "mixed".
    """
    limits = dict(PATTERN_THRESHOLDS, **(thresholds or {}))
    stacked = np.stack([np.asarray(scores[name], dtype=np.float64) for name in POSITIONAL])  # (5, L, H)
    best = stacked.argmax(0)
    best_value = stacked.max(0)
    broad = np.asarray(scores["broad"], dtype=np.float64)
    L, H = best.shape
    names = []
    for l in range(L):
        row = []
        for h in range(H):
            name = POSITIONAL[best[l, h]]
            if best_value[l, h] >= limits[name]:
                row.append(name)
            elif broad[l, h] >= limits["broad"]:
                row.append("broad")
            else:
                row.append("mixed")
        names.append(row)
    return names


def head_patterns(attn: Any, tokens: Sequence[str], special_mask: Sequence[bool] | None = None,
                  causal: bool | None = None, thresholds: dict[str, float] | None = None) -> list[list[str]]:
    """Pattern name of every head: attn (L, H, n, n) -> L lists of H names from :data:`PATTERNS`."""
    return classify_patterns(pattern_scores(attn, tokens, special_mask, causal), thresholds)


def pattern_counts(patterns: Sequence[Sequence[str]]) -> dict[str, int]:
    """How many heads fall in each pattern (every name in :data:`PATTERNS`, zeros included)."""
    counts = {name: 0 for name in PATTERNS}
    for row in patterns:
        for name in row:
            counts[name] = counts.get(name, 0) + 1
    return counts


@implements("heads")
def head_stats(ex, text_or_texts: str | Sequence[str], *, max_map_tokens: int = 128, truncate: bool = False,
               thresholds: dict[str, float] | None = None, progress: bool = False):
    """Attention geometry of a text, or the mean over a list of texts -> ``HeadStats``.

    entropy (L, H) and cone indices (L+1,) are averaged over texts; ``options["cone_index_floor"]`` is
    the mean random-direction floor 1/√n of the texts' lengths and ``options["cone_index_above_floor"]``
    the mean per-text (c − 1/√n)/(1 − 1/√n) per layer; patterns (ours, :data:`TAXONOMY`) are classified from
    the pattern statistics averaged over texts (kept in ``pattern_scores``). ``attentions`` holds
    the first text's maps (L, H, n, n) when n <= ``max_map_tokens`` (else None). One forward pass
    per text (``ex.capture(text, hidden_states=True)``).
    """
    from ..results import HeadStats

    texts = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
    texts = [t[0] if isinstance(t, (tuple, list)) else t for t in texts]
    if not texts:
        raise InputError("give a text or a non-empty list of texts")
    iterator = texts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(texts, desc="heads")
    entropy, cone, cone_normalised, above, lengths, first = [], [], [], [], [], None
    totals: dict[str, np.ndarray] = {}
    scored = 0
    for text in iterator:
        cap = ex.capture(text, hidden_states=True, truncate=truncate)
        attn = cap.attentions.double().numpy()
        mask = cap.encoding.attention_mask[0].cpu().numpy().astype(bool)
        entropy.append(attention_entropy(attn, mask))
        hidden = cap.hidden_states.double().numpy()[:, mask]
        cone.append(cone_indices(hidden))
        cone_normalised.append(cone_indices(hidden, normalise=True))
        lengths.append(int(mask.sum()))
        above.append(cone_index_above_floor(cone_normalised[-1], lengths[-1]))
        if len(cap.tokens) >= 2:
            scores = pattern_scores(attn, cap.tokens, cap.encoding.special_mask, causal=ex.adapter.causal)
            for name, value in scores.items():
                totals[name] = totals.get(name, 0) + value
            scored += 1
        if first is None:
            first = cap
    mean_scores = {name: value / scored for name, value in totals.items()}
    patterns = classify_patterns(mean_scores, thresholds) if mean_scores else []
    maps = first.attentions.double().numpy() if len(first.tokens) <= max_map_tokens else None
    return HeadStats(
        tokens=first.tokens,
        entropy=np.mean(entropy, axis=0),
        cone_index=np.mean(cone, axis=0),
        cone_index_normalised=np.mean(cone_normalised, axis=0),
        patterns=patterns,
        attentions=maps,
        texts=texts,
        model=ex.name,
        options={"max_map_tokens": max_map_tokens, "thresholds": dict(PATTERN_THRESHOLDS, **(thresholds or {})),
                 "pattern_scores": {name: value.tolist() for name, value in mean_scores.items()},
                 "taxonomy": TAXONOMY, "tokens_per_text": lengths,
                 "cone_index_floor": float(np.mean(cone_index_floor(lengths))),
                 "cone_index_above_floor": np.mean(above, axis=0).tolist()},
    )
