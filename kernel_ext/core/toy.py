"""A toy with a known circuit and decoy heads that are exactly as active: a built induction model.

The task: prompts are ``[BOS] x x`` (positive: a 10-token segment repeated) or ``[BOS] x y``
(negative: fresh tokens), and the model should predict each token of the second copy from the
first. Every prompt draws its tokens from one *half* of the vocabulary, chosen by a fair coin that
is independent of the class (``t0 .. t31`` or ``t32 .. t63``; token ``t`` has half ``t // 32`` and
*key* ``t % 32``).

The model (2 attention-only layers x 4 heads, no LayerNorm, no MLP) is not trained: its weights are
set by :func:`build_toy_model` so that the circuit is known by construction (docs/ARCHITECTURE.md,
section "SAE circuits"):

- circuit, twice in parallel: a **duplicate-token head** in layer 0 (heads 0.0 and 0.2) attends
  from each token to its earlier occurrence and writes that position (and the token's key); a
  **copy head** in layer 1 (1.1 reads 0.0, 1.3 reads 0.2) attends to the position after the one
  pointed to and writes the key found there, which the unembedding turns into the prediction (the
  half comes from the current token directly). On positives they fire at the ten tokens of the
  second copy; on negatives never;
- decoys: heads 0.1 and 0.3 attend from each token of the second half to the token ten places back
  when the prompt's half is 0 (0.1) or 1 (0.3), and write the same kind of vector; heads 1.0 and
  1.2 copy from where those point, like the copy heads. Nothing reads their outputs.

Each decoy fires on half the prompts (by the half, a coin independent of the class) with outputs
distributed exactly like its circuit twin's (which fires on the positives, half the prompts), so a
head's output norm, variance and attention entropy, pooled over both classes, cannot tell circuit
from decoy; only how the output differs between positives and negatives can. Every attention row
is one-hot in float32 (scores differ by >= 110), so every head's attention entropy is 0.

:func:`load_toy` returns an :class:`~xattr_lab.Explainer` (cached under
``xattr_lab.zoo.cache_dir()/toy-induction/``): the attention output projections are named like
Llama's (``layers.{l}.self_attn.o_proj``) and the tokenizer is a Hugging Face fast tokenizer
(word-level, whitespace-separated ``t{i}`` tokens).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import InputError
from .cache import cached

TOY_NAME = "toy-induction"
TOY_RECIPE = {
    "kind": "built", "version": 2, "vocab_tokens": 64, "layers": 2, "heads": 4, "head_dim": 128,
    "max_positions": 64, "offset": 10, "copy_logit": 3.0, "half_logit": 10.0,
}
SPECIAL = ["[PAD]", "[BOS]", "[UNK]"]
#: layer-0 head -> its job ("dup": duplicate-token head of the circuit; an int g: decoy that fires
#: on prompts of half g); layer-1 head -> the layer-0 head whose pointer it reads
LAYER0 = ("dup", 0, "dup", 1)
LAYER1 = (1, 0, 3, 2)
CIRCUIT_HEADS = ((0, 0), (0, 2), (1, 1), (1, 3))
SINK, FIRE, HALF = 330.0, 440.0, 220.0  # attention scores: BOS sink, firing key, one of a decoy's two conditions


class ToyConfig:
    """Minimal config with the attributes :class:`xattr_lab.Explainer` reads.

    ``head_dim``: width of each head's query/key/value (default hidden_size // heads);
    ``layer_norm``: pre-LayerNorm in each layer and before the unembedding (the built toy has none).
    """

    model_type = "xattr-toy-attention-only"

    def __init__(self, vocab_size: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 max_position_embeddings: int, pad_token_id: int = 0, bos_token_id: int = 1,
                 head_dim: int | None = None, layer_norm: bool = True):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.layer_norm = layer_norm
        self._attn_implementation = "eager"
        self._name_or_path = TOY_NAME
        self.id2label: dict = {}
        self.label2id: dict = {}
        self.num_labels = 0

    def to_dict(self) -> dict[str, Any]:
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings", "pad_token_id", "bos_token_id", "head_dim", "layer_norm")
        return {k: getattr(self, k) for k in keys}


class ToyAttention(nn.Module):
    def __init__(self, d: int, heads: int, head_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim or d // heads
        inner = heads * self.head_dim
        self.q_proj = nn.Linear(d, inner, bias=False)
        self.k_proj = nn.Linear(d, inner, bias=False)
        self.v_proj = nn.Linear(d, inner, bias=False)
        self.o_proj = nn.Linear(inner, d, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5 + bias  # (B, H, n, n)
        attn = torch.softmax(scores, dim=-1)
        z = (attn @ v).transpose(1, 2).reshape(B, n, self.heads * self.head_dim)
        return self.o_proj(z), attn


class ToyLayer(nn.Module):
    def __init__(self, d: int, heads: int, head_dim: int | None = None, layer_norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(d) if layer_norm else nn.Identity()
        self.self_attn = ToyAttention(d, heads, head_dim)


class AttentionOnlyForCausalLM(nn.Module):
    """Token + learned position embeddings, (pre-LayerNorm) attention layers (no MLP), unembedding.

    forward(input_ids | inputs_embeds, attention_mask) returns a transformers ``CausalLMOutput``
    with logits (B, n, V) and, when asked, attentions L x (B, H, n, n) and hidden states.
    """

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        d, norm = config.hidden_size, getattr(config, "layer_norm", True)
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, d)
        self.layers = nn.ModuleList(ToyLayer(d, config.num_attention_heads, getattr(config, "head_dim", None), norm)
                                    for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(d) if norm else nn.Identity()
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, output_attentions=False,
                output_hidden_states=False, use_cache=None, **_: Any):
        from transformers.modeling_outputs import CausalLMOutput

        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, n, _d = x.shape
        x = x + self.embed_positions(torch.arange(n, device=x.device))
        allowed = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool()[:, None, None, :]
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, torch.finfo(x.dtype).min)
        hidden, attentions = [x], []
        for layer in self.layers:
            out, attn = layer.self_attn(layer.norm(x), bias)
            x = x + out
            hidden.append(x)
            attentions.append(attn)
        logits = self.lm_head(self.norm(x))
        return CausalLMOutput(
            logits=logits,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


# ---------------------------------------------------------------------------- the built weights
def _layout(recipe: dict) -> dict[str, Any]:
    """Residual-stream layout: slices of the token one-hot, position one-hot, a constant, and each head's output."""
    V, P, H = recipe["vocab_tokens"], recipe["max_positions"], recipe["heads"]
    n_tok, half = len(SPECIAL) + V, V // 2
    tok, pos, one = slice(0, n_tok), slice(n_tok, n_tok + P), n_tok + P
    start, out0, out1 = one + 1, [], []
    for _ in range(H):  # layer 0: pointer (P) + key (half)
        out0.append((slice(start, start + P), slice(start + P, start + P + half)))
        start += P + half
    for _ in range(H):  # layer 1: key (half)
        out1.append(slice(start, start + half))
        start += half
    return {"tok": tok, "pos": pos, "one": one, "out0": out0, "out1": out1, "d": start, "half": half}


def build_toy_model(recipe: dict | None = None) -> AttentionOnlyForCausalLM:
    """The toy with its weights set by hand (module docstring); deterministic, no training."""
    recipe = {**TOY_RECIPE, **(recipe or {})}
    V, P, H, k = recipe["vocab_tokens"], recipe["max_positions"], recipe["heads"], recipe["head_dim"]
    if recipe["layers"] != 2 or H != len(LAYER0) or V % 2 or k < P + V // 2 + 1:
        raise InputError(f"the built toy has 2 layers of {len(LAYER0)} heads, an even vocabulary and head_dim >= "
                         f"max_positions + vocab/2 + 1; got {recipe}")
    lay = _layout(recipe)
    d, half, S = lay["d"], lay["half"], len(SPECIAL)
    config = ToyConfig(S + V, d, 2, H, P, head_dim=k, layer_norm=False)
    model = AttentionOnlyForCausalLM(config)
    scale = k ** 0.5  # scores are divided by sqrt(head_dim)
    content = torch.arange(S, S + V)  # token ids of t0 .. t{V-1}
    key_of, half_of = (content - S) % half, (content - S) // half
    pos0, tok0, one = lay["pos"].start, lay["tok"].start, lay["one"]
    shift = recipe["offset"]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed_tokens.weight[torch.arange(S + V), tok0 + torch.arange(S + V)] = 1.0
        model.embed_tokens.weight[:, one] = 1.0
        model.embed_positions.weight[torch.arange(P), pos0 + torch.arange(P)] = 1.0
        for layer, jobs in enumerate((LAYER0, LAYER1)):
            att = model.layers[layer].self_attn
            Wq, Wk, Wv, Wo = (m.weight for m in (att.q_proj, att.k_proj, att.v_proj, att.o_proj))
            for h, job in enumerate(jobs):
                r = h * k  # first row of head h in q/k/v, first column in o
                Wq[r, one], Wk[r, tok0 + 1] = SINK * scale, 1.0  # every query -> BOS key: the sink
                if layer == 0 and job == "dup":  # key match (half is shared within a prompt), minus itself
                    Wq[r + 1 + key_of, tok0 + content] = FIRE * scale
                    Wk[r + 1 + key_of, tok0 + content] = 1.0
                    Wq[r + 1 + half + torch.arange(P), pos0 + torch.arange(P)] = -FIRE * scale
                    Wk[r + 1 + half + torch.arange(P), pos0 + torch.arange(P)] = 1.0
                elif layer == 0:  # decoy: the key `offset` places back, and keys of half `job`
                    q_pos = torch.arange(shift, P)
                    Wq[r + 1 + q_pos - shift, pos0 + q_pos] = HALF * scale
                    Wk[r + 1 + torch.arange(P), pos0 + torch.arange(P)] = 1.0
                    Wq[r + 1 + P, one] = HALF * scale
                    Wk[r + 1 + P, tok0 + content[half_of == job]] = 1.0
                else:  # copy: the key one after the position that layer-0 head `job` points to
                    pointer = lay["out0"][job][0]
                    q_pos = torch.arange(P - 1)
                    Wq[r + 1 + q_pos + 1, pointer.start + q_pos] = FIRE * scale
                    Wk[r + 1 + torch.arange(P), pos0 + torch.arange(P)] = 1.0
                if layer == 0:  # value: position (BOS's is 0) and key of the attended token -> own subspace
                    Wv[r + torch.arange(1, P), pos0 + torch.arange(1, P)] = 1.0
                    Wv[r + P + key_of, tok0 + content] = 1.0
                    pointer, key = lay["out0"][h]
                    Wo[pointer.start + torch.arange(1, P), r + torch.arange(1, P)] = 1.0
                    Wo[key.start + torch.arange(half), r + P + torch.arange(half)] = 1.0
                else:  # value: key of the attended token -> own subspace
                    Wv[r + key_of, tok0 + content] = 1.0
                    Wo[lay["out1"][h].start + torch.arange(half), r + torch.arange(half)] = 1.0
        W = model.lm_head.weight  # (vocab, d)
        for h, (layer, head) in enumerate(CIRCUIT_HEADS):
            if layer == 1:
                W[content, lay["out1"][head].start + key_of] = recipe["copy_logit"]
        same_half = (half_of[:, None] == half_of[None, :]).float() * recipe["half_logit"]
        W[content[:, None], tok0 + content[None, :]] = same_half  # the half of the current token
    model.eval()
    return model


# ---------------------------------------------------------------------------- tokenizer and data
def toy_tokenizer(vocab_tokens: int = TOY_RECIPE["vocab_tokens"]):
    """Word-level fast tokenizer: [PAD]=0, [BOS]=1 (prepended), [UNK]=2, then t0 .. t{vocab_tokens-1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + [f"t{i}" for i in range(vocab_tokens)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]", unk_token="[UNK]")


def induction_prompts(n: int = 100, length: int = 10, seed: int = 0,
                      vocab_tokens: int = TOY_RECIPE["vocab_tokens"]) -> tuple[list[str], list[str]]:
    """(positives, negatives), n of each, paired: "x x" (a segment repeated) vs "x y" (fresh tokens).

    Every prompt is ``2*length`` tokens (plus [BOS]) from one half of the vocabulary (``t0 ..`` or
    ``.. t{vocab_tokens-1}``), the same for a pair and drawn by a fair coin independent of the
    class; a segment has no repeated token and y shares no token with x, so only the positives can
    be continued by induction.
    """
    half = vocab_tokens // 2
    if length < 1 or 2 * length > half:
        raise InputError(f"length must be between 1 and {half // 2}: a prompt uses 2*length distinct tokens "
                         f"of one half of the {vocab_tokens} tokens")
    g = torch.Generator().manual_seed(seed)
    words = lambda seq: " ".join(f"t{t}" for t in seq)  # noqa: E731
    positives, negatives = [], []
    for _ in range(n):
        offset = half * int(torch.randint(0, 2, (), generator=g))
        drawn = (torch.randperm(half, generator=g)[: 2 * length] + offset).tolist()
        x, y = drawn[:length], drawn[length:]
        positives.append(words(x + x))
        negatives.append(words(x + y))
    return positives, negatives


def induction_metric(prompts: list[str], tokenizer, length: int = 10) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Metric for "x x" prompts: mean log-probability of the correct copied token (nats).

    Position p (0 = [BOS]) of the second copy predicts token p+1, which equals token p+1-length;
    averaged over the second copy after its first token (the first is not predictable). Returns a
    :data:`xattr_lab.circuits.Metric`: (logits (R, n, V), prompt index (R,)) -> (R,).
    """
    ids = torch.as_tensor([tokenizer(p)["input_ids"] for p in prompts])  # (P, 1 + 2*length)
    if ids.shape[1] != 1 + 2 * length:
        raise InputError(f"prompts must be 2*{length} tokens long, like induction_prompts(length={length})")
    positions = torch.arange(length + 1, 2 * length)
    targets = ids[:, positions + 1]

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits[:, positions].float(), dim=-1)
        wanted = targets[index.cpu()].to(logits.device)
        return logp.gather(-1, wanted[..., None])[..., 0].mean(dim=-1)

    return metric


# ---------------------------------------------------------------------------- build / load
def _build(out: Path, progress: bool = True) -> dict:
    model = build_toy_model()
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    return {"alias": TOY_NAME, "recipe": TOY_RECIPE}


def _load(folder: Path):
    from .cache import read_manifest

    built = (read_manifest(folder) or {}).get("recipe")
    if built != TOY_RECIPE:  # a build from another recipe (an older, trained toy): rebuild
        raise ValueError(f"it was built with another recipe ({built}), not {TOY_RECIPE}")
    config = ToyConfig(**json.loads((folder / "config.json").read_text()))
    model = AttentionOnlyForCausalLM(config)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, toy_tokenizer(config.vocab_size - len(SPECIAL))


def load_toy_model(rebuild: bool = False, progress: bool = True) -> tuple[AttentionOnlyForCausalLM, Any]:
    """(model, tokenizer) of the built toy induction model (cached once)."""
    return cached(TOY_NAME, lambda out: _build(out, progress), _load, rebuild)


def load_toy(device: Any = "cpu", rebuild: bool = False, progress: bool = True, session_class: type | None = None):
    """The toy as a ``session_class`` (default ModelSession; ``xattr_lab.toy.load_toy`` gives an Explainer)."""
    from .session import ModelSession

    model, tokenizer = load_toy_model(rebuild=rebuild, progress=progress)
    return (session_class or ModelSession)(model, tokenizer, device=device, name=TOY_NAME)
