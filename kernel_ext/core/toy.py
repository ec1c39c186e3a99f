"""A toy with a known circuit: a 2-layer attention-only transformer trained on induction.

The model reads a [BOS] token and random tokens ``t0 .. t63``. The training sequences repeat
a random segment later at a random offset and the model is trained to predict the copy; position
alone cannot solve this (the offset varies), so it learns the induction circuit: a previous-token
head in layer 0 writes "my previous token was A" into each position, and an induction head in layer
1 attends from the current token A to the token after A's earlier occurrence and copies it. Two
recipe options are off by default: ``rule_fraction`` (a share of sequences following token i =
f(token i-3), a competing "3-back" job) and ``head_lasso`` (a group-lasso penalty on each head's
rows of W_O, against redundant copies of circuit heads); with both on (0.5, 3e-3, 700 steps) the
model did not learn induction.

:func:`load_toy` builds it once (800 Adam steps: 800 s measured on the shared, heavily loaded
2-core box, about 1-2 min when it is idle), caches it under
``xattr_lab.zoo.cache_dir()/toy-induction/`` and returns an :class:`~xattr_lab.Explainer`, so
every circuits function runs on it unchanged: its attention output projections are named like
Llama's (``layers.{l}.self_attn.o_proj``) and its tokenizer is a Hugging Face fast tokenizer
(word-level, whitespace-separated ``t{i}`` tokens).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .cache import cached

TOY_NAME = "toy-induction"
TOY_RECIPE = {
    "vocab_tokens": 64, "hidden_size": 64, "layers": 2, "heads": 4, "max_positions": 64,
    "seq_len": 32, "min_segment": 4, "max_segment": 12, "steps": 800, "batch_size": 64, "lr": 3e-3, "seed": 0,
    "rule_fraction": 0.0, "head_lasso": 0.0,
}
SPECIAL = ["[PAD]", "[BOS]", "[UNK]"]


class ToyConfig:
    """Minimal config with the attributes :class:`xattr_lab.Explainer` reads."""

    model_type = "xattr-toy-attention-only"

    def __init__(self, vocab_size: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 max_position_embeddings: int, pad_token_id: int = 0, bos_token_id: int = 1):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self._attn_implementation = "eager"
        self._name_or_path = TOY_NAME
        self.id2label: dict = {}
        self.label2id: dict = {}
        self.num_labels = 0

    def to_dict(self) -> dict[str, Any]:
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings", "pad_token_id", "bos_token_id")
        return {k: getattr(self, k) for k in keys}


class ToyAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5 + bias  # (B, H, n, n)
        attn = torch.softmax(scores, dim=-1)
        z = (attn @ v).transpose(1, 2).reshape(B, n, d)  # (B, n, H*head_dim)
        return self.o_proj(z), attn


class ToyLayer(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.self_attn = ToyAttention(d, heads)


class AttentionOnlyForCausalLM(nn.Module):
    """Token + learned position embeddings, pre-LayerNorm attention layers (no MLP), unembedding.

    forward(input_ids | inputs_embeds, attention_mask) returns a transformers ``CausalLMOutput``
    with logits (B, n, V) and, when asked, attentions L x (B, H, n, n) and hidden states.
    """

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, d)
        self.layers = nn.ModuleList(ToyLayer(d, config.num_attention_heads) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

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


def _segment_batch(generator: torch.Generator, batch: int, recipe: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch: ids (B, 1+seq_len) and a loss mask (B, seq_len) over predictions of copied tokens."""
    V, S = recipe["vocab_tokens"], recipe["seq_len"]
    ids = torch.randint(len(SPECIAL), len(SPECIAL) + V, (batch, S), generator=generator)
    loss_mask = torch.zeros(batch, S, dtype=torch.bool)
    rule = torch.randperm(V, generator=torch.Generator().manual_seed(12345)) + len(SPECIAL)  # fixed map f
    for row in range(batch):
        if recipe.get("rule_fraction", 0.0) > 0 and float(torch.rand((), generator=generator)) < recipe["rule_fraction"]:
            # competing task: token i = f(token i-3), which needs a "3-back" head, not induction
            for i in range(3, S):
                ids[row, i] = rule[ids[row, i - 3] - len(SPECIAL)]
            loss_mask[row, 3:] = True
            continue
        T = int(torch.randint(recipe["min_segment"], recipe["max_segment"] + 1, (1,), generator=generator))
        a = int(torch.randint(0, S - 2 * T + 1, (1,), generator=generator))
        b = int(torch.randint(a + T, S - T + 1, (1,), generator=generator))
        ids[row, b : b + T] = ids[row, a : a + T]
        loss_mask[row, b + 1 : b + T] = True  # token b+j (j >= 1) is predictable from the first copy
    bos = torch.full((batch, 1), 1, dtype=torch.long)
    return torch.cat([bos, ids], dim=1), loss_mask


def induction_prompts(n: int = 100, length: int = 10, seed: int = 0,
                      vocab_tokens: int = TOY_RECIPE["vocab_tokens"]) -> tuple[list[str], list[str]]:
    """(positives, negatives), n of each: "x x" (a random segment repeated) vs "x y" (fresh tokens).

    Every prompt is ``2*length`` tokens (plus [BOS]); a segment has no repeated token, and y shares
    no token with x, so only the positives can be continued by induction.
    """
    g = torch.Generator().manual_seed(seed)
    positives, negatives = [], []
    for _ in range(n):
        x = torch.randperm(vocab_tokens, generator=g)[:length].tolist()
        rest = [t for t in torch.randperm(vocab_tokens, generator=g).tolist() if t not in x][:length]
        words = lambda seq: " ".join(f"t{t}" for t in seq)  # noqa: E731
        positives.append(words(x + x))
        negatives.append(words(x + rest))
    return positives, negatives


def induction_metric(prompts: list[str], tokenizer, length: int = 10) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Metric for "x x" prompts: mean log-probability of the correct copied token (nats).

    Position p (0 = [BOS]) of the second copy predicts token p+1, which equals token p+1-length;
    averaged over the second copy after its first token (the first is not predictable). Returns a
    :data:`xattr_lab.circuits.Metric`: (logits (R, n, V), prompt index (R,)) -> (R,).
    """
    ids = torch.as_tensor([tokenizer(p)["input_ids"] for p in prompts])  # (P, 1 + 2*length)
    if ids.shape[1] != 1 + 2 * length:
        raise ValueError(f"prompts must be 2*{length} tokens long, like induction_prompts(length={length})")
    positions = torch.arange(length + 1, 2 * length)
    targets = ids[:, positions + 1]

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits[:, positions].float(), dim=-1)
        wanted = targets[index.cpu()].to(logits.device)
        return logp.gather(-1, wanted[..., None])[..., 0].mean(dim=-1)

    return metric


# ---------------------------------------------------------------------------- build / load
def train_toy(recipe: dict | None = None, progress: bool = True) -> tuple[AttentionOnlyForCausalLM, dict]:
    """Train the toy from scratch; returns (model, record with losses, copy accuracy and seconds)."""
    recipe = {**TOY_RECIPE, **(recipe or {})}
    start = time.perf_counter()
    config = ToyConfig(len(SPECIAL) + recipe["vocab_tokens"], recipe["hidden_size"], recipe["layers"],
                       recipe["heads"], recipe["max_positions"])
    with torch.random.fork_rng():
        torch.manual_seed(recipe["seed"])
        model = AttentionOnlyForCausalLM(config)
    generator = torch.Generator().manual_seed(recipe["seed"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.01)
    steps = recipe["steps"]
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe["lr"], total_steps=steps, pct_start=0.1)
    model.train()
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="training toy-induction", leave=False)
    for _ in iterator:
        ids, loss_mask = _segment_batch(generator, recipe["batch_size"], recipe)
        logits = model(input_ids=ids[:, :-1]).logits
        loss = nn.functional.cross_entropy(logits[loss_mask], ids[:, 1:][loss_mask])
        if recipe.get("head_lasso"):  # group lasso on each head's rows of W_O: no redundant spare heads
            for layer in model.layers:
                w = layer.self_attn.o_proj.weight  # (d, H*head_dim)
                loss = loss + recipe["head_lasso"] * w.view(w.shape[0], config.num_attention_heads, -1).norm(dim=(0, 2)).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        ids, loss_mask = _segment_batch(torch.Generator().manual_seed(10_000 + recipe["seed"]), 512, recipe)
        logits = model(input_ids=ids[:, :-1]).logits
        accuracy = float((logits.argmax(-1)[loss_mask] == ids[:, 1:][loss_mask]).float().mean())
        final_loss = float(nn.functional.cross_entropy(logits[loss_mask], ids[:, 1:][loss_mask]))
    record = {"alias": TOY_NAME, "recipe": recipe, "copy_accuracy": round(accuracy, 4),
              "copy_loss": round(final_loss, 4), "build_seconds": round(time.perf_counter() - start, 1)}
    return model, record


def _build(out: Path, progress: bool = True) -> dict:
    model, record = train_toy(progress=progress)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    return record


def _load(folder: Path):
    from .cache import read_manifest

    built = (read_manifest(folder) or {}).get("recipe")
    if built != TOY_RECIPE:  # a build from another recipe (an experiment, an older release): rebuild
        raise ValueError(f"it was built with another recipe ({built}), not {TOY_RECIPE}")
    config = ToyConfig(**json.loads((folder / "config.json").read_text()))
    model = AttentionOnlyForCausalLM(config)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, toy_tokenizer(config.vocab_size - len(SPECIAL))


def load_toy_model(rebuild: bool = False, progress: bool = True) -> tuple[AttentionOnlyForCausalLM, Any]:
    """(model, tokenizer) of the trained toy induction model (built and cached once)."""
    return cached(TOY_NAME, lambda out: _build(out, progress), _load, rebuild)


def load_toy(device: Any = "cpu", rebuild: bool = False, progress: bool = True, session_class: type | None = None):
    """The toy as a ``session_class`` (default ModelSession; ``xattr_lab.toy.load_toy`` gives an Explainer)."""
    from .session import ModelSession

    model, tokenizer = load_toy_model(rebuild=rebuild, progress=progress)
    return (session_class or ModelSession)(model, tokenizer, device=device, name=TOY_NAME)
