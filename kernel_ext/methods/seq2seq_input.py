"""Encoder-decoder inputs (T5, BART): a source text and a decoder prefix, as one token sequence.

The explained prediction is the decoder's next token after ``prefix`` (the target text so far, or
the tokens generated so far). The tokens of every result are the source tokens (with the special
tokens the tokenizer adds, e.g. ``</s>``) followed by the decoder's input tokens: its start token
(``decoder_start_token_id``) and the prefix. Position ``n_source + t`` is decoder input t; the
prediction is read at the last decoder position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..core.capture import Capture
from ..errors import InputError, ModelError
from ..results import Attribution

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession


@dataclass
class Seq2SeqInput:
    """Source ids (1, n_s) and decoder input ids (1, n_t) on the model's device, and the joint tokens."""

    source: str
    source_ids: torch.Tensor
    source_mask: torch.Tensor
    decoder_ids: torch.Tensor
    tokens: list[str]
    special_mask: list[bool]  # source special tokens and the decoder start token
    n_source: int

    @property
    def n(self) -> int:
        return len(self.tokens)

    @property
    def n_target(self) -> int:
        return self.n - self.n_source

    @property
    def readout(self) -> int:
        """The joint position whose output predicts the explained token (the last decoder input)."""
        return self.n - 1

    def with_token(self, token_id: int, token: str) -> "Seq2SeqInput":
        """The input with one more decoder token appended (the next step of generation)."""
        ids = torch.cat([self.decoder_ids, torch.tensor([[int(token_id)]], device=self.decoder_ids.device)], dim=1)
        return Seq2SeqInput(self.source, self.source_ids, self.source_mask, ids, self.tokens + [token],
                            self.special_mask + [False], self.n_source)


def attribution(ex, item: Seq2SeqInput, method: str, scores, raw, target, prediction, options: dict) -> Attribution:
    """An Attribution over the joint tokens (``options["n_source"]`` says where the decoder's tokens begin)."""
    return Attribution(tokens=list(item.tokens), scores=np.asarray(scores, dtype=np.float64),
                       raw=np.asarray(raw, dtype=np.float64), target=target.public, target_label=target.label,
                       method=method, options={"n_source": item.n_source, **options}, prediction=prediction,
                       text=item.source, model=ex.name)


def start_token(ex: "ModelSession") -> int:
    config = ex.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(ex.model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise ModelError(f"{ex.name} has no decoder_start_token_id in its config; set it to explain the decoder")
    return int(start)


def prefix_ids(ex: "ModelSession", prefix: Any) -> list[int]:
    """Decoder prefix as token ids: "" / None -> [], a text (tokenised without special tokens), or ids."""
    if prefix is None or prefix == "":
        return []
    if isinstance(prefix, str):
        with ex.lock:
            return list(ex.tokenizer(prefix, add_special_tokens=False)["input_ids"])
    if isinstance(prefix, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in prefix):
        vocab = ex.model.get_output_embeddings().weight.shape[0]
        if any(not 0 <= i < vocab for i in prefix):
            raise InputError(f"prefix token ids must lie in 0..{vocab - 1}")
        return list(prefix)
    raise InputError(f"prefix must be the target text so far (a string) or a list of token ids, not {prefix!r}")


def prepare(ex: "ModelSession", source: Any, prefix: Any = None, truncate: bool = False) -> Seq2SeqInput:
    """Encode the source text and build the decoder input [start] + prefix."""
    if not isinstance(source, str):
        raise InputError(f"{ex.name} is an encoder-decoder: give the source as a text, not {type(source).__name__}")
    encoding = ex.encode(source, truncate=truncate)
    ids = [start_token(ex)] + prefix_ids(ex, prefix)
    with ex.lock:
        target_tokens = ex.tokenizer.convert_ids_to_tokens(ids)
    decoder = torch.tensor([ids], device=ex.device)
    return Seq2SeqInput(source, encoding.input_ids, encoding.attention_mask, decoder,
                        list(encoding.tokens) + list(target_tokens), list(encoding.special_mask) +
                        [True] + [False] * (len(ids) - 1), encoding.n)


def embedders(ex: "ModelSession") -> tuple[torch.nn.Module, torch.nn.Module]:
    """The encoder's and the decoder's token embeddings (scaled as the model scales them, e.g. BART's
    ``scale_embedding``): what ``inputs_embeds`` / ``decoder_inputs_embeds`` replace."""
    encoder, decoder = ex.model.get_encoder(), ex.model.get_decoder()
    enc = getattr(encoder, "embed_tokens", None) or ex.model.get_input_embeddings()
    dec = getattr(decoder, "embed_tokens", None) or ex.model.get_input_embeddings()
    return enc, dec


def forward(ex: "ModelSession", item: Seq2SeqInput, *, source_embeds=None, decoder_embeds=None, attentions=False):
    """One forward pass (rows = the embeddings' batch, else 1). Returns the HF Seq2SeqLMOutput."""
    kwargs: dict[str, Any] = {"use_cache": False}
    rows = 1 if source_embeds is None else source_embeds.shape[0]
    kwargs["attention_mask"] = item.source_mask.expand(rows, -1)
    if source_embeds is None:
        kwargs["input_ids"] = item.source_ids
    else:
        kwargs["inputs_embeds"] = source_embeds
    if decoder_embeds is None:
        kwargs["decoder_input_ids"] = item.decoder_ids
    else:
        kwargs["decoder_inputs_embeds"] = decoder_embeds
    if attentions:
        kwargs["output_attentions"] = True
    return ex.model(**kwargs)


def capture(ex: "ModelSession", item: Seq2SeqInput, target: Any = None, *, attention_grads: bool = False) -> Capture:
    """One forward (and a backward pass when ``attention_grads``) over the source and decoder input -> a
    :class:`~xattr_lab.core.capture.Capture`: attentions = the encoder's (L_e, H, n_s, n_s), with the decoder's
    (L_d, H, n_t, n_t) and the cross-attention (L_d, H, n_t, n_s); their gradients w.r.t. the target score, or None."""
    enc_embed, dec_embed = embedders(ex)
    with ex.restored(), (torch.enable_grad() if attention_grads else torch.no_grad()):
        src = enc_embed(item.source_ids).detach().requires_grad_(attention_grads)
        tgt = dec_embed(item.decoder_ids).detach().requires_grad_(attention_grads)
        out = forward(ex, item, source_embeds=src, decoder_embeds=tgt, attentions=True)
        maps = [out.encoder_attentions, out.decoder_attentions, out.cross_attentions]
        if any(not m or any(a is None for a in m) for m in maps):
            raise ModelError(f"{ex.name} returned no attention maps; load it with attn_implementation='eager'")
        position = item.n_target - 1
        row = out.logits[0, position]
        resolved = ex.resolve_target(target, row, position)
        score = resolved.score(out.logits)[0]
        grads = None
        if attention_grads:
            flat = [a for m in maps for a in m]
            found = torch.autograd.grad(score, flat, allow_unused=True)
            per = [torch.zeros_like(a[0]) if g is None else g[0] for g, a in zip(found, flat)]
            Le, Ld = len(maps[0]), len(maps[1])
            grads = tuple(torch.stack(p).detach().float().cpu() for p in (per[:Le], per[Le:Le + Ld], per[Le + Ld:]))

    def stack(m):
        return torch.stack([a[0] for a in m]).detach().float().cpu()

    enc_grads, dec_grads, cross_grads = grads if grads is not None else (None, None, None)
    return Capture(item, resolved, float(score.detach()), row.detach().float().cpu(), ex.prediction(row),
                   stack(maps[0]), enc_grads, decoder_attentions=stack(maps[1]), cross_attentions=stack(maps[2]),
                   decoder_attention_grads=dec_grads, cross_attention_grads=cross_grads)
