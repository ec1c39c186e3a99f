"""Captures: what forward (and backward) passes record, for one text or a batch of prompts.

:func:`capture` runs one forward pass (and, when asked, one backward pass) over one text and
returns the attention probabilities (L, H, n, n), their gradients with respect to the target
logit, the hidden states (L+1, n, d), and per-head outputs (L, H, n, d).

A head's output is its slice of the attention-output-projection input ``z`` times its rows of
W_O: its contribution to the residual stream, before the projection bias. One mechanism records
the projection inputs for both the single-text capture and the batched :func:`head_outputs`
(:func:`record_projection_inputs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..errors import InputError, ModelError
from . import batching, budget
from .encoding import Encoding
from .targets import Target

if TYPE_CHECKING:  # pragma: no cover
    from .session import ModelSession


@dataclass
class Capture:
    """What one forward (and optional backward) pass recorded for one input, of any input kind.

    input: the prepared input, which names the tokens (``.tokens``): a text's ``Encoding``, an image's
    ``ImageInput`` ([CLS] + patches), an encoder-decoder's ``Seq2SeqInput`` (source + decoder tokens).
    attentions: (L, H, n, n) post-softmax attention, float32 on cpu (an encoder-decoder's encoder
    self-attention, (L_e, H, n_s, n_s)).
    attention_grads: d target / d attention, as ``attentions``, or None.
    hidden_states: (L+1, n, d_model), or None.
    head_outputs: (L, H, n, d_model) per-head contribution to the residual stream, or None.
    logits: (C,) class logits, or (V,) logits at the target position.
    decoder_attentions (L_d, H, n_t, n_t) and cross_attentions (L_d, H, n_t, n_s), with their gradients:
    an encoder-decoder's other two stacks (None for every other kind).
    """

    input: Any
    target: Target
    target_score: float
    logits: torch.Tensor
    prediction: dict[str, float]
    attentions: torch.Tensor
    attention_grads: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    head_outputs: torch.Tensor | None = None
    decoder_attentions: torch.Tensor | None = None
    cross_attentions: torch.Tensor | None = None
    decoder_attention_grads: torch.Tensor | None = None
    cross_attention_grads: torch.Tensor | None = None

    @property
    def tokens(self) -> list[str]:
        return self.input.tokens

    @property
    def encoding(self) -> Any:
        """The prepared input under the name the text methods read (a text's ``Encoding``)."""
        return self.input


class _StopForward(Exception):
    """Raised from the last hook once everything needed is recorded: skips the rest of the model."""


def record_projection_inputs(
    session: "ModelSession",
    recorded: dict[int, torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda z: z.detach(),
    stop_after_last: bool = False,
) -> None:
    """Hook every attention output projection: ``recorded[layer] = reduce(z)``, z (B, n, H*head_dim).

    Must run inside ``with session.restored():`` (which removes the hooks). With
    ``stop_after_last`` the last layer's hook raises :class:`_StopForward` to skip the model head.
    """
    last = session.adapter.n_layers - 1
    for layer, proj in enumerate(session.adapter.out_projections):
        def hook(module, args, layer=layer):
            recorded[layer] = reduce(args[0])
            if stop_after_last and layer == last:
                raise _StopForward

        session.add_hook(proj, hook, pre=True)


def projection_inputs_by_batch(session: "ModelSession", ids: torch.Tensor, mask: torch.Tensor, batch_size: int,
                               reduce: Callable[[torch.Tensor], torch.Tensor]):
    """Yield, batch by batch, ``{layer: reduce(z)}`` for every attention output projection's input z.

    One forward per batch of ``ids``/``mask`` (N, n), stopped after the last projection; hooks and
    modes are restored when the generator finishes (run it to the end, or close it).
    """
    with session.restored(), torch.no_grad():
        store: dict[int, torch.Tensor] = {}
        record_projection_inputs(session, store, reduce, stop_after_last=True)
        for start in range(0, ids.shape[0], batch_size):
            store.clear()
            try:
                session.forward(input_ids=ids[start : start + batch_size], attention_mask=mask[start : start + batch_size])
            except _StopForward:
                pass
            yield dict(store)


def projection_inputs(session: "ModelSession", ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 64,
                      to_cpu: bool = False) -> list[torch.Tensor]:
    """Every layer's output-projection input z on these prompts: L x (N, n, H*k), float32, no grad
    (on the CPU with ``to_cpu``, else where the model runs)."""
    keep = (lambda z: z.detach().float().cpu()) if to_cpu else (lambda z: z.detach().float())
    parts: dict[int, list[torch.Tensor]] = {l: [] for l in range(session.adapter.n_layers)}
    for batch in projection_inputs_by_batch(session, ids, mask, batch_size, keep):
        for layer, z in batch.items():
            parts[layer].append(z)
    return [torch.cat(parts[l]) for l in range(session.adapter.n_layers)]


def _check_recorded(session: "ModelSession", recorded: dict[int, torch.Tensor]) -> None:
    L = session.adapter.n_layers
    if len(recorded) != L:
        raise ModelError(f"{session.name}: only {len(recorded)} of {L} attention output projections ran")


def capture(
    session: "ModelSession",
    text: str | Encoding,
    target: Any = None,
    *,
    attention_grads: bool = False,
    hidden_states: bool = False,
    head_outputs: bool = False,
    truncate: bool = False,
) -> Capture:
    """One forward pass (and a backward pass when ``attention_grads``) over one text.

    Refused with a :class:`~xattr_lab.errors.BudgetError` before it runs when its estimated peak
    memory (:func:`xattr_lab.core.budget.capture_parts`) is over the limit.
    """
    encoding = text if isinstance(text, Encoding) else session.encode(text, truncate=truncate)
    flags = {"attention_grads": attention_grads, "hidden_states": hidden_states, "head_outputs": head_outputs}
    shape = budget.shape_of(session)
    budget.check(budget.Estimate(f"capturing attention on {session.name} at {encoding.n:,} tokens",
                                 budget.capture_parts(shape, encoding.n, **flags)), session.device,
                 tokens_that_fit=lambda limit: budget.largest(
                     lambda n: sum(budget.capture_parts(shape, n, **flags).values()) <= limit, encoding.n))
    position = session.readout_position(encoding)
    recorded: dict[int, torch.Tensor] = {}
    # maps need eager attention: a lean pass (SDPA) left behind by anything must not make this fail
    with session.restored(), batching.attention(session.model, "eager"):
        if head_outputs:
            record_projection_inputs(session, recorded)
        with torch.enable_grad() if attention_grads else torch.no_grad():
            embeds = session.embed(encoding.input_ids).detach()
            if attention_grads:
                embeds.requires_grad_(True)
            out = session.forward(
                inputs_embeds=embeds,
                attention_mask=encoding.attention_mask,
                output_attentions=True,
                output_hidden_states=hidden_states,
            )
            attentions = out.attentions
            if not attentions or any(a is None for a in attentions):
                raise ModelError(
                    f"{session.name} returned no attention maps; load it with attn_implementation='eager' "
                    "(xattr.load does this for you)"
                )
            logits_row = session.target_logits(out.logits, position)
            resolved = session.resolve_target(target, logits_row, position)
            score = resolved.score(out.logits)[0]
            grads = None
            if attention_grads:
                grads = torch.autograd.grad(score, list(attentions), allow_unused=True)
                grads = torch.stack(  # each to cpu first: under a device map the layers live on several devices
                    [(torch.zeros_like(a[0]) if g is None else g[0]).float().cpu() for g, a in zip(grads, attentions)]
                )
        per_head = None
        if head_outputs:
            _check_recorded(session, recorded)
            split = session.adapter.split_heads
            per_head = torch.stack([split(l, recorded[l][0]).transpose(0, 1).float().cpu()
                                    for l in range(session.n_layers)])

    def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().float().cpu()

    widths = sorted({h.shape[-1] for h in out.hidden_states}) if hidden_states else []
    if len(widths) > 1:
        raise ModelError(f"{session.name}'s hidden states differ in width ({widths}: it projects the residual "
                         "stream, as OPT-350m's project_in/out do), so there is no one (L+1, n, d) stack of them "
                         "for the geometry of hidden states")

    return Capture(
        input=encoding,
        target=resolved,
        target_score=float(score.detach()),
        logits=cpu(logits_row),
        prediction=session.prediction(logits_row),
        attentions=torch.stack([cpu(a[0]) for a in attentions]),
        attention_grads=cpu(grads),
        hidden_states=torch.stack([cpu(h[0]) for h in out.hidden_states]) if hidden_states else None,
        head_outputs=cpu(per_head),
    )


# ---------------------------------------------------------------------------- batches of prompts
def check_prompts(prompts: Sequence[str], what: str, minimum: int = 1) -> list[str]:
    """``prompts`` as a list of at least ``minimum`` texts; an InputError for one string or too few."""
    if isinstance(prompts, str):
        raise InputError(f"{what} must be a list of texts, not one string; wrap it in a list")
    prompts = list(prompts)
    if len(prompts) < minimum:
        raise InputError(f"give at least {minimum} {what} prompts (got {len(prompts)})")
    return prompts


def encode_batch(session: "ModelSession", prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, n_max) input ids and attention mask on the session's device."""
    encodings = [session.encode(p) for p in prompts]
    n_max = max(e.n for e in encodings)
    pad = session.tokenizer.pad_token_id
    if pad is None:
        pad = 0
    ids = torch.full((len(encodings), n_max), int(pad), dtype=torch.long)
    mask = torch.zeros((len(encodings), n_max), dtype=torch.long)
    for row, e in enumerate(encodings):
        ids[row, : e.n] = e.input_ids[0].cpu()
        mask[row, : e.n] = e.attention_mask[0].cpu()
    return ids.to(session.device), mask.to(session.device)


def equal_lengths(mask: torch.Tensor, why: str) -> int:
    """The common token length of a batch's rows; an InputError when they differ."""
    lengths = mask.sum(dim=1)
    if int(lengths.min()) != int(lengths.max()):
        raise InputError(
            f"{why} needs prompts of equal token length, but these have {sorted(set(lengths.tolist()))} tokens; "
            "use prompts built from one template (xattr_lab.tasks keeps them equal) or position='mean'"
        )
    return int(lengths[0])


def progress_bar(iterable, total: int, desc: str, enabled: bool):
    """``iterable`` wrapped in a tqdm bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def head_outputs(
    session: "ModelSession",
    prompts: Sequence[str],
    position: str | int = "mean",
    batch_size: int = 32,
    progress: bool = True,
) -> torch.Tensor:
    """Each head's output into the residual stream, per prompt.

    Returns a float32 cpu tensor (examples, L*H, d_model), flat head index ``l*H + h``: head h of
    layer l's slice of the output-projection input z times its rows of W_O (no projection bias),
    averaged over the valid (non-padding) positions when ``position="mean"``, or read at token
    ``position`` (negative counts from the end; prompts must then have equal token length).
    The position reduction happens before the projection (it is linear), so the cache costs one
    forward pass per batch and no (n, d_model) tensor per head. Batches are made smaller than
    ``batch_size`` when that many prompts would not fit in memory (:mod:`xattr_lab.core.budget`).
    """
    prompts = check_prompts(prompts, "head_outputs")
    if not (position == "mean" or (isinstance(position, int) and not isinstance(position, bool))):
        raise InputError(f"position must be 'mean' or a token index, not {position!r}")
    adapter = session.adapter
    ids, mask = encode_batch(session, prompts)
    if isinstance(position, int):
        n = equal_lengths(mask, f"position={position}")
        if not -n <= position < n:
            raise InputError(f"position {position} is outside these {n}-token prompts")
        position = position % n
    batch_mask: list[torch.Tensor] = []

    def reduce(z: torch.Tensor) -> torch.Tensor:
        if position == "mean":
            m = batch_mask[0].to(device=z.device, dtype=z.dtype).unsqueeze(-1)
            return (z * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return z[:, position]

    batch_size = _rows_that_fit(session, ids.shape[1], check_batch_size(batch_size))
    out = []
    starts = range(0, len(prompts), batch_size)
    with session.restored(), torch.no_grad():
        reduced: dict[int, torch.Tensor] = {}
        record_projection_inputs(session, reduced, reduce, stop_after_last=True)
        for start in progress_bar(starts, len(starts), "head outputs", progress):
            batch_mask[:] = [mask[start : start + batch_size]]
            reduced.clear()
            try:
                session.forward(input_ids=ids[start : start + batch_size], attention_mask=batch_mask[0])
            except _StopForward:
                pass
            _check_recorded(session, reduced)
            per_layer = [adapter.split_heads(l, reduced[l]) for l in range(adapter.n_layers)]  # each (B, H, d)
            out.append(torch.cat([p.float().cpu() for p in per_layer], dim=1))
    return torch.cat(out, dim=0)


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    return batch_size


def _rows_that_fit(session: "ModelSession", n: int, batch_size: int) -> int:
    """At most ``batch_size`` prompts of n tokens per forward pass, fewer if they would not fit;
    a :class:`~xattr_lab.errors.BudgetError` when not even one does."""
    shape = budget.shape_of(session)
    limit, _ = budget.memory_limit(session.device)
    if limit is None:
        return batch_size
    rows = budget.largest(lambda r: budget.forward_bytes(shape, n, r, grad=False) <= limit, batch_size)
    if rows < 1:
        budget.check(budget.Estimate(f"head outputs of {session.name} for prompts of {n:,} tokens",
                                     {"one prompt's forward pass": budget.forward_bytes(shape, n, grad=False)},
                                     "use shorter prompts"), session.device, limit=limit)
    return rows
