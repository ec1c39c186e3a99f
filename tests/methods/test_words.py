"""Word granularity (xattr_lab.methods.words): spans from offsets, aggregation rules, Explainer results."""
from __future__ import annotations

import numpy as np
import pytest

from xattr_lab.errors import InputError
from xattr_lab.methods.words import aggregate, word_labels, word_spans
from xattr_lab.results import Attribution, FlowResult

TEXT = "the film was unbelievably riveting and its endings work"


# ---------------------------------------------------------------------------- hand-computed spans
def test_wordpiece_offsets_leave_the_space_out():
    text = "unbelievable film."
    # [CLS] un ##bel ##ievable film . [SEP]
    offsets = [(0, 0), (0, 2), (2, 5), (5, 12), (13, 17), (17, 18), (0, 0)]
    special = [True, False, False, False, False, False, True]
    spans = word_spans(offsets, text, special)
    assert spans == [(0, 1), (1, 4), (4, 6), (6, 7)]
    assert word_labels(["[CLS]", "un", "##bel", "##ievable", "film", ".", "[SEP]"], offsets, text, spans,
                       special) == ["[CLS]", "unbelievable", "film.", "[SEP]"]


def test_bpe_offsets_take_the_space_in_and_whitespace_tokens_stand_alone():
    text = "Un film  ends\nhere"
    # Un | Ġfilm | Ġ | Ġends | Ċ | here   (GPT-2 style: the leading space belongs to the token)
    offsets = [(0, 2), (2, 7), (7, 8), (8, 13), (13, 14), (14, 18)]
    spans = word_spans(offsets, text, [False] * 6)
    assert spans == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6)]  # the extra space alone; the newline leads "here"
    labels = word_labels(["Un", "Ġfilm", "Ġ", "Ġends", "Ċ", "here"], offsets, text, spans, [False] * 6)
    assert labels == ["Un", "film", "Ġ", "ends", "here"]
    offsets = [(0, 1), (1, 2), (2, 7)]  # "Un film": "U" "n" "Ġfilm": glued pieces join
    assert word_spans(offsets, text[:7], [False] * 3) == [(0, 2), (2, 3)]


def test_overlapping_byte_pieces_join_and_a_bos_stays_alone():
    text = "café au lait"
    # <s> caf | é(byte 1) | é(byte 2) | Ġau | Ġlait   (two byte tokens share one character)
    offsets = [(0, 0), (0, 3), (3, 4), (3, 4), (4, 7), (7, 12)]
    special = [True, False, False, False, False, False]
    assert word_spans(offsets, text, special) == [(0, 1), (1, 4), (4, 5), (5, 6)]


def test_aggregate_rules_by_hand():
    spans = [(0, 1), (1, 3), (3, 6)]
    values = np.array([1.0, 2.0, -5.0, 0.5, -0.25, 3.0])
    np.testing.assert_allclose(aggregate(values, spans, "sum"), [1.0, -3.0, 3.25])
    np.testing.assert_allclose(aggregate(values, spans, "mean"), [1.0, -1.5, 3.25 / 3])
    np.testing.assert_allclose(aggregate(values, spans, "max_abs"), [1.0, -5.0, 3.0])
    matrix = np.arange(36.0).reshape(6, 6)  # both axes: block sums
    both = aggregate(aggregate(matrix, spans, "sum", -1), spans, "sum", -2)
    assert both.shape == (3, 3) and both[1, 2] == matrix[1:3, 3:6].sum() and both.sum() == matrix.sum()
    with pytest.raises(InputError, match="word rule"):
        aggregate(values, spans, "median")


# ---------------------------------------------------------------------------- real tokenizers
def _spans_of(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    special = [bool(s) for s in enc["special_tokens_mask"]]
    spans = word_spans(enc["offset_mapping"], text, special)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    return tokens, spans, special, word_labels(tokens, enc["offset_mapping"], text, spans, special)


def _starts(tokens, special, marker, inside):
    """Independent reference: word starts read from the token strings' markers."""
    starts = []
    for i, token in enumerate(tokens):
        if special[i] or (i > 0 and special[i - 1]) or (token.startswith(marker) if not inside else not token.startswith(marker)):
            starts.append(i)
    return starts


def test_wordpiece_tokenizer(tiny):
    tokenizer = tiny("bert").tokenizer
    tokens, spans, special, labels = _spans_of(tokenizer, TEXT)
    assert any(t.startswith("##") for t in tokens)  # the text splits into subwords
    assert [s for s, _ in spans] == _starts(tokens, special, "##", inside=True)
    assert [label for label, flag in zip(labels, (special[s] for s, _ in spans)) if not flag] == TEXT.split()


def test_byte_level_bpe_tokenizer(tiny):
    tokenizer = tiny("gpt2").tokenizer  # SmolLM2's byte-level BPE (Ġ)
    tokens, spans, special, labels = _spans_of(tokenizer, TEXT)
    assert len(tokens) > len(TEXT.split())
    reference = sorted({0} | set(_starts(tokens, special, "Ġ", inside=False)))
    assert [s for s, _ in spans] == reference
    assert [label for s, label in zip(spans, labels) if not special[s[0]]] == TEXT.split()


def test_sentencepiece_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    model = tokenizers.SentencePieceBPETokenizer()
    corpus = ["the film was good", "quietly believable endings work", "an unbelievable idea"] * 10
    model.train_from_iterator(corpus, vocab_size=80, min_frequency=1, special_tokens=["<unk>", "<s>", "</s>"],
                              show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model._tokenizer, unk_token="<unk>", bos_token="<s>")
    tokens, spans, special, labels = _spans_of(tokenizer, TEXT)
    assert any(t.startswith("\u2581") for t in tokens) and len(tokens) > len(TEXT.split())
    assert [s for s, _ in spans] == _starts(tokens, special, "\u2581", inside=False)
    assert labels == TEXT.split()


# ---------------------------------------------------------------------------- the Explainer
@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_word_attribution_sums_the_token_attribution(tiny, arch):
    ex = tiny(arch)
    tokens = ex.attribute(TEXT, method="grad_x_input")
    words = ex.attribute(TEXT, method="grad_x_input", granularity="word")
    spans = words.options["word_spans"]
    assert words.options["granularity"] == "word" and words.options["subword_tokens"] == tokens.tokens
    assert [w for w in words.tokens if w not in ("[CLS]", "[SEP]")] == TEXT.split()
    for w, (start, stop) in enumerate(spans):
        assert words.raw[w] == pytest.approx(tokens.raw[start:stop].sum(), abs=1e-12)
    again = Attribution.from_json(words.to_json())
    assert again.tokens == words.tokens and again.options["word_spans"] == spans


def test_word_attention_is_still_a_distribution_and_attention_flow_takes_the_max(tiny):
    ex = tiny("bert")
    assert ex.attribute(TEXT, method="attention", granularity="word").scores.sum() == pytest.approx(1.0)
    tokens = ex.attribute(TEXT, method="attention_flow")
    words = ex.attribute(TEXT, method="attention_flow", granularity="word")
    assert words.options["word_rule"] == "max_abs"
    for w, (start, stop) in enumerate(words.options["word_spans"]):
        assert words.scores[w] == tokens.scores[start:stop].max()


def test_word_flow_merges_nodes_and_conserves_flow(tiny):
    ex = tiny("bert")
    tokens = ex.flow(TEXT, info="af")
    words = ex.flow(TEXT, info="af", granularity="word")
    W = len(words.tokens)
    assert words.edge_flow.shape == (tokens.edge_flow.shape[0], W, W) and words.value == tokens.value
    assert words.attributions.sum() == pytest.approx(tokens.attributions.sum())
    assert np.all(words.edge_flow <= words.capacities * (1 + 1e-6) + 1e-9)
    for layer in range(1, words.edge_flow.shape[0]):  # into a word node of layer l (from l+1) = out of it (to l-1)
        inflow, outflow = words.edge_flow[layer].sum(0), words.edge_flow[layer - 1].sum(1)
        np.testing.assert_allclose(inflow, outflow, atol=1e-6 * max(words.value, 1.0) * W)
    assert words.options["token_sources"] == tokens.sources
    assert isinstance(FlowResult.from_json(words.to_json()), FlowResult)


def test_bad_granularity_and_slow_tokenizer_are_input_errors(tiny):
    from xattr_lab.methods.words import token_offsets

    ex = tiny("bert")
    with pytest.raises(InputError, match="granularity"):
        ex.attribute(TEXT, method="attention", granularity="sentence")

    class Slow:
        is_fast = False

    class Session:
        tokenizer, lock = Slow(), __import__("threading").RLock()

    with pytest.raises(InputError, match="fast tokenizer"):
        token_offsets(Session(), TEXT, [1, 2])


def test_word_sources_are_word_positions(tiny):
    ex = tiny("gpt2")
    plain = ex.flow(TEXT, info="af", granularity="word")
    w = next(i for i, (a, b) in enumerate(plain.options["word_spans"]) if b - a > 1)  # a word of several tokens
    start, stop = plain.options["word_spans"][w]
    flow = ex.flow(TEXT, info="af", granularity="word", sources=[w])
    assert flow.sources == [w] and flow.options["token_sources"] == list(range(start, stop))
    rollout = ex.attribute(TEXT, method="rollout", granularity="word", sources=w)
    assert rollout.options["sources"] == list(range(start, stop))
    with pytest.raises(InputError, match="out of range"):
        ex.flow(TEXT, granularity="word", sources=[99])


def test_explorer_toggle_recomputes_strip_and_flow_by_word(tiny):
    from xattr_lab.widgets import Explorer

    explorer = Explorer(tiny("bert"), TEXT, method="attention", views=("strip", "flow"), background=False)
    explorer.widget
    explorer.refresh()
    n_tokens = len(explorer.strip.result.tokens)
    assert explorer.strip._toggle.value == "token"
    explorer.strip._toggle.value = "word"  # what a click does
    assert explorer.options["granularity"] == "word" and explorer.strip._toggle.value == "word"
    assert [t for t in explorer.strip.result.tokens if t not in ("[CLS]", "[SEP]")] == TEXT.split()
    assert explorer.flow.result.tokens == explorer.strip.result.tokens and not explorer.errors
    explorer.strip.set_granularity("token")
    assert len(explorer.strip.result.tokens) == n_tokens and explorer.strip._toggle.value == "token"


def test_streamed_sig_partials_are_words_too(tiny):
    ex = tiny("bert")
    seen = []
    final = ex.attribute(TEXT, method="sig", steps=2, granularity="word", stream_every=3,
                         callback=lambda partial: seen.append(partial.tokens))
    assert seen and all(tokens == final.tokens for tokens in seen)
