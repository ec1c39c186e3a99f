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

from ..errors import InputError
from .robustness import topk_indices

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


class _Words:
    """Whole-word vocabulary of one explainer: ids, unit-norm embeddings, strings (cached)."""

    _cache: "weakref.WeakKeyDictionary[Any, _Words]" = weakref.WeakKeyDictionary()

    def __init__(self, ex):
        import torch

        tokenizer = ex.tokenizer
        special = set(tokenizer.all_special_ids)
        size = len(tokenizer)
        vocab_tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        wordpiece = "##s" in tokenizer.get_vocab()
        decoded = tokenizer.batch_decode([[i] for i in range(size)], clean_up_tokenization_spaces=False)
        ids, words = [], []
        for i, (token, word) in enumerate(zip(vocab_tokens, decoded)):
            if i in special or token is None or token.startswith("##"):
                continue
            stripped = word.strip()
            # word-start pieces only: WordPiece pieces carry "##"; byte-level BPE word starts decode
            # with a leading space ("Ġword")
            if len(stripped) >= 2 and stripped.isascii() and stripped.isalpha() and (wordpiece or word.startswith(" ")):
                ids.append(i)
                words.append(stripped)
        if not ids:
            raise InputError(f"{ex.name}'s vocabulary has no whole-word tokens to substitute")
        self.ids = np.asarray(ids, dtype=np.int64)
        self.words = words
        self.index = {int(i): j for j, i in enumerate(ids)}
        with torch.no_grad():
            table = ex.model.get_input_embeddings().weight.detach().float().cpu()[torch.as_tensor(self.ids)]
        self.unit = torch.nn.functional.normalize(table, dim=1)

    @classmethod
    def of(cls, ex) -> "_Words":
        words = cls._cache.get(ex)
        if words is None:
            words = cls._cache[ex] = cls(ex)
        return words

    def nearest(self, token_id: int, embedding, count: int) -> np.ndarray:
        """Vocabulary ids of the ``count`` whole words nearest (cosine) to ``embedding``, nearest first."""
        import torch

        query = torch.nn.functional.normalize(embedding.detach().float().cpu().reshape(1, -1), dim=1)
        similarity = (self.unit @ query.T).ravel()
        own = self.index.get(int(token_id))
        if own is not None:
            similarity[own] = -float("inf")
        top = torch.topk(similarity, min(count, similarity.numel() - 1)).indices.numpy()
        return self.ids[top]


_APOSTROPHES = "'\u2019`"


class _Text:
    """One text with its encoding and character offsets; builds substituted variants."""

    def __init__(self, ex, text: str):
        self.ex = ex
        self.text = text
        self.encoding = ex.encode(text)
        self.ids = self.encoding.input_ids[0].tolist()
        offsets = ex.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) != len(self.ids):
            raise InputError("the tokenizer's offsets do not match its tokens; substitution needs a fast tokenizer")
        self.offsets = [tuple(o) for o in offsets]

    def eligible(self) -> list[int]:
        """Positions holding a whole alphabetic word (not special, not a piece of a longer word)."""
        out = []
        text = self.text
        for pos, ((start, end), special) in enumerate(zip(self.offsets, self.encoding.special_mask)):
            if special or end <= start:
                continue
            core = text[start:end].strip()
            if len(core) < 1 or not core.isalpha():
                continue
            core_start = start + (len(text[start:end]) - len(text[start:end].lstrip()))
            before = text[core_start - 1] if core_start > 0 else " "
            after = text[end] if end < len(text) else " "
            if before.isalnum() or after.isalnum() or before in _APOSTROPHES or after in _APOSTROPHES:
                continue  # a piece of a longer word or of a contraction ("it's", "don't")
            out.append(pos)
        return out

    def substituted(self, position: int, word: str) -> str:
        start, end = self.offsets[position]
        span = self.text[start:end]
        lead = span[: len(span) - len(span.lstrip())]
        return self.text[:start] + lead + word + self.text[end:]


def _prediction_index(ex, logits, encoding) -> np.ndarray:
    """argmax of the explained logits row for each batch item: (B,) ints."""
    position = ex.readout_position(encoding)
    rows = logits if position is None else logits[:, position]
    return rows.argmax(dim=-1).cpu().numpy()


def _predict(ex, batch_ids: list[list[int]], encoding) -> np.ndarray:
    import torch

    ids = torch.as_tensor(batch_ids, dtype=torch.long, device=ex.device)
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return _prediction_index(ex, logits, encoding)


def _try_candidates(ex, state: _Text, position: int, candidate_ids: Iterable[int], words: _Words,
                    keep: int) -> tuple[_Text, int] | None:
    """The first candidate (in the given order) that re-tokenises cleanly and keeps the prediction.

    Clean = same token count and the same ids at every other position. Returns (new state, new id).
    """
    texts, new_ids, states = [], [], []
    for cid in candidate_ids:
        word = words.words[words.index[int(cid)]]
        text = state.substituted(position, word)
        try:
            candidate = _Text(ex, text)
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
    predicted = _predict(ex, new_ids, state.encoding)
    for candidate, label in zip(states, predicted):
        if int(label) == keep:
            return candidate, candidate.ids[position]
    return None


def _original_prediction(ex, state: _Text) -> int:
    return int(_predict(ex, [state.ids], state.encoding)[0])


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise InputError(f"budget must be a positive int number of tokens to change, got {budget!r}")
    return int(budget)


def _substitute(ex, text: str, budget: int, seed: int, kind: str,
                propose: Callable[[_Text, int, np.random.Generator], np.ndarray]) -> Perturbation:
    budget = _check_budget(budget)
    words = _Words.of(ex)
    state = _Text(ex, text)
    keep = _original_prediction(ex, state)
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
    return Perturbation(kind, text, state.text, changed, replaced, replacements, _label(ex, keep), budget, seed,
                        {"eligible": len(positions)})


def _label(ex, index: int) -> Any:
    labels = ex.labels
    if labels and 0 <= index < len(labels):
        return labels[index]
    return ex.tokenizer.convert_ids_to_tokens([index])[0]


def random_substitution(ex, text: str, budget: int = 2, seed: int = 0, *, candidates: int = 16) -> Perturbation:
    """Replace up to ``budget`` random whole words by random whole-word vocabulary tokens.

    Positions are visited in a seeded random order; at each, ``candidates`` random words are tried
    (one batched forward pass) and the first that keeps the predicted label/next token is taken.
    ``len(result.positions) <= budget`` (fewer when the text has fewer substitutable words).
    """
    words = _Words.of(ex)

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

    words = _Words.of(ex)
    table = ex.model.get_input_embeddings().weight

    def propose(state, position, rng):
        token_id = state.ids[position]
        with torch.no_grad():
            return words.nearest(token_id, table[token_id], neighbours)

    return _substitute(ex, text, budget, seed, "neighbour", propose)


def _rank_scores(scores: np.ndarray, rank_by: str) -> np.ndarray:
    if rank_by == "abs":
        return np.abs(scores)
    if rank_by == "signed":
        return np.asarray(scores, dtype=np.float64)
    raise InputError(f"rank_by must be 'abs' or 'signed', got {rank_by!r}")


def _topk_mass(scores: np.ndarray, keep: np.ndarray, top: np.ndarray) -> float:
    """Share of |attribution| (over non-special tokens) held by the positions ``top``."""
    magnitude = np.abs(np.nan_to_num(scores)) * keep
    total = magnitude.sum()
    return float(magnitude[top].sum() / total) if total > 0 else 0.0


def _surrogate_gradient(ex, ids: list[int], encoding, target, top: np.ndarray, keep: np.ndarray):
    """d/d embeddings of the top-k share of |gradient x input| saliency: (n, d) (needs 2nd-order grads)."""
    import torch

    input_ids = torch.as_tensor([ids], dtype=torch.long, device=ex.device)
    with ex.restored(), torch.enable_grad():
        embeds = ex.embed(input_ids).detach().requires_grad_(True)
        out = ex.forward(inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids))
        score = target.score(out.logits)[0]
        (grad,) = torch.autograd.grad(score, embeds, create_graph=True)
        saliency = (grad * embeds).sum(-1)[0].abs() * torch.as_tensor(keep, dtype=embeds.dtype, device=embeds.device)
        share = saliency[torch.as_tensor(top, device=embeds.device)].sum() / saliency.sum().clamp_min(1e-12)
        (outer,) = torch.autograd.grad(share, embeds)
    return outer[0].detach().float().cpu()


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
    words = _Words.of(ex)
    table = ex.model.get_input_embeddings().weight.detach().float().cpu()
    state = _Text(ex, text)
    keep_label = _original_prediction(ex, state)
    if original is None:
        original = ex.attribute(text, method=method, target=target, **method_options)
    scores = np.asarray(original.scores, dtype=np.float64)
    if scores.shape != (len(state.ids),):
        raise InputError(f"original has {scores.shape} scores for a text of {len(state.ids)} tokens")
    final_scores = None
    keep = ~np.asarray(state.encoding.special_mask)
    ranked = _rank_scores(scores, rank_by)
    inner = np.flatnonzero(keep)
    k_eff = min(k, inner.size)
    top = inner[topk_indices(ranked[inner], k_eff)]
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=state.encoding.input_ids, attention_mask=state.encoding.attention_mask).logits
    position = ex.readout_position(state.encoding)
    resolved = ex.resolve_target(target, ex.target_logits(logits, position), position)
    rng = np.random.default_rng(seed)
    changed, replaced, replacements, masses = [], [], [], [_topk_mass(scores, keep, top)]
    for _ in range(budget):
        open_positions = [p for p in state.eligible() if p not in changed]
        if not open_positions:
            break
        guide = _surrogate_gradient(ex, state.ids, state.encoding, resolved, top, keep)
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
                mass = _topk_mass(np.asarray(attribution.scores, dtype=np.float64), keep, top)
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
    return Perturbation("attack", text, state.text, changed, replaced, replacements, _label(ex, keep_label), budget,
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

