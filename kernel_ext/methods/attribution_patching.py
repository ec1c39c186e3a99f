"""Attribution patching over attention heads: AtP node scores, EAP and EAP-IG edge scores.

Notation (all sums over prompts b and token positions i; flat head index ``l * H + h``):

- ``z`` of head (l, h): its slice ``[h*k, (h+1)*k)`` of layer l's output-projection input (``o_proj`` /
  ``c_proj`` input, :class:`~xattr_lab.core.adapters.Adapter`), (B, n, k).
- the sender's output written to the residual: ``z_h @ W_O[h]`` (no bias; :meth:`Adapter.split_heads`).
- **AtP** (Nanda 2023; Kramár et al. 2024): node(l, h) = Σ (z_corrupt − z_clean) · ∂metric/∂z at the clean input.
- **EAP** (Syed et al. 2023): edge(s → r) = Σ (out_s,corrupt − out_s,clean) · ∂metric/∂(input of r), clean input;
  edge(s → logits) uses ∂metric/∂(final residual) (the input of the final norm, or of the unembedding when the
  model has no final norm).
- **EAP-IG** (Hanna et al. 2024): the same with the gradients averaged over ``ig_steps`` points on the straight
  line between the corrupted and the clean input *word embeddings*, α = k / ig_steps for k = 1..ig_steps (the
  right Riemann sum of the integrated-gradients paper, so ``ig_steps=1`` is EAP; Hanna et al.'s reference code
  sums k = 0..steps-1 instead, starting at the corrupted input). Node scores of EAP and EAP-IG: the AtP formula
  with the method's gradient (EAP: AtP exactly).

"Input of receiver r" in a Hugging Face model. A layer's heads share one residual stream ``x_l`` (the layer's
input, ``hidden_states[l]``), normalised once (``input_layernorm`` / ``ln_1``) and read by the q, k and v
projections. TransformerLens' split-qkv inputs give each head its own copy of ``x_l``; here the same gradient is
computed without copies: the gradient at the normalised input that flows through head r's rows of the q, k and
v projections, ``u_r = g_q[r] W_q[r] + g_k[r] W_k[r] + g_v[r] W_v[r]`` (g: ∂metric/∂ projection output), pulled
back through the norm's Jacobian at ``x_l`` (autograd). Summed over the heads of a layer this is exactly the
gradient through that layer's attention. Grouped KV heads (GQA/MQA, G query heads per KV head): a KV head's k
and v rows serve G query heads, and its gradient is their sum; each of its query heads is given 1/G of it — an
approximation per query head (the exact split would need each query head's share of the attention backward),
exact for the sum over the group. Fused ``c_attn`` (GPT-2) is split into its q, k and v thirds. MLPs are not
nodes: a sender's paths through later MLPs into a receiver or the logits are part of that gradient.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..core.adapters import parameter
from ..core.capture import encode_batch
from ..core.session import ModelSession
from ..errors import InputError, ModelError

PATCHING_METHODS = ("atp", "eap", "eap-ig")
_FINAL_NORM = re.compile(r"(?:^|\.)(?:norm|ln_f|final_layer_norm|final_layernorm)$")


@dataclass
class _Part:
    """Rows of a q/k/v projection: ``module`` output columns ``[offset, offset + heads*k)``, ``heads`` heads of
    width k, each serving ``group`` consecutive query heads."""

    module: nn.Module
    offset: int
    heads: int
    group: int


def receiver_parts(ex: ModelSession) -> list[list[_Part]]:
    """Per layer, the q, k and v projections (or the thirds of a fused GPT-2 ``c_attn``) that read its heads' input."""
    adapter = ex.adapter
    H, k, kv = adapter.n_heads, adapter.head_dim, adapter.n_kv_heads
    parents = {id(m): name.rsplit(".", 1)[0] for name, m in ex.model.named_modules()}
    modules = dict(ex.model.named_modules())
    layers = []
    for proj in adapter.out_projections:
        attention = modules[parents[id(proj)]]
        names = dict(attention.named_children())
        if all(n in names for n in ("q_proj", "k_proj", "v_proj")):
            layers.append([_Part(names["q_proj"], 0, H, 1), _Part(names["k_proj"], 0, kv, H // kv),
                           _Part(names["v_proj"], 0, kv, H // kv)])
        elif "c_attn" in names:
            layers.append([_Part(names["c_attn"], i * H * k, H, 1) for i in range(3)])
        else:
            raise ModelError(f"edge attribution patching needs separate q/k/v projections or GPT-2's fused c_attn; "
                             f"{type(attention).__name__} has {sorted(names)}")
    return layers


def _weight_rows(module: nn.Module) -> torch.Tensor:
    """The projection's weight as (out, in), float32."""
    weight = parameter(module, "weight")
    return (weight if isinstance(module, nn.Linear) else weight.t()).float()


def final_residual_module(ex: ModelSession) -> nn.Module:
    """The module whose input is the final residual stream: the final norm, else the unembedding."""
    found = [(name, m) for name, m in ex.model.named_modules() if _FINAL_NORM.search(name) and
             not re.search(r"\.\d+\.", "." + name + ".")]
    if found:
        return min(found, key=lambda item: len(item[0]))[1]
    return ex.model.get_output_embeddings()


@dataclass
class Gradients:
    """Mean over the IG points of each gradient, for one batch of B prompts of n tokens.

    z: L x (B, n, H*k) ∂metric/∂z. receivers: (B, L, H, n, d) ∂metric/∂(input of head), or None (AtP).
    logits: (B, n, d) ∂metric/∂(final residual), or None. z_clean: L x (B, n, H*k), z on the clean input
    (recorded by the α = 1 pass).
    """

    z: list[torch.Tensor]
    receivers: torch.Tensor | None
    logits: torch.Tensor | None
    z_clean: list[torch.Tensor]


def _head_inputs(ex: ModelSession, parts: list[_Part], grads: list[torch.Tensor]) -> torch.Tensor:
    """u (B, n, H, d): the gradient at a layer's normalised input through each query head's q/k/v rows."""
    H, k = ex.adapter.n_heads, ex.adapter.head_dim
    total = None
    for part, g in zip(parts, grads):
        W = _weight_rows(part.module).to(g.device)[part.offset : part.offset + part.heads * k]
        g = g[..., part.offset : part.offset + part.heads * k].float()
        u = torch.einsum("bnhk,hkd->bnhd", g.reshape(*g.shape[:2], part.heads, k), W.reshape(part.heads, k, -1))
        if part.group > 1:
            u = u.repeat_interleave(part.group, dim=2) / part.group
        total = u if total is None else total + u
    assert total is not None and total.shape[2] == H
    return total


def gradients(ex: ModelSession, ids: torch.Tensor, mask: torch.Tensor, corrupt_ids: torch.Tensor, metric: Callable,
              index: torch.Tensor, steps: int, edges: bool, logit_positions: Sequence[int] | None = None) -> Gradients:
    """Gradients of ``metric(logits, index).sum()`` at α = k/steps, k = 1..steps, between the corrupted (α = 0) and
    clean (α = 1) word embeddings, averaged (module docstring). ``edges``: also the receivers' and the logits'.
    ``logit_positions``: when the metric reads only these positions (e.g. ``[-1]``), the unembedding runs only
    there and the metric sees (B, len(logit_positions), V)."""
    adapter = ex.adapter
    L = adapter.n_layers
    parts = receiver_parts(ex) if edges else []
    final = final_residual_module(ex) if edges else None
    with torch.no_grad():
        clean_e, corrupt_e = ex.embed(ids).float(), ex.embed(corrupt_ids).float()
    sums: dict[str, Any] = {}
    for step in range(1, steps + 1):
        alpha = step / steps
        embeds = clean_e if step == steps else corrupt_e + alpha * (clean_e - corrupt_e)
        embeds = embeds.detach().clone().requires_grad_(True)
        seen: dict[str, Any] = {"z": {}, "qkv": {}, "normed": {}}
        with ex.restored(), torch.enable_grad():
            for layer, proj in enumerate(adapter.out_projections):
                ex.add_hook(proj, lambda m, a, layer=layer: seen["z"].__setitem__(layer, a[0]), pre=True)
            for layer, layer_parts in enumerate(parts):
                for part in {id(p.module): p for p in layer_parts}.values():
                    def keep(m, a, out, layer=layer):
                        seen["qkv"][(layer, id(m))] = out
                        seen["normed"][layer] = a[0]
                    ex.add_hook(part.module, keep)
            if final is not None:
                ex.add_hook(final, lambda m, a: seen.__setitem__("final", a[0]), pre=True)
            if logit_positions is not None:
                keep_at = torch.as_tensor(list(logit_positions), dtype=torch.long)
                ex.add_hook(ex.model.get_output_embeddings(),
                            lambda m, a: (a[0][:, keep_at.to(a[0].device)],) + tuple(a[1:]), pre=True)
            out = ex.forward(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=edges)
            value = metric(out.logits, index).sum()
            wanted = [seen["z"][l] for l in range(L)]
            if edges:
                order = [(l, id(p.module)) for l in range(L) for p in {id(p.module): p for p in parts[l]}.values()]
                wanted += [seen["qkv"][key] for key in order] + [seen["final"]]
            got = torch.autograd.grad(value, wanted, retain_graph=edges, allow_unused=True)
            step_sums: dict[str, Any] = {"z": [g.detach().float() for g in got[:L]]}
            if step == steps:
                z_clean = [seen["z"][l].detach().float() for l in range(L)]
            if edges:
                qkv = {key: torch.zeros_like(seen["qkv"][key]) if g is None else g
                       for key, g in zip(order, got[L:-1])}
                step_sums["logits"] = got[-1].detach().float()
                step_sums["receivers"] = _receiver_gradients(ex, parts, qkv, seen["normed"], out.hidden_states)
            del out, got, value
        for key, val in step_sums.items():
            if key not in sums:
                sums[key] = val
            elif isinstance(val, list):
                sums[key] = [a + b for a, b in zip(sums[key], val)]
            else:
                sums[key] = sums[key] + val
    return Gradients([g / steps for g in sums["z"]], sums["receivers"] / steps if edges else None,
                     sums["logits"] / steps if edges else None, z_clean)


def _receiver_gradients(ex: ModelSession, parts: list[list[_Part]], qkv: dict, normed: dict, hidden) -> torch.Tensor:
    """(B, L, H, n, d): ∂metric/∂x_l through each head's q/k/v rows, pulled back through the norm (autograd)."""
    L, H = ex.adapter.n_layers, ex.adapter.n_heads
    per_layer = []
    for l in range(L):
        grads = [qkv[(l, id(p.module))] for p in parts[l]]
        u = _head_inputs(ex, parts[l], grads)  # (B, n, H, d) at the normalised input
        x = hidden[l]
        if normed[l] is x:  # no norm (the toy)
            per_layer.append(u.permute(0, 2, 1, 3))
            continue
        pulled = [torch.autograd.grad(normed[l], x, u[:, :, h].to(normed[l].dtype), retain_graph=True)[0].float()
                  for h in range(H)]
        per_layer.append(torch.stack(pulled, dim=1))
    return torch.stack(per_layer, dim=1).detach()


def encode_pairs(ex: ModelSession, positive: Sequence[str], negative: Sequence[str]):
    """Clean and corrupted ids, paired by index and of equal token length pair by pair: (ids, mask, corrupt_ids)."""
    if len(positive) != len(negative):
        raise InputError(f"attribution patching pairs each clean prompt with its corrupted twin by index: "
                         f"{len(positive)} positive but {len(negative)} negative prompts")
    ids, mask = encode_batch(ex, list(positive))
    bad, bad_mask = encode_batch(ex, list(negative))
    lengths, bad_lengths = mask.sum(1), bad_mask.sum(1)
    differ = (lengths != bad_lengths).nonzero().flatten().tolist()
    if differ or ids.shape != bad.shape:
        i = differ[0] if differ else 0
        raise InputError(f"clean and corrupted prompts must have the same token length pair by pair; pair {i} has "
                         f"{int(lengths[i])} and {int(bad_lengths[i])} tokens ({positive[i]!r} / {negative[i]!r})")
    return ids, mask, bad
