"""Word-level results: subword tokens grouped into words by the tokenizer's character offsets.

``granularity="word"`` in ``ex.attribute`` and ``ex.flow``.

Word boundaries (:func:`word_spans`) come from the offsets of a fast tokenizer
(``return_offsets_mapping``), never from the token strings, so one rule serves WordPiece (``##``),
byte-level BPE with ``Ġ`` (GPT-2, Llama-3, SmolLM2) and SentencePiece ``▁``. A word is a maximal run
of tokens with no whitespace between or inside their joins: token i starts a new word when

- it or token i-1 is a special token ([CLS], [SEP], BOS, EOS: each stays its own unit),
- the text between token i-1's end and token i's start holds whitespace (WordPiece, whose
  offsets leave the space out),
- token i's own text starts with whitespace (BPE ``Ġ``/SentencePiece ``▁`` offsets take the space
  in), or token i-1's text ends with whitespace and is not whitespace alone.

So words are whitespace-delimited: punctuation glued to a word belongs to it ("film." is one
word, "film ." two). A token of whitespace alone (SentencePiece's lone ``▁`` before pieces, a
newline) is the leading space of the word after it, or its own unit when that word's first token
brings its own space (an extra space: ``Ġ`` then ``Ġending``). Tokens whose spans overlap
(byte-level BPE splitting one character) join.

Aggregation rules (:func:`aggregate`), per method (:data:`DEFAULT_RULES`):

- ``"sum"`` for additive scores: IG, SIG, grad x input (each sums to the output change, or its
  first-order part, over tokens, so a word's share is the sum of its tokens'), GAF (flow reaching
  each input node; the sum over tokens is the flow value), raw attention and rollout (a row is a
  distribution over tokens; the attention to a word is the sum over its subwords, the rule of
  Clark et al. 2019, "What does BERT look at?").
- ``"max_abs"`` for attention flow: each token's value is its own max-flow problem, so values do
  not add; the max-flow into a word's tokens lies between their maximum and their sum, and the
  maximum (the signed value of largest magnitude) is the lower bound, exact for one-token words.
- ``"mean"`` is offered for users who want it.

For SIG, ``scores`` (raw / ||raw||_2 over tokens) are summed like ``raw``: word scores are the word
raw sums over the token norm, so they are not re-normalised. Per-token lists in ``options``
(SIG's ``nodes``, ``completeness_error``, ...) stay per subword token; ``options["subword_tokens"]``
and ``options["word_spans"]`` (token ranges, end exclusive) say which token is where.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InputError
from ..results import Attribution, FlowResult

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession

GRANULARITIES = ("token", "word")
RULES = ("sum", "max_abs", "mean")
#: The rule each method's scores are aggregated with (module docstring says why).
DEFAULT_RULES = {"ig": "sum", "sig": "sum", "grad_x_input": "sum", "gaf": "sum", "attention": "sum",
                 "rollout": "sum", "attention_flow": "max_abs", "flow": "sum"}


def word_spans(offsets: Sequence[tuple[int, int]], text: str, special_mask: Sequence[bool]) -> list[tuple[int, int]]:
    """Token ranges of the words: ``[(start_token, end_token), ...]`` (end exclusive), covering 0..n.

    offsets: (n,) character spans ``(start, end)`` of the tokens in ``text`` (a fast tokenizer's
    ``offset_mapping``); special_mask: (n,) True for tokens the tokenizer added.
    """
    n = len(offsets)
    if len(special_mask) != n:
        raise InputError(f"{n} offsets but {len(special_mask)} special-token flags")
    spans: list[tuple[int, int]] = []
    for i in range(n):
        if i == 0 or _starts_word(i, offsets, text, special_mask):
            spans.append((i, i + 1))
        else:
            spans[-1] = (spans[-1][0], i + 1)
    return spans


def _starts_word(i: int, offsets, text: str, special) -> bool:
    if special[i] or special[i - 1]:
        return True
    (prev_start, prev_end), (start, end) = offsets[i - 1], offsets[i]
    gap = text[prev_end:start] if start > prev_end else ""
    own, previous = text[start:end], text[prev_start:prev_end]
    # whitespace ending a token ends its word, unless the token is whitespace alone: then it is the
    # next word's leading space (SentencePiece's lone "▁" before "u", "n", ...; a newline before a word)
    ends = previous[-1:].isspace() and not previous.isspace()
    return any(c.isspace() for c in gap) or own[:1].isspace() or ends


def word_labels(tokens: Sequence[str], offsets, text: str, spans, special_mask) -> list[str]:
    """A label per word: its text (from the first token's start to the last token's end, stripped),
    the token itself for special tokens and for whitespace-only units."""
    labels = []
    for start, stop in spans:
        piece = text[offsets[start][0]:offsets[stop - 1][1]].strip()
        labels.append(tokens[start] if special_mask[start] or not piece else piece)
    return labels


def aggregate(values: Any, spans: Sequence[tuple[int, int]], rule: str = "sum", axis: int = -1) -> np.ndarray:
    """Aggregate ``values`` over token ranges along ``axis``: (..., n, ...) -> (..., W, ...).

    rule: "sum", "max_abs" (the signed value of largest magnitude; NaN ignored) or "mean".
    """
    if rule not in RULES:
        raise InputError(f"unknown word rule {rule!r}; choose one of {list(RULES)}")
    values = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    out = np.empty(values.shape[:-1] + (len(spans),))
    for w, (start, stop) in enumerate(spans):
        block = values[..., start:stop]
        if rule == "sum":
            out[..., w] = block.sum(-1)
        elif rule == "mean":
            out[..., w] = block.mean(-1)
        else:
            pick = np.nanargmax(np.abs(np.nan_to_num(block, nan=-np.inf)), axis=-1) if block.size else 0
            out[..., w] = np.take_along_axis(block, np.expand_dims(pick, -1), -1)[..., 0]
    return np.moveaxis(out, -1, axis)


def token_offsets(ex: "ModelSession", text: str, input_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Character offsets (n,) of the tokens ``input_ids`` (n,) of ``text``, from a fast tokenizer.

    A text truncated to n tokens is tokenised again with ``max_length=n``. Raises
    :class:`InputError` for a tokenizer that gives no offsets, or when its tokens differ from the
    ones explained.
    """
    tokenizer = ex.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"granularity='word' needs a fast tokenizer (character offsets); "
                         f"{type(tokenizer).__name__} gives none. Use granularity='token'.")
    input_ids = [int(i) for i in input_ids]
    with ex.lock:  # fast tokenizers are not thread-safe
        encoded = tokenizer(text, return_offsets_mapping=True, truncation=False)
        if len(encoded["input_ids"]) > len(input_ids):
            encoded = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=len(input_ids))
    if list(encoded["input_ids"]) != input_ids:
        raise InputError("granularity='word': the tokenizer's offsets do not match the explained tokens")
    return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


def _spans_for(ex: "ModelSession", tokens, text: str, input_ids, special) -> tuple[list, list[str]]:
    offsets = token_offsets(ex, text, input_ids)
    spans = word_spans(offsets, text, special)
    return spans, word_labels(tokens, offsets, text, spans, special)


def _word_options(result, spans, rule: str) -> dict:
    return {**(result.options or {}), "granularity": "word", "word_rule": rule,
            "word_spans": [list(s) for s in spans], "subword_tokens": list(result.tokens)}


def _word_of(spans) -> np.ndarray:
    index = np.empty(spans[-1][1], dtype=int)
    for w, (start, stop) in enumerate(spans):
        index[start:stop] = w
    return index


def attribution_to_words(ex: "ModelSession", result: Attribution, input_ids, special, rule: str | None = None):
    """An :class:`Attribution` over words (tokens = word labels) from one over subword tokens."""
    rule = rule or DEFAULT_RULES.get(result.method, "sum")
    spans, labels = _spans_for(ex, result.tokens, result.text, input_ids, special)
    options = _word_options(result, spans, rule)
    if "source" in options:
        options["source_word"] = int(_word_of(spans)[options["source"]])
    return Attribution(tokens=labels, scores=aggregate(result.scores, spans, rule),
                       raw=aggregate(result.raw, spans, rule), target=result.target, method=result.method,
                       options=options, prediction=result.prediction, text=result.text, model=result.model,
                       target_label=result.target_label)


def flow_to_words(ex: "ModelSession", result: FlowResult, input_ids, special) -> FlowResult:
    """A :class:`FlowResult` over words: each word's nodes merged in every layer.

    Capacities and edge flows of merged nodes add (C_w[l][I, J] = sum over i in I, j in J); node
    throughputs and attributions add. The merged flow is feasible in the merged graph with the
    same value (conservation holds per merged node), though the merged graph may carry more.
    Sources become the words holding a source token.
    """
    spans, labels = _spans_for(ex, result.tokens, result.text, input_ids, special)

    def both(a):
        return None if a is None else aggregate(aggregate(a, spans, "sum", -1), spans, "sum", -2)

    word_of = _word_of(spans)
    return FlowResult(
        tokens=labels, attributions=aggregate(result.attributions, spans, "sum"), edge_flow=both(result.edge_flow),
        value=result.value, node_flow=None if result.node_flow is None else aggregate(result.node_flow, spans, "sum"),
        capacities=both(result.capacities), info=result.info,
        sources=sorted({int(word_of[s]) for s in result.sources}), mu=result.mu, target=result.target,
        target_label=result.target_label, prediction=result.prediction, method=result.method,
        options={**_word_options(result, spans, "sum"), "token_sources": list(result.sources)}, text=result.text,
        model=result.model, upper_bound=result.upper_bound, solver=result.solver)


def check_granularity(granularity: Any) -> str:
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity must be one of {list(GRANULARITIES)}, not {granularity!r}")
    return granularity


def word_sources(ex: "ModelSession", text: str, input_ids, special, indices: Any) -> list[int]:
    """Token positions of the words ``indices`` (an int or a list; negative counts from the end):
    with ``granularity="word"``, the ``sources`` a user gives are word positions, and each becomes
    all of its word's tokens."""
    spans = word_spans(token_offsets(ex, text, input_ids), text, special)
    picked = np.atleast_1d(np.asarray(indices))
    if picked.size == 0 or not np.issubdtype(picked.dtype, np.integer):
        raise InputError(f"with granularity='word', sources are word positions (ints), 'all' or 'readout'; "
                         f"not {indices!r}")
    out: list[int] = []
    for w in picked.tolist():
        if not -len(spans) <= w < len(spans):
            raise InputError(f"word {w} is out of range: this text has {len(spans)} words (with special tokens)")
        out.extend(range(*spans[w]))
    return sorted(set(out))
