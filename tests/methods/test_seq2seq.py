"""Encoder-decoders (T5, BART): the next target token over the source and the target so far.

Tiny random models and a word-level tokenizer built offline (tests/support/seq2seq_vision_models.py).
The encoder-decoder graph is checked against a block recurrence written here; the methods against
the model's own outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.seq2seq_vision_models import build_bart, build_t5
from xattr_lab.errors import InputError
from xattr_lab.graphs.rollout import rollout
from xattr_lab.graphs.seq2seq import graph_layer_names, seq2seq_graph

SOURCE, PREFIX = "the cat sat on the mat", "a dog"


def _stochastic(rng, *shape, causal=False):
    a = rng.random(shape)
    if causal:
        a = a * np.tril(np.ones(shape[-2:]))
    return a / a.sum(-1, keepdims=True)


def test_graph_rollout_equals_the_block_recurrence():
    rng = np.random.default_rng(0)
    ns, nt, Le, Ld, r = 4, 3, 2, 2, 0.5
    enc, dec, cross = _stochastic(rng, Le, ns, ns), _stochastic(rng, Ld, nt, nt, causal=True), _stochastic(rng, Ld, nt, ns)
    C = seq2seq_graph(enc, dec, cross)
    assert C.shape == (Le + 2 * Ld, ns + nt, ns + nt)
    assert graph_layer_names(Le, Ld) == ["enc 0", "enc 1", "dec 0 self", "dec 0 cross", "dec 1 self", "dec 1 cross"]
    got = rollout(C, r)[-1][ns:]  # the target rows' rolled-out attention over all inputs
    # independently: sources rolled out through the encoder; targets mix self-attention, then cross-attention
    S = np.eye(ns)
    for k in range(Le):
        S = (r * np.eye(ns) + (1 - r) * enc[k]) @ S
    S = np.hstack([S, np.zeros((ns, nt))])
    T = np.hstack([np.zeros((nt, ns)), np.eye(nt)])
    for d in range(Ld):
        T = (r * np.eye(nt) + (1 - r) * dec[d]) @ T
        T = r * T + (1 - r) * cross[d] @ S
    assert np.allclose(got, T, atol=1e-12)
    assert np.allclose(got.sum(-1), 1.0)


def test_graph_rejects_shapes_that_do_not_fit():
    with pytest.raises(InputError, match="do not fit"):
        seq2seq_graph(np.ones((1, 3, 3)), np.ones((1, 2, 2)), np.ones((1, 2, 4)))


@pytest.fixture(scope="module", params=["t5", "bart"])
def s2s(request):
    import xattr_lab as xa

    model, tok = {"t5": build_t5, "bart": build_bart}[request.param]()
    return xa.load(model, tok, device="cpu", name=f"tiny-{request.param}")


def _score(ex, src_embeds, dec_embeds, token, mask):
    with torch.no_grad():
        out = ex.model(inputs_embeds=src_embeds, decoder_inputs_embeds=dec_embeds, attention_mask=mask, use_cache=False)
    return float(out.logits[0, -1, token])


def _inputs(ex):
    src = ex.tokenizer(SOURCE, return_tensors="pt")
    dec_ids = torch.tensor([[ex.config.decoder_start_token_id] + ex.tokenizer(PREFIX, add_special_tokens=False)["input_ids"]])
    emb = ex.model.get_input_embeddings()
    with torch.no_grad():
        return src, dec_ids, emb(src["input_ids"]), emb(dec_ids)


def test_tokens_and_attention_are_the_cross_attention_row(s2s):
    r = s2s.attribute(SOURCE, method="attention", prefix=PREFIX)
    src, dec_ids, _, _ = _inputs(s2s)
    ns = src["input_ids"].shape[1]
    assert r.options["n_source"] == ns and r.tokens[-2:] == ["a", "dog"] and len(r.tokens) == ns + 3
    with torch.no_grad():
        out = s2s.model(input_ids=src["input_ids"], decoder_input_ids=dec_ids, output_attentions=True, use_cache=False)
    expected = out.cross_attentions[-1][0].mean(0)[-1].double().numpy()
    assert np.allclose(r.scores[:ns], expected, atol=1e-6) and np.all(r.scores[ns:] == 0)
    assert r.target == int(out.logits[0, -1].argmax())
    mean = s2s.attribute(SOURCE, method="attention", prefix=PREFIX, layer="mean")
    expected = torch.stack(out.cross_attentions)[:, 0].mean((0, 1))[-1].double().numpy()
    assert np.allclose(mean.scores[:ns], expected, atol=1e-6)
    with pytest.raises(InputError, match="decoder layer"):
        s2s.attribute(SOURCE, method="attention", prefix=PREFIX, layer=5)


@pytest.mark.slow
def test_ig_is_complete_against_an_independent_baseline_pass(s2s):
    r = s2s.attribute(SOURCE, method="ig", prefix=PREFIX, steps="auto")
    src, dec_ids, xs, xt = _inputs(s2s)
    ns = xs.shape[1]
    pad = s2s.model.get_input_embeddings()(torch.tensor([s2s.tokenizer.pad_token_id]))[0].detach()
    special = s2s.tokenizer(SOURCE, return_special_tokens_mask=True)["special_tokens_mask"]
    xs0, xt0 = xs.clone(), xt.clone()
    xs0[0, [i for i, s in enumerate(special) if not s]] = pad
    xt0[0, 1:] = pad  # the decoder start token stays
    change = _score(s2s, xs, xt, r.target, src["attention_mask"]) - _score(s2s, xs0, xt0, r.target, src["attention_mask"])
    assert r.raw.sum() == pytest.approx(change, rel=0.05, abs=1e-4)
    assert r.raw[ns] == 0.0 and all(r.raw[i] == 0.0 for i, s in enumerate(special) if s)


@pytest.mark.slow
def test_sig_exact_is_each_tokens_leave_one_out(s2s):
    r = s2s.attribute(SOURCE, method="sig", prefix=PREFIX, steps="exact")
    src, dec_ids, xs, xt = _inputs(s2s)
    ns = xs.shape[1]
    base_id = s2s.tokenizer.mask_token_id if s2s.tokenizer.mask_token_id is not None else s2s.tokenizer.unk_token_id
    base = s2s.model.get_input_embeddings()(torch.tensor([base_id]))[0].detach()
    full = _score(s2s, xs, xt, r.target, src["attention_mask"])
    xs1 = xs.clone()
    xs1[0, 1 if s2s.config.model_type == "bart" else 0] = base  # the first word of the source
    xt1 = xt.clone()
    xt1[0, 2] = base  # "dog", the last target token
    first = 1 if s2s.config.model_type == "bart" else 0
    assert r.raw[first] == pytest.approx(full - _score(s2s, xs1, xt, r.target, src["attention_mask"]), abs=1e-5)
    assert r.raw[ns + 2] == pytest.approx(full - _score(s2s, xs, xt1, r.target, src["attention_mask"]), abs=1e-5)


@pytest.mark.slow
def test_graph_methods_flow_and_heads(s2s):
    roll = s2s.attribute(SOURCE, method="rollout", prefix=PREFIX)
    assert roll.scores.sum() == pytest.approx(1.0) and roll.options["sources"] == [len(roll.tokens) - 1]
    gaf = s2s.attribute(SOURCE, method="gaf", prefix=PREFIX, info="agf")
    assert gaf.scores.sum() == pytest.approx(gaf.options["value"], rel=1e-6) and gaf.options["residual"] == 0.5
    flow = s2s.flow(SOURCE, prefix=PREFIX, info="af")
    L = len(flow.options["graph_layers"])
    assert flow.edge_flow.shape == (L, len(flow.tokens), len(flow.tokens)) and flow.value <= flow.upper_bound * (1 + 1e-6)
    import networkx as nx  # the max-flow value of the encoder-decoder graph, by networkx

    assert flow.value == pytest.approx(nx.maximum_flow_value(flow.to_networkx(), "s", "t"), rel=1e-5)
    af = s2s.attribute(SOURCE, method="attention_flow", prefix=PREFIX)
    assert np.all(af.scores >= -1e-9) and af.scores.max() <= 1 + 1e-6
    heads = s2s.heads(SOURCE, prefix=PREFIX)
    assert heads.entropy.shape == (6, 4) and heads.options["layers"][-1] == "dec 1 cross"
    assert heads.patterns[-1] == ["cross"] * 4


@pytest.mark.slow
def test_generation_rows_are_single_attributions_and_greedy_matches_generate(s2s):
    forced = s2s.attribute_generation(SOURCE, method="attention", target=PREFIX)
    assert forced.generated_ids == s2s.tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
    one = s2s.attribute(SOURCE, method="attention", prefix="a", target="dog")
    assert np.allclose(forced.matrix[1, : len(one.tokens)], one.scores) and np.isnan(forced.matrix[0, -1])
    greedy = s2s.attribute_generation(SOURCE, max_new_tokens=3, method="rollout")
    src = s2s.tokenizer(SOURCE, return_tensors="pt")
    with torch.no_grad():
        ids = s2s.model.generate(**src, max_new_tokens=3, do_sample=False, num_beams=1)[0, 1:].tolist()
    assert greedy.generated_ids == ids[: len(greedy.generated_ids)]


@pytest.mark.parametrize("call, words", [
    (lambda ex: ex.circuit(["a"], ["b"]), "encoder-decoders"),
    (lambda ex: ex.attribute(SOURCE, method="nope"), "unknown method"),
    (lambda ex: ex.attribute(SOURCE, method="ig", prefix=3.5), "prefix"),
    (lambda ex: ex.attribute(np.zeros((4, 4, 3), np.uint8), method="ig"), "source as a text"),
    (lambda ex: ex.attribute(SOURCE, method="ig", granularity="word"), "granularity"),
    (lambda ex: ex.attribute(SOURCE, method="sig", steps="forever"), "steps"),
])
def test_what_does_not_apply_says_why(s2s, call, words):
    with pytest.raises(InputError) as caught:
        call(s2s)
    assert words in str(caught.value)


def test_a_stack_left_on_sdpa_is_switched_to_eager():
    """T5 keeps a config copy per stack: 'eager' set on the top config alone does not reach them."""
    import xattr_lab as xa

    model, tok = build_t5()
    model.config._attn_implementation = "eager"
    with pytest.warns(UserWarning, match="eager"):
        ex = xa.load(model, tok, device="cpu")
    assert ex.attribute(SOURCE, method="attention", prefix=PREFIX).scores.sum() == pytest.approx(1.0)
