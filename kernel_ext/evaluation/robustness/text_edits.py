"""Whole-word text edits shared by the perturbations and the robustness searches.

:class:`Words` is a model's whole-word vocabulary (ids, embeddings, nearest neighbours); :class:`Text` is a text
with its token ids, encoding and word spans, edited by replacing one whole word; :func:`predict` and
:func:`original_prediction` give the predicted class index of token-id batches (``(B,)`` ints);
:func:`label` names a class index; :func:`rank_scores` turns attribution scores into ranking values;
:func:`topk_mass` is the share of |attribution| held by the top positions; :func:`surrogate_gradient` is the
gradient of that share (by |gradient × input| saliency) with respect to the input embeddings, ``(n, d)``.
``ex`` is an explainer (duck-typed); torch is imported inside the functions that need it.
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ...errors import InputError

__all__ = ["Words", "Text", "prediction_index", "predict", "original_prediction", "label", "rank_scores",
           "topk_mass", "surrogate_gradient"]


class Words:
    """Whole-word vocabulary of one explainer: ids, unit-norm embeddings, strings (cached)."""

    _cache: "weakref.WeakKeyDictionary[Any, Words]" = weakref.WeakKeyDictionary()

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
    def of(cls, ex) -> "Words":
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


class Text:
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


def prediction_index(ex, logits, encoding) -> np.ndarray:
    """argmax of the explained logits row for each batch item: (B,) ints."""
    position = ex.readout_position(encoding)
    rows = logits if position is None else logits[:, position]
    return rows.argmax(dim=-1).cpu().numpy()


def predict(ex, batch_ids: list[list[int]], encoding) -> np.ndarray:
    import torch

    ids = torch.as_tensor(batch_ids, dtype=torch.long, device=ex.device)
    with ex.restored(), torch.no_grad():
        logits = ex.forward(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return prediction_index(ex, logits, encoding)


def original_prediction(ex, state: Text) -> int:
    return int(predict(ex, [state.ids], state.encoding)[0])


def label(ex, index: int) -> Any:
    labels = ex.labels
    if labels and 0 <= index < len(labels):
        return labels[index]
    return ex.tokenizer.convert_ids_to_tokens([index])[0]


def rank_scores(scores: np.ndarray, rank_by: str) -> np.ndarray:
    if rank_by == "abs":
        return np.abs(scores)
    if rank_by == "signed":
        return np.asarray(scores, dtype=np.float64)
    raise InputError(f"rank_by must be 'abs' or 'signed', got {rank_by!r}")


def topk_mass(scores: np.ndarray, keep: np.ndarray, top: np.ndarray) -> float:
    """Share of |attribution| (over non-special tokens) held by the positions ``top``."""
    magnitude = np.abs(np.nan_to_num(scores)) * keep
    total = magnitude.sum()
    return float(magnitude[top].sum() / total) if total > 0 else 0.0


def surrogate_gradient(ex, ids: list[int], encoding, target, top: np.ndarray, keep: np.ndarray):
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
