"""Text perturbations that keep the prediction, and a gradient-guided attribution attack.

:func:`random_substitution`, :func:`neighbour_substitution` and :func:`attribution_attack`
substitute whole words in a text (never subword pieces or parts of contractions), keep the token
count so attributions of the original and the perturbed text align position by position, and
return a :class:`Perturbation`; :func:`perturb` dispatches by name (:data:`PERTURBATIONS`).
See docs/ARCHITECTURE.md, section "Robustness". ``ex`` is an explainer (duck-typed: this module
never imports :mod:`xattr_lab.explainer`); torch is imported inside the functions that need it.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from ...errors import InputError
from .metrics import topk_indices
from .text_edits import (Text, Words, label, original_prediction, predict, rank_scores, surrogate_gradient,
                         topk_mass)

__all__ = ["Perturbation", "random_substitution", "neighbour_substitution", "attribution_attack", "perturb",
           "PERTURBATIONS"]


@dataclass
class Perturbation:
    """A perturbed text whose prediction equals the original's.

    positions: token positions (in the model's tokens, specials included) that were substituted;
        substitution keeps the token count, so attributions of ``text`` and ``original`` align.
    replaced / replacements: the original and new tokens at those positions.
    """

    kind: str
    original: str
    text: str
    positions: list[int]
    replaced: list[str] = field(default_factory=list)
    replacements: list[str] = field(default_factory=list)
    prediction: Any = None
    budget: int = 0
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return len(self.positions)


def _try_candidates(ex, state: Text, position: int, candidate_ids: Iterable[int], words: Words,
                    keep: int) -> tuple[Text, int] | None:
    """The first candidate (in the given order) that re-tokenises cleanly and keeps the prediction.

    Clean = same token count and the same ids at every other position. Returns (new state, new id).
    """
    texts, new_ids, states = [], [], []
    for cid in candidate_ids:
        word = words.words[words.index[int(cid)]]
        text = state.substituted(position, word)
        try:
            candidate = Text(ex, text)
        except InputError:
            continue
        if len(candidate.ids) != len(state.ids):
            continue
        if any(candidate.ids[i] != state.ids[i] for i in range(len(state.ids)) if i != position):
            continue
        if candidate.ids[position] == state.ids[position]:
            continue
        texts.append(text)
        states.append(candidate)
        new_ids.append(candidate.ids)
    if not states:
        return None
    predicted = predict(ex, new_ids, state.encoding)
    for candidate, label in zip(states, predicted):
        if int(label) == keep:
            return candidate, candidate.ids[position]
    return None


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InputError(f"budget must be a positive int number of tokens to change, got {budget!r}")
    return int(budget)


def _substitute(ex, text: str, budget: int, seed: int, kind: str,
                propose: Callable[[Text, int, np.random.Generator], np.ndarray]) -> Perturbation:
    budget = _check_budget(budget)
    words = Words.of(ex)
    state = Text(ex, text)
    keep = original_prediction(ex, state)
    rng = np.random.default_rng(seed)
    positions = list(rng.permutation(state.eligible()))
    changed: list[int] = []
    replaced, replacements = [], []
    for position in positions:
        if len(changed) == budget:
            break
        position = int(position)
        found = _try_candidates(ex, state, position, propose(state, position, rng), words, keep)
        if found is None:
            continue
        replaced.append(state.encoding.tokens[position])
        state, _ = found
        replacements.append(state.encoding.tokens[position])
        changed.append(position)
    return Perturbation(kind, text, state.text, changed, replaced, replacements, label(ex, keep), budget, seed,
                        {"eligible": len(positions)})


def random_substitution(ex, text: str, budget: int = 2, seed: int = 0, *, candidates: int = 16) -> Perturbation:
    """Replace up to ``budget`` random whole words by random whole-word vocabulary tokens.

    Positions are visited in a seeded random order; at each, ``candidates`` random words are tried
    (one batched forward pass) and the first that keeps the predicted label/next token is taken.
    ``len(result.positions) <= budget`` (fewer when the text has fewer substitutable words).
    """
    words = Words.of(ex)

    def propose(state, position, rng):
        return rng.choice(words.ids, size=min(candidates, len(words.ids)), replace=False)

    return _substitute(ex, text, budget, seed, "random", propose)


def neighbour_substitution(ex, text: str, budget: int = 2, seed: int = 0, *, neighbours: int = 16) -> Perturbation:
    """Replace up to ``budget`` random whole words by a near neighbour in embedding space.

    Candidates are the ``neighbours`` whole-word vocabulary tokens with the highest cosine
    similarity of input (word) embeddings, excluding special tokens and subword pieces; the nearest
    one that keeps the prediction is taken. Positions are visited in a seeded random order.
    """
    import torch

    words = Words.of(ex)
    table = ex.model.get_input_embeddings().weight

    def propose(state, position, rng):
        token_id = state.ids[position]
        with torch.no_grad():
            return words.nearest(token_id, table[token_id], neighbours)

    return _substitute(ex, text, budget, seed, "neighbour", propose)


def attribution_attack(ex, text: str, method: str = "attention", budget: int = 2, seed: int = 0, *, k: int = 3,
                       neighbours: int = 16, candidates: int = 6, rank_by: str = "abs", target: Any = None,
                       original: Any = None, **method_options) -> Perturbation:
    """Gradient-guided attributional attack (in the spirit of Ghorbani et al. 2019), label kept.

    Greedy, ``budget`` steps. T = the original top-k non-special tokens of ``method``'s scores
    (ranked by ``rank_by``). Each step:
    1. guide: the gradient g of a differentiable surrogate — the share of |gradient x input|
       saliency held by T — with respect to the word embeddings (second-order autograd);
    2. propose: for every unchanged whole-word position p, its ``neighbours`` nearest whole words v
       (cosine); rank the substitutions by the first-order change (e_v - e_p) . g_p, lowest first;
    3. pick: of the best-ranked substitutions that re-tokenise cleanly and keep the prediction (up to
       ``candidates``), run ``method`` on each and keep the one that leaves the least attribution
       mass (|scores| share) on T.
    The step is taken even when no candidate lowers the mass, so the budget is spent as for the
    random baselines. ``seed`` breaks ties among equal surrogate ranks. Cost per step: one
    double-backward pass plus ``candidates`` runs of ``method``. ``original``: the method's
    Attribution of ``text`` when already computed (saves one run). ``info["scores"]`` holds the
    method's scores on the returned text (None when nothing was changed).
    """
    import torch

    budget = _check_budget(budget)
    words = Words.of(ex)
    table = ex.model.get_input_embeddings().weight.detach().float().cpu()
    state = Text(ex, text)
    keep_label = original_prediction(ex, state)
    if original is None:
        original = ex.attribute(text, method=method, target=target, **method_options)
    scores = np.asarray(original.scores, dtype=np.float64)
    if scores.shape != (len(state.ids),):
        raise InputError(f"original has {scores.shape} scores for a text of {len(state.ids)} tokens")
    final_scores = None
    keep = ~np.asarray(state.encoding.special_mask)
    ranked = rank_scores(scores, rank_by)
    inner = np.flatnonzero(keep)
    k_eff = min(k, inner.size)
    top = inner[topk_indices(ranked[inner], k_eff)]
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=state.encoding.input_ids, attention_mask=state.encoding.attention_mask).logits
    position = ex.readout_position(state.encoding)
    resolved = ex.resolve_target(target, ex.target_logits(logits, position), position)
    rng = np.random.default_rng(seed)
    changed, replaced, replacements, masses = [], [], [], [topk_mass(scores, keep, top)]
    for _ in range(budget):
        open_positions = [p for p in state.eligible() if p not in changed]
        if not open_positions:
            break
        guide = surrogate_gradient(ex, state.ids, state.encoding, resolved, top, keep)
        proposals = []  # (first-order change, tie-break, position, vocab id)
        for p in open_positions:
            near = words.nearest(state.ids[p], table[state.ids[p]], neighbours)
            change = ((table[torch.as_tensor(near)] - table[state.ids[p]]) @ guide[p]).numpy()
            proposals.extend(zip(change, rng.random(len(near)), [p] * len(near), near))
        proposals.sort(key=lambda item: (item[0], item[1]))
        best = None
        tried = 0
        for start in range(0, len(proposals), 4 * candidates):
            if tried >= candidates:
                break
            for _, _, p, cid in proposals[start:start + 4 * candidates]:
                if tried >= candidates:
                    break
                found = _try_candidates(ex, state, int(p), [int(cid)], words, keep_label)
                if found is None:
                    continue
                tried += 1
                candidate, _ = found
                attribution = ex.attribute(candidate.text, method=method, target=target, **method_options)
                mass = topk_mass(np.asarray(attribution.scores, dtype=np.float64), keep, top)
                if best is None or mass < best[0]:
                    best = (mass, int(p), candidate, attribution.scores)
        if best is None:
            break
        mass, p, candidate, final_scores = best
        replaced.append(state.encoding.tokens[p])
        replacements.append(candidate.encoding.tokens[p])
        changed.append(p)
        masses.append(mass)
        state = candidate
    return Perturbation("attack", text, state.text, changed, replaced, replacements, label(ex, keep_label), budget,
                        seed, {"method": method, "k": k_eff, "top": top.tolist(), "topk_mass": masses,
                               "scores": None if final_scores is None else np.asarray(final_scores, dtype=np.float64)})


PERTURBATIONS: dict[str, Callable[..., Perturbation]] = {
    "random": random_substitution,
    "neighbour": neighbour_substitution,
    "attack": attribution_attack,
}


def perturb(ex, text: str, kind: str = "random", budget: int = 2, seed: int = 0, **options) -> Perturbation:
    """Dispatch to a perturbation by name: "random", "neighbour" or "attack"."""
    if kind not in PERTURBATIONS:
        raise InputError(f"unknown perturbation {kind!r}; choose one of {list(PERTURBATIONS)}")
    return PERTURBATIONS[kind](ex, text, budget=budget, seed=seed, **options)

