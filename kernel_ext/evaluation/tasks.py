"""Prompt builders for circuit tasks: indirect object identification (IOI) and greater-than.

Every builder is seeded and checks the prompts against the tokenizer it is given: names, places,
objects and nouns are kept only when they are one token (with their leading space, as byte-level
BPE tokenizers spell words inside a sentence), and all positive and negative prompts of a task
have the same token length, so heads can be mean-ablated position by position
(:func:`xattr_lab.circuits.head_ablation_effects`).

IOI (Wang et al. 2022): "When Mary and John went to the store, John gave a drink to" -> " Mary".
The negative replaces the repeated subject with a third name ("..., Kate gave a drink to"), which
removes the information the circuit uses. Metric: logit(IO) − logit(S) at the last token.

Greater-than (Hanna et al. 2023): "The war lasted from the year 1732 to the year 17" -> a year
after 32. Negatives use the year 01. Metric: probability of a later year minus probability of an
earlier one at the last token (for tokenizers that split numbers into digits, the tens digit).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

IOI_NAMES = (
    "Mary John Tom James Michael Sarah David Paul Daniel Kate Anna Emma Lisa Mark Peter Alice Robert Jack "
    "George William Thomas Richard Susan Laura Rachel Linda Karen Steven Kevin Brian Jason Eric Adam Ryan "
    "Jennifer Jessica Amy Helen Andrew Joseph Charles Henry Edward Frank Sam Max Ben Lucy Grace Rose Jane "
    "Chris Matt Alex Nick Dan Joe Bob Tim Mike Jim Luke Sophie Oliver Harry Jacob Emily Olivia Victoria Martin"
).split()
IOI_PLACES = "store school park hospital station office restaurant beach garden house market library church".split()
IOI_OBJECTS = "drink book ring bone kiss snack gift ball letter bottle card flower".split()
IOI_TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "While {A} and {B} were at the {PLACE}, {S} gave a {OBJECT} to",
    "When {A} and {B} arrived at the {PLACE}, {S} handed a {OBJECT} to",
)
GREATER_THAN_NOUNS = "war expedition project drought dynasty voyage rebellion siege famine reign".split()
GREATER_THAN_TEMPLATE = "The {NOUN} lasted from the year {CENTURY}{YY} to the year {CENTURY}"


@dataclass
class TaskPrompts:
    """Positive and negative prompts of one task, and what the positives should predict.

    positive / negative: equal-token-length prompts, paired by index.
    correct / incorrect: per positive, token ids compared by the metric (IOI: IO and S names;
    greater-than: lists of later / earlier year tokens).
    metric: (logits (R, n, V), prompt index (R,)) -> (R,), as :func:`head_ablation_effects` wants.
    """

    name: str
    positive: list[str]
    negative: list[str]
    correct: list[Any]
    incorrect: list[Any]
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    n_tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _single_tokens(tokenizer, words, space: bool = True) -> list[str]:
    keep = []
    for w in words:
        text = (" " + w) if space else w
        if len(tokenizer.encode(text, add_special_tokens=False)) == 1:
            keep.append(w)
    return keep


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def _token_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is not one token")
    return int(ids[0])


def ioi_prompts(tokenizer, n: int = 100, seed: int = 0, templates=IOI_TEMPLATES) -> TaskPrompts:
    """``n`` IOI prompts (half ABBA, half BABA order) and their ABC negatives.

    Only templates whose prompts have the token length of the first template's are used, so all
    prompts are equally long (the dropped templates are listed in ``info["dropped_templates"]``).
    """
    from .circuit_truth import logit_difference
    from ..errors import InputError as XattrError

    names = _single_tokens(tokenizer, IOI_NAMES)
    places = _single_tokens(tokenizer, IOI_PLACES)
    objects = _single_tokens(tokenizer, IOI_OBJECTS)
    if len(names) < 3 or not places or not objects:
        raise XattrError("this tokenizer splits too many names/places/objects into pieces to build IOI prompts")
    probe = {"A": names[0], "B": names[1], "S": names[1], "PLACE": places[0], "OBJECT": objects[0]}
    lengths = [_n_tokens(tokenizer, t.format(**probe)) for t in templates]
    kept = [t for t, k in zip(templates, lengths) if k == lengths[0]]
    rng = random.Random(seed)
    positive, negative, correct, incorrect = [], [], [], []
    while len(positive) < n:
        template = rng.choice(kept)
        io, s, c = rng.sample(names, 3)
        place, obj = rng.choice(places), rng.choice(objects)
        a, b = (io, s) if len(positive) % 2 == 0 else (s, io)  # ABBA / BABA alternate
        pos = template.format(A=a, B=b, S=s, PLACE=place, OBJECT=obj)
        neg = template.format(A=a, B=b, S=c, PLACE=place, OBJECT=obj)
        if _n_tokens(tokenizer, pos) != lengths[0] or _n_tokens(tokenizer, neg) != lengths[0]:
            continue  # a merge across a word boundary changed the length: draw again
        positive.append(pos)
        negative.append(neg)
        correct.append(_token_id(tokenizer, " " + io))
        incorrect.append(_token_id(tokenizer, " " + s))
    return TaskPrompts(
        "ioi", positive, negative, correct, incorrect, logit_difference(correct, incorrect, position=-1),
        n_tokens=lengths[0],
        info={"templates": kept, "dropped_templates": [t for t in templates if t not in kept], "seed": seed,
              "names": len(names)},
    )


def _year_tokens(tokenizer) -> tuple[str, dict[int, int]]:
    """("pair", {yy: id}) when every two-digit year 00..99 is one token, else ("digit", {d: id})."""
    pairs = {}
    for yy in range(100):
        ids = tokenizer.encode(f"{yy:02d}", add_special_tokens=False)
        if len(ids) != 1:
            break
        pairs[yy] = int(ids[0])
    else:
        return "pair", pairs
    digits = {d: _token_id(tokenizer, str(d)) for d in range(10)}
    return "digit", digits


def greater_than_prompts(tokenizer, n: int = 100, seed: int = 0, century: int = 17) -> TaskPrompts:
    """``n`` greater-than prompts with start years YY in 10..89 (tens digit 1..8), negatives with YY = 01.

    correct / incorrect hold, per prompt, the token ids of later / earlier years (two-digit tokens), or
    of larger / smaller tens digits when the tokenizer splits numbers into digits (the tens digit equal
    to YY's is in neither). The metric is the softmax probability of ``correct`` minus ``incorrect``.
    """
    from ..errors import InputError as XattrError

    nouns = _single_tokens(tokenizer, GREATER_THAN_NOUNS) or GREATER_THAN_NOUNS[:1]
    mode, table = _year_tokens(tokenizer)
    rng = random.Random(seed)
    positive, negative, correct, incorrect = [], [], [], []
    length = None
    attempts = 0
    while len(positive) < n:
        attempts += 1
        if attempts > 50 * n:
            raise XattrError("could not build greater-than prompts of equal token length for this tokenizer")
        yy = rng.randrange(10, 90)
        noun = rng.choice(nouns)
        pos = GREATER_THAN_TEMPLATE.format(NOUN=noun, CENTURY=century, YY=f"{yy:02d}")
        neg = GREATER_THAN_TEMPLATE.format(NOUN=noun, CENTURY=century, YY="01")
        k_pos, k_neg = _n_tokens(tokenizer, pos), _n_tokens(tokenizer, neg)
        length = length or k_pos
        if k_pos != length or k_neg != length:
            continue
        if mode == "pair":
            good = [table[y] for y in range(yy + 1, 100)]
            bad = [table[y] for y in range(0, yy)]
        else:
            tens = yy // 10
            good = [table[d] for d in range(tens + 1, 10)]
            bad = [table[d] for d in range(0, tens)]
        positive.append(pos)
        negative.append(neg)
        correct.append(good)
        incorrect.append(bad)
    return TaskPrompts("greater_than", positive, negative, correct, incorrect,
                       probability_difference(correct, incorrect), n_tokens=length,
                       info={"mode": mode, "seed": seed, "century": century})


def probability_difference(correct: list[list[int]], incorrect: list[list[int]], position: int = -1):
    """Metric: p(any of correct[i]) − p(any of incorrect[i]) at ``position`` (softmax over the vocabulary)."""
    def weights(vocab: int) -> torch.Tensor:
        w = torch.zeros(len(correct), vocab)
        for i, (good, bad) in enumerate(zip(correct, incorrect)):
            w[i, good] = 1.0
            w[i, bad] = -1.0
        return w

    cache: dict[int, torch.Tensor] = {}

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        row = logits[:, position] if logits.dim() == 3 else logits
        V = row.shape[-1]
        if V not in cache:
            cache[V] = weights(V)
        w = cache[V][index.cpu()].to(row.device)
        return (torch.softmax(row.float(), dim=-1) * w).sum(dim=-1)

    return metric


def induction_task(tokenizer, n: int = 260, seed: int = 0, length: int = 10) -> TaskPrompts:
    """The toy's task (:mod:`xattr_lab.core.toy`): ``n`` "x x" prompts (a random segment repeated) and
    their "x y" negatives (the second half fresh tokens); metric: mean log-probability of the copied
    tokens over the second half. ``n`` can be anything, so the SAE can train on some and be scored
    on others."""
    from ..core.toy import induction_metric, induction_prompts

    vocab = sum(1 for t in tokenizer.get_vocab() if t.startswith("t") and t[1:].isdigit())
    positive, negative = induction_prompts(n=n, length=length, seed=seed, vocab_tokens=vocab)
    return TaskPrompts("induction", positive, negative, [], [], induction_metric(positive, tokenizer, length),
                       n_tokens=1 + 2 * length, info={"seed": seed, "length": length})
