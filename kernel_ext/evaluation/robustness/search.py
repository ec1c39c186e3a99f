"""The four perturbation arms of the paired robustness experiment, with equal query budgets.

A *query* is one run of the attribution method on a candidate input. Label checks (forward passes
that keep only candidates whose prediction is unchanged) are not queries, and every arm makes them.
Every arm takes ``protect``: token positions it must not change (the original top-k tokens, for the
"top-k kept" half of the experiment). docs/ARCHITECTURE.md, section "Robustness".

- :func:`neighbour_search` with ``queries=1``: *neighbour-random*, one unselected draw: greedy over
  ``budget`` steps; each step's candidates are every (open whole word p, one of its ``neighbours``
  nearest whole words v by cosine of input embeddings), in a uniformly random order, and the first
  that keeps the prediction is taken. One query (the final attribution).
- :func:`neighbour_search` with ``queries=Q``: *random search*, the same proposals, but each step
  evaluates Q label-keeping candidates with the method and keeps the one the objective likes best:
  budget·Q queries, the attack's budget.
- :func:`gradient_search`: *the attack* (after Ghorbani et al. 2019), the same greedy loop and
  objective, but the Q candidates of each step are the best-ranked by a first-order estimate:
  (e_v − e_p)·g_p with g the gradient of a surrogate (the share of |gradient × input| saliency on the
  original top-``surrogate_k`` tokens), lowest first. budget·Q queries plus one double-backward
  pass per step.
- :func:`embedding_noise`: *dense noise*, a Gaussian direction added to the word-embedding rows of
  every open token with a fixed total (Frobenius) norm; one query. Rows are those of the vocabulary
  entries in the text, so a word that occurs twice gets the same noise; [PAD]/[MASK] baselines are
  untouched unless they occur in the text. The embedding matrix is restored afterwards (also on error).

Objective of both searches (ours): the mean over ``ks`` of the top-k intersection between the
original and the candidate's |scores| over non-special tokens, lowest first, ties broken by the
share of |scores| left on the original top-``surrogate_k``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ...errors import InputError
from .metrics import topk_indices, topk_intersection
from .perturbations import Perturbation
from .text_edits import Text, Words, label, original_prediction, predict, surrogate_gradient

__all__ = ["neighbour_search", "gradient_search", "embedding_noise", "protected_positions", "objective_of",
           "embedding_change_norm", "predicted_label"]


def predicted_label(attribution) -> str | None:
    """The argmax label of an attribution's ``prediction`` (label -> probability), None if absent."""
    prediction = getattr(attribution, "prediction", None) or {}
    return max(prediction, key=prediction.get) if prediction else None


def protected_positions(scores: Sequence[float], special_mask: Sequence[bool], word_ids: Sequence[Any],
                        k: int) -> list[int]:
    """Token positions of the top-k non-special tokens by |score| and of the tokens of the top-k words.

    Word score = the sum of its tokens' signed scores (``word_ids``: the tokenizer's word index of
    each token, None for specials), ranked by |·|.
    """
    scores = np.abs(np.nan_to_num(np.asarray(scores, dtype=np.float64)))
    inner = np.flatnonzero(~np.asarray(special_mask, dtype=bool))
    if inner.size == 0:
        return []
    out = set(int(p) for p in inner[topk_indices(scores[inner], min(k, inner.size))])
    signed = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    words = sorted({w for w in word_ids if w is not None})
    if words:
        totals = np.array([sum(signed[i] for i, w in enumerate(word_ids) if w == word) for word in words])
        top_words = {words[j] for j in topk_indices(np.abs(totals), min(k, len(words)))}
        out |= {i for i, w in enumerate(word_ids) if w in top_words}
    return sorted(out)


def objective_of(original: np.ndarray, keep: np.ndarray, ks: Sequence[int], surrogate_k: int) -> Callable:
    """The search objective: scores -> (mean top-k intersection over ks, top-k mass), lower is better."""
    a = np.abs(np.asarray(original, dtype=np.float64))[keep]
    ks = [k for k in ks if k <= a.size] or [a.size]
    top = topk_indices(a, min(surrogate_k, a.size))

    def objective(scores) -> tuple[float, float]:
        b = np.abs(np.nan_to_num(np.asarray(scores, dtype=np.float64)))[keep]
        total = b.sum()
        mass = float(b[top].sum() / total) if total > 0 else 0.0
        return float(np.mean([topk_intersection(a, b, k) for k in ks])), mass

    return objective


def _nearest(words: Words, table, token_id: int, count: int) -> np.ndarray:
    """``words.nearest`` for a vocabulary token, memoised on the vocabulary object (clean embeddings)."""
    import torch

    cache = words.__dict__.setdefault("_nearest_cache", {})
    key = (int(token_id), int(count))
    if key not in cache:
        with torch.no_grad():
            cache[key] = words.nearest(token_id, table[token_id], count)
    return cache[key]


def _valid(ex, state: Text, pairs: Iterable[tuple[int, int]], words: Words, keep: int) -> list[tuple[int, Text]]:
    """The (position, new state) of each proposed (position, vocabulary id) that re-tokenises cleanly
    (same length, same ids elsewhere, a new id at the position) and keeps the prediction; in order."""
    states = []
    for position, cid in pairs:
        text = state.substituted(position, words.words[words.index[int(cid)]])
        try:
            candidate = Text(ex, text)
        except InputError:
            continue
        if len(candidate.ids) != len(state.ids) or candidate.ids[position] == state.ids[position]:
            continue
        if any(candidate.ids[i] != state.ids[i] for i in range(len(state.ids)) if i != position):
            continue
        states.append((position, candidate))
    if not states:
        return []
    labels = predict(ex, [s.ids for _, s in states], state.encoding)
    return [(p, s) for (p, s), label in zip(states, labels) if int(label) == keep]


def _greedy(ex, text: str, method: str, kind: str, budget: int, queries: int, seed: int, protect: Sequence[int],
            objective: Callable | None, propose: Callable, method_options: dict) -> Perturbation:
    """The loop both searches share: ``budget`` steps, ``queries`` evaluated candidates per step."""
    if queries < 1 or budget < 1:
        raise InputError(f"budget and queries must be positive ints, got {budget!r}, {queries!r}")
    words = Words.of(ex)
    state = Text(ex, text)
    keep = original_prediction(ex, state)
    rng = np.random.default_rng(seed)
    changed: list[int] = []
    replaced, replacements = [], []
    used, final = 0, None
    for _ in range(budget):
        open_positions = [p for p in state.eligible() if p not in changed and p not in set(protect)]
        if not open_positions:
            break
        found: list[tuple[int, Text]] = []
        for chunk in propose(state, open_positions, rng, words):
            found.extend(_valid(ex, state, chunk, words, keep))
            if len(found) >= queries:
                break
        found = found[:queries]
        if not found:
            break
        if queries == 1:  # unselected: no query until the end
            best = (found[0][0], found[0][1], None)
        else:
            best = None
            for position, candidate in found:
                attribution = ex.attribute(candidate.text, method=method, **method_options)
                used += 1
                value = objective(attribution.scores)
                if best is None or value < best[3]:
                    best = (position, candidate, attribution, value)
        position, candidate, final = best[0], best[1], best[2]
        replaced.append(state.encoding.tokens[position])
        replacements.append(candidate.encoding.tokens[position])
        changed.append(position)
        state = candidate
    if changed and final is None:
        final = ex.attribute(state.text, method=method, **method_options)
        used += 1
    return Perturbation(kind, text, state.text, changed, replaced, replacements, label(ex, keep), budget, seed,
                        {"method": method, "queries": used, "protected": list(protect),
                         "scores": None if final is None else np.asarray(final.scores, dtype=np.float64),
                         "predicted": None if final is None else predicted_label(final)})


def neighbour_search(ex, text: str, method: str, budget: int = 2, queries: int = 1, seed: int = 0, *,
                     protect: Sequence[int] = (), objective: Callable | None = None, neighbours: int = 16,
                     method_options: dict | None = None) -> Perturbation:
    """Neighbour-random (``queries=1``) or random search (``queries=Q`` per step, needs ``objective``).

    ``info["scores"]``: the method's scores on the returned text; ``info["queries"]``: method runs used.
    """
    import torch

    if queries > 1 and objective is None:
        raise InputError("random search (queries > 1) needs an objective to pick among its candidates")
    table = ex.model.get_input_embeddings().weight

    def propose(state, open_positions, rng, words):
        # the candidate set the attack ranks, in a uniformly random order
        pairs = [(p, int(v)) for p in open_positions for v in _nearest(words, table, state.ids[p], neighbours)]
        order = rng.permutation(len(pairs))
        for start in range(0, len(pairs), queries + 2):  # label checks in small batches: most candidates pass
            yield [pairs[i] for i in order[start:start + queries + 2]]

    kind = "neighbour" if queries == 1 else "search"
    return _greedy(ex, text, method, kind, budget, queries, seed, protect, objective, propose, method_options or {})


def gradient_search(ex, text: str, method: str, budget: int = 2, queries: int = 4, seed: int = 0, *,
                    protect: Sequence[int] = (), objective: Callable, original: Sequence[float],
                    surrogate_k: int = 3, neighbours: int = 16, method_options: dict | None = None,
                    target: Any = None) -> Perturbation:
    """The gradient-guided attack: ``queries`` candidates per step ranked by the surrogate gradient."""
    import torch

    table = ex.model.get_input_embeddings().weight.detach().float().cpu()
    first = Text(ex, text)
    keep_mask = ~np.asarray(first.encoding.special_mask)
    scores = np.abs(np.nan_to_num(np.asarray(original, dtype=np.float64)))
    inner = np.flatnonzero(keep_mask)
    top = inner[topk_indices(scores[inner], min(surrogate_k, inner.size))]
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=first.encoding.input_ids, attention_mask=first.encoding.attention_mask).logits
    position = ex.readout_position(first.encoding)
    resolved = ex.resolve_target(target, ex.target_logits(logits, position), position)

    def propose(state, open_positions, rng, words):
        guide = surrogate_gradient(ex, state.ids, state.encoding, resolved, top, keep_mask)
        ranked = []
        for p in open_positions:
            near = _nearest(words, table, state.ids[p], neighbours)
            change = ((table[torch.as_tensor(near)] - table[state.ids[p]]) @ guide[p]).numpy()
            ranked.extend(zip(change, rng.random(len(near)), [p] * len(near), near))
        ranked.sort(key=lambda item: (item[0], item[1]))
        pairs = [(int(p), int(cid)) for _, _, p, cid in ranked]
        for start in range(0, len(pairs), queries + 2):
            yield pairs[start:start + queries + 2]

    return _greedy(ex, text, method, "attack", budget, queries, seed, protect, objective, propose,
                   method_options or {})


def embedding_change_norm(ex, original: str, perturbed: str) -> float:
    """‖E(perturbed) − E(original)‖_F over word embeddings of two texts with the same token count."""
    import torch

    a, b = ex.encode(original).input_ids, ex.encode(perturbed).input_ids
    if a.shape != b.shape:
        raise InputError("the two texts must have the same number of tokens")
    with torch.no_grad():
        return float((ex.embed(b) - ex.embed(a)).double().norm())


@contextlib.contextmanager
def _noisy_rows(ex, ids: Sequence[int], noise):
    import torch

    weight = ex.model.get_input_embeddings().weight
    index = torch.as_tensor(list(ids), dtype=torch.long, device=weight.device)
    saved = weight.detach()[index].clone()
    try:
        with torch.no_grad():
            weight[index] += noise.to(weight.device, weight.dtype)
        yield
    finally:
        with torch.no_grad():
            weight[index] = saved


def embedding_noise(ex, text: str, method: str, norm: float | None = None, scale: float = 0.1, seed: int = 0, *,
                    protect: Sequence[int] = (), method_options: dict | None = None) -> Perturbation:
    """Dense Gaussian noise on the word embeddings of every open token, one query.

    ``norm``: the total Frobenius norm of the noise (the experiment matches it to the
    neighbour-random arm's embedding change on the same text); None: each row gets a norm of
    ``scale`` times its embedding's norm. ``positions`` is empty when the prediction changed
    (``info["dropped"]`` says why); ``info["scores"]`` holds the method's scores under the noise.
    """
    import torch

    Words.of(ex)  # build the whole-word cache from clean embeddings before touching them
    state = Text(ex, text)
    keep = original_prediction(ex, state)
    open_positions = [p for p, special in enumerate(state.encoding.special_mask) if not special and p not in set(protect)]
    ids = sorted({state.ids[p] for p in open_positions})
    info: dict[str, Any] = {"method": method, "queries": 0, "protected": list(protect), "scores": None}
    if not ids:
        info["dropped"] = "no open token to perturb"
        return Perturbation("noise", text, text, [], prediction=label(ex, keep), seed=seed, info=info)
    generator = torch.Generator().manual_seed(int(seed))
    weight = ex.model.get_input_embeddings().weight.detach().float().cpu()
    rows = weight[torch.as_tensor(ids)]
    z = torch.randn(rows.shape, generator=generator)
    if norm is None:
        noise = z / z.norm(dim=1, keepdim=True) * rows.norm(dim=1, keepdim=True) * float(scale)
    else:
        counts = torch.as_tensor([sum(state.ids[p] == i for p in open_positions) for i in ids], dtype=torch.float32)
        noise = z * (float(norm) / float((z.pow(2).sum(1) * counts).sum().sqrt()))  # Σ over tokens = norm²
    info["norm"] = float(norm) if norm is not None else None
    with _noisy_rows(ex, ids, noise):
        predicted = int(predict(ex, [state.ids], state.encoding)[0])
        if predicted != keep:
            info["dropped"] = "the noise changed the prediction"
            return Perturbation("noise", text, text, [], prediction=label(ex, keep), seed=seed, info=info)
        attribution = ex.attribute(text, method=method, **(method_options or {}))
        info.update(scores=np.asarray(attribution.scores, dtype=np.float64), queries=1,
                    predicted=predicted_label(attribution))
    return Perturbation("noise", text, text, open_positions, prediction=label(ex, keep), seed=seed, info=info)
