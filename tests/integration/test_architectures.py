"""Every architecture x every method: it works (right shapes, finite, one property that could fail)
or it says why not with an XattrError.

Each architecture is a tiny randomly initialised model built offline from its ``transformers``
config class (2-3 layers, 4 heads, hidden 32) with a tokenizer from the embedded models (WordPiece
for encoders, SmolLM2's byte-level BPE for decoders). To add one: append ``(name, builder)`` to
:data:`ARCHITECTURES` (a builder returns ``(model, tokenizer)``). ``scripts/architecture_matrix.py``
prints the table of docs/guides/models.md from :func:`run_matrix`.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import numpy as np
import pytest
import torch

import xattr_lab as xa
from xattr_lab.errors import XattrError

METHODS = ("attention", "rollout", "attention_flow", "ig", "sig", "gaf", "heads", "circuit")
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
TEXTS = {"classifier": "a truly fine film, not a bad one", "causal_lm": "When Mary and John went to the store, John gave",
         "masked_lm": "the film was [MASK] good, not bad"}
POSITIVE = ["a truly fine film", "a great and warm movie", "a fine film indeed"]
NEGATIVE = ["a truly bad film", "a poor and cold movie", "a bad film indeed"]
INIT = 0.1  # initializer_range: large enough that outputs, gradients and flows are not all near 0


# ----------------------------------------------------------------------------- tokenizers and configs
@functools.lru_cache(maxsize=None)
def wordpiece():
    from transformers import AutoTokenizer

    from xattr_lab.core import zoo

    return AutoTokenizer.from_pretrained(zoo.minilm_dir())


@functools.lru_cache(maxsize=None)
def bpe():
    from xattr_lab.core import zoo

    return zoo.tiny_model("gpt2")[1]  # SmolLM2's byte-level BPE tokenizer, built offline from the GGUF file


def _encoder(config_cls, model_cls, **extra) -> Callable[[], tuple[Any, Any]]:
    def build():
        tok = wordpiece()
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=128, pad_token_id=tok.pad_token_id)
        config = config_cls(vocab_size=len(tok), initializer_range=INIT, num_labels=2, id2label=LABELS,
                            label2id={v: k for k, v in LABELS.items()}, **{**sizes, **extra})
        return model_cls(config), tok

    return build


def _decoder(config_cls, model_cls, **extra) -> Callable[[], tuple[Any, Any]]:
    def build():
        tok = bpe()
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=128)
        # No padding_idx: random init would zero the pad row (trained models' pad rows are not zero), and
        # the "pad" baseline would then be the zero vector, a degenerate IG baseline for models whose
        # RMSNorm makes F scale-invariant in the embeddings (F(a x) = F(x) for a > 0).
        config = config_cls(vocab_size=len(tok), pad_token_id=None, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, initializer_range=INIT, **{**sizes, **extra})
        return model_cls(config), tok

    return build


def _architectures() -> list[tuple[str, Callable[[], tuple[Any, Any]]]]:
    import transformers as tf

    dec = _decoder
    return [
        ("BERT", _encoder(tf.BertConfig, tf.BertForSequenceClassification)),
        ("DistilBERT", _encoder(tf.DistilBertConfig, tf.DistilBertForSequenceClassification, dim=32, n_layers=2,
                                n_heads=4, hidden_dim=64)),
        ("RoBERTa", _encoder(tf.RobertaConfig, tf.RobertaForSequenceClassification, max_position_embeddings=130,
                             type_vocab_size=1)),
        ("ELECTRA", _encoder(tf.ElectraConfig, tf.ElectraForSequenceClassification, embedding_size=32)),
        ("DeBERTa-v2", _encoder(tf.DebertaV2Config, tf.DebertaV2ForSequenceClassification, relative_attention=True,
                                pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=64,
                                pad_token_id=None)),  # as for decoders below: LayerNorm(word embedding) alone
        ("ModernBERT", _encoder(tf.ModernBertConfig, tf.ModernBertForMaskedLM, num_hidden_layers=3,
                                global_attn_every_n_layers=2, local_attention=4, cls_token_id=101, sep_token_id=102,
                                bos_token_id=101, eos_token_id=102)),
        ("GPT-2", dec(tf.GPT2Config, tf.GPT2LMHeadModel, n_embd=32, n_layer=2, n_head=4, n_positions=128)),
        ("Llama", dec(tf.LlamaConfig, tf.LlamaForCausalLM, num_key_value_heads=2)),
        ("Qwen2", dec(tf.Qwen2Config, tf.Qwen2ForCausalLM, num_key_value_heads=2)),
        ("Mistral", dec(tf.MistralConfig, tf.MistralForCausalLM, num_key_value_heads=2, sliding_window=8)),
        ("Gemma", dec(tf.GemmaConfig, tf.GemmaForCausalLM, num_key_value_heads=1, head_dim=16)),
        ("Phi-3", dec(tf.Phi3Config, tf.Phi3ForCausalLM, num_key_value_heads=2)),
        ("GPT-NeoX (Pythia)", dec(tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, rotary_pct=0.5)),
        ("OPT", dec(tf.OPTConfig, tf.OPTForCausalLM, ffn_dim=64, word_embed_proj_dim=32, init_std=INIT)),
        ("OPT (project_in/out, as OPT-350m)", dec(tf.OPTConfig, tf.OPTForCausalLM, ffn_dim=64, word_embed_proj_dim=16,
                                                 init_std=INIT)),
        ("Falcon", dec(tf.FalconConfig, tf.FalconForCausalLM, num_kv_heads=2, new_decoder_architecture=True)),
        ("BLOOM", dec(tf.BloomConfig, tf.BloomForCausalLM, n_layer=2, n_head=4)),
    ]


#: (name, builder) per architecture; append yours. A builder returns (model, tokenizer), offline.
ARCHITECTURES: list[tuple[str, Callable[[], tuple[Any, Any]]]] = _architectures()
# images (ViT) and encoder-decoders (T5, BART): their own inputs and cells (tests/support/seq2seq_vision_models.py)
from tests.support.seq2seq_vision_models import MATRIX_ENTRIES, MATRIX_NAMES, matrix_cell  # noqa: E402

ARCHITECTURES += MATRIX_ENTRIES


def load(name: str, seed: int = 0):
    """The Explainer of architecture ``name`` (float32, cpu, eager attention, fixed seed)."""
    build = dict(ARCHITECTURES)[name]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, tokenizer = build()
    model.config._attn_implementation = "eager"
    return xa.load(model, tokenizer, device="cpu", name=name)


# ----------------------------------------------------------------------------- one cell
def _close(a: float, b: float, rel: float, floor: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(b), floor)


def _check_attribution(ex, method: str, a, text: str) -> str:
    n = len(ex.encode(text).tokens)
    s = np.asarray(a.scores)
    assert s.shape == (n,) and np.isfinite(s).all(), f"{method}: scores {s.shape}, finite={np.isfinite(s).all()}"
    if method in ("attention", "rollout"):  # a row of (residual-mixed) attention: a distribution over tokens
        assert (s >= -1e-7).all() and abs(s.sum() - 1) < 1e-4, f"{method}: row sums to {s.sum()}"
        return f"row sums to 1 ({s.sum():.6f})"
    if method == "attention_flow":  # max-flow out of one node whose out-capacities sum to 1
        assert (s >= -1e-7).all() and s.max() <= 1 + 1e-6, f"attention_flow: scores in [{s.min()}, {s.max()}]"
        return f"each flow in [0, 1] (max {s.max():.3f})"
    if method == "gaf":  # flow conservation: what reaches the tokens is the flow's value
        value = float(a.options["value"])
        assert (s >= -1e-7).all() and _close(float(s.sum()), value, 1e-5), f"gaf: sum {s.sum()} vs value {value}"
        return f"sum = flow value ({value:.3g})"
    options = a.options
    change = options["f_x"] - options["f_baseline"]
    f_x = ex.capture(text).target_score  # an independent forward pass
    assert _close(options["f_x"], f_x, 1e-4), f"{method}: F(x) {options['f_x']} vs a fresh forward {f_x}"
    if method == "ig":  # completeness: sum of attributions = F(x) - F(x')
        total = float(np.sum(a.raw))
        assert _close(total, change, 0.05, 1e-3), f"ig: sum {total} vs F(x) - F(x') {change}"
        return f"completeness {abs(total - change) / max(abs(change), 1e-3):.1e}"
    error = options["relative_completeness_error"]  # SIG: per token, against F(x) - F(x_i -> x'_i)
    assert error < 0.05, f"sig: relative completeness error {error}"
    return f"completeness {error:.1e}"


def run_cell(ex, method: str) -> str:
    """Run ``method`` on ``ex`` and check its result; returns a short note. Raises AssertionError
    when a property fails, XattrError when the method does not apply (the caller records it)."""
    if ex.name in MATRIX_NAMES:
        return matrix_cell(ex, method)
    text = TEXTS[ex.head] if ex.head in TEXTS else TEXTS["classifier"]
    if method == "heads":
        h = ex.heads(text)
        L, H, n = ex.n_layers, ex.n_heads, len(h.tokens)
        assert h.entropy.shape == (L, H) and h.cone_index.shape == (L + 1,)
        assert np.isfinite(h.entropy).all() and (h.entropy >= -1e-6).all() and (h.entropy <= math.log(n) + 1e-6).all()
        return f"entropy in [0, log n] (max {h.entropy.max():.2f} <= {math.log(n):.2f})"
    if method == "circuit":
        c = ex.circuit(POSITIVE, NEGATIVE, features=8, epochs=5, examples=2, score_examples=1, progress=False)
        L, H = ex.n_layers, ex.n_heads
        assert c.node_scores.shape == (L, H) and c.edge_scores.shape == (L * H, L * H)
        assert np.isfinite(c.node_scores).all() and (c.node_scores >= 0).all()
        np.testing.assert_allclose(c.edge_scores, c.edge_scores.T)
        return f"{L}x{H} node scores, symmetric edges"
    options = {"steps": "auto"} if method in ("ig", "sig") else {}  # nodes until completeness is within 5%
    return _check_attribution(ex, method, ex.attribute(text, method=method, **options), text)


def run_row(name: str) -> dict[str, str]:
    """method -> "ok: note" | "n/a: why" (an XattrError) | "FAIL: what" for one architecture."""
    try:
        ex = load(name)
    except XattrError as error:
        return {m: f"n/a: {error}" for m in METHODS}
    row = {"_head": ex.head}
    for method in METHODS:
        try:
            row[method] = "ok: " + run_cell(ex, method)
        except XattrError as error:
            row[method] = f"n/a: {error}"
        except Exception as error:  # noqa: BLE001 - a failure is reported in the matrix
            row[method] = f"FAIL: {type(error).__name__}: {error}"
    return row


def run_matrix(names=None) -> dict[str, dict[str, str]]:
    return {name: run_row(name) for name in (names or [n for n, _ in ARCHITECTURES])}


def markdown(matrix: dict[str, dict[str, str]]) -> str:
    """The table of docs/guides/models.md: one row per architecture, ✓ / n/a (why, as a footnote) / FAIL."""
    notes: list[str] = []
    lines = ["| architecture | head | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for name, row in matrix.items():
        cells = []
        for method in METHODS:
            status, _, why = row[method].partition(": ")
            if status == "ok":
                cells.append("✓")
            else:
                notes.append(f"{name} × {method}: {why.splitlines()[0]}")
                cells.append(f"{'n/a' if status == 'n/a' else 'FAIL'} [{len(notes)}]")
        lines.append(f"| {name} | {row.get('_head', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"[{i}] {text}" for i, text in enumerate(notes, 1)])


# ----------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_architecture_matrix():
    """Every (architecture, method) works or raises an XattrError; prints the table of docs/guides/models.md."""
    start = time.perf_counter()
    matrix = run_matrix()
    print("\n" + markdown(matrix) + f"\n\n({time.perf_counter() - start:.0f} s)")
    failed = {(n, m): v for n, row in matrix.items() for m, v in row.items() if v.startswith("FAIL")}
    assert not failed, failed


#: Architectures whose head layout is checked in the default run (fused QKV, ALiBi, local attention,
#: head_dim != hidden/heads); the others in the slow run.
LAYOUT_CHECKED_BY_DEFAULT = ("GPT-NeoX (Pythia)", "OPT", "Falcon", "BLOOM", "ModernBERT", "Gemma")


@pytest.mark.parametrize("name", [n if n in LAYOUT_CHECKED_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n, _ in ARCHITECTURES if n not in MATRIX_NAMES])
def test_adapter_splits_heads_in_the_models_order(name):
    """Zeroing head h's attention in layer 0 (patched softmax) zeroes exactly slice h of the output
    projection's input and leaves the other heads' slices as they were: the adapter's head order is
    the model's. Per-head outputs also add up to the projection's output minus its bias."""
    ex = load(name)
    enc = ex.encode(TEXTS.get(ex.head, TEXTS["classifier"]))
    H, k = ex.n_heads, ex.adapter.head_dim
    original = torch.nn.functional.softmax

    def run(zero_head: int | None):
        seen, calls = {}, [0]

        def patched(x, *args, **kwargs):
            out = original(x, *args, **kwargs)
            if out.dim() == 4 and out.shape[1] == H and calls[0] == 0 and zero_head is not None:
                out = out.clone()
                out[:, zero_head] = 0
            calls[0] += out.dim() == 4 and out.shape[1] == H
            return out

        torch.nn.functional.softmax = patched
        try:
            with torch.no_grad(), ex.restored():
                ex.add_hook(ex.adapter.out_projections[0], lambda m, args: seen.setdefault("z", args[0]), pre=True)
                ex.add_hook(ex.adapter.out_projections[0], lambda m, args, out: seen.setdefault("out", out), pre=False)
                ex.forward(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        finally:
            torch.nn.functional.softmax = original
        assert calls[0] >= ex.n_layers, f"{name}: softmax over ({H}-head) attention was not called per layer"
        return seen

    base = run(None)
    z = base["z"][0].reshape(enc.n, H, k)
    heads = ex.adapter.split_heads(0, base["z"][0])  # (n, H, d)
    bias = ex.adapter.projection_bias(0)
    torch.testing.assert_close(heads.sum(1) + (0 if bias is None else bias), base["out"][0], atol=1e-5, rtol=1e-4)
    for h in (0, H - 1):
        zh = run(h)["z"][0].reshape(enc.n, H, k)
        assert zh[:, h].abs().max() == 0, f"{name}: head {h}'s slice is not zeroed"
        others = [i for i in range(H) if i != h]
        torch.testing.assert_close(zh[:, others], z[:, others])
        assert z[:, h].abs().max() > 0


def test_sig_prefix_reuse_is_exact_for_sliding_window_models():
    """Mistral with an 8-token window over an 11-token text: SIG with the cached-prefix speed-up
    gives the scores without it (a sliding-window cache drops the prefix's early keys, so reuse is
    switched off there; before, tokens after the window scored up to 25% off their exact limit)."""
    ex = load("Mistral")
    text = TEXTS["causal_lm"]
    assert ex.sliding_window == 8 < ex.encode(text).n
    # chunks of 4 rows = one token's 4 nodes each: every chunk after the first starts after a cached prefix
    fast = ex.attribute(text, method="sig", steps=4, prefix_reuse=True, batch_size=4)
    plain = ex.attribute(text, method="sig", steps=4, prefix_reuse=False, batch_size=4)
    np.testing.assert_allclose(fast.raw, plain.raw, rtol=1e-6, atol=1e-8)


def test_modernbert_local_layers_attend_within_their_window():
    """ModernBERT's local layers (every layer but each global_attn_every_n_layers-th) put no attention
    on keys more than local_attention/2 tokens away; its global layers do."""
    ex = load("ModernBERT")
    cap = ex.capture(TEXTS["masked_lm"])
    n, half = cap.encoding.n, ex.config.local_attention // 2
    far = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() > half
    for layer in range(ex.n_layers):
        outside = cap.attentions[layer][:, far].abs().max()
        if layer % ex.config.global_attn_every_n_layers:
            assert outside == 0, f"local layer {layer} attends {float(outside)} outside its window"
        else:
            assert outside > 0
