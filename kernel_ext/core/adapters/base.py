"""What an architecture adapter is: a :class:`Family` (one small file per architecture, listed in
``xattr_lab.core.adapters.FAMILIES``) and the :class:`Adapter` built from it for one model.

docs/ARCHITECTURE.md, section "Core".
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..targets import CAUSAL_LM, CLASSIFIER, MASKED_LM
from ...errors import ModelError

#: head kind of encoder-decoder LMs (T5, BART): explained by xattr_lab.methods.seq2seq
SEQ2SEQ_LM = "seq2seq_lm"


@dataclass(frozen=True)
class Family:
    """One architecture family, as its adapter file declares it.

    out_projection: regular expression over module names (``model.named_modules()``) that matches
    each layer's attention output projection; group 1 is the layer index. That module's input is
    the concatenated per-head attention output z (B, n, H*head_dim).
    causal: whether every token attends only to itself and earlier tokens.
    model_types: the ``config.model_type`` values it is for; empty = any model whose module names
    match (so fine-tunes and look-alikes such as the toy model are found too). Families are tried
    in list order.
    notes: one line on what is special about it (fused QKV, ALiBi, local attention...), for the docs.
    """

    name: str
    out_projection: str
    causal: bool
    model_types: tuple[str, ...] = ()
    notes: str = ""

    def applies_to(self, model: nn.Module) -> bool:
        model_type = getattr(model.config, "model_type", None)
        return not self.model_types or model_type in self.model_types

    def projections(self, model: nn.Module) -> list[nn.Module]:
        """The attention output projections in layer order (empty when the names do not match)."""
        pattern = re.compile(self.out_projection)
        found: dict[int, nn.Module] = {}
        for name, module in model.named_modules():
            match = pattern.search(name)
            if match:
                found[int(match.group(1))] = module
        return [found[i] for i in sorted(found)]


def parameter(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>`` as a real tensor, also when accelerate offloaded it (kept on the meta
    device between forward passes, the values in the hook's ``weights_map``)."""
    value = getattr(module, name, None)
    if value is None or not isinstance(value, torch.Tensor) or value.device.type != "meta":
        return value
    hook = getattr(module, "_hf_hook", None)
    weights = getattr(hook, "weights_map", None)
    if weights is None:
        raise ModelError(f"{type(module).__name__}.{name} is on the meta device and no offload map holds it")
    return weights[name]


@dataclass
class Adapter:
    """Where a model keeps its attention output projections, and how to split them by head.

    out_projections[l]: the module whose input is the concatenated per-head attention output
    z (B, n, H*head_dim) of layer l and whose output is its contribution to the residual stream.
    """

    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    out_projections: list[nn.Module]
    causal: bool = False

    def head_weights(self, layer: int) -> torch.Tensor:
        """(H, head_dim, d_model): head h maps z[..., h*head_dim:(h+1)*head_dim] to the residual."""
        proj = self.out_projections[layer]
        weight = parameter(proj, "weight")
        if isinstance(proj, nn.Linear):  # weight (d_model, H*head_dim)
            weight = weight.t()
        # GPT-2 Conv1D keeps weight as (H*head_dim, d_model) already.
        return weight.reshape(self.n_heads, self.head_dim, self.d_model)

    def split_heads(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head outputs from the projection input z (..., H*head_dim) -> (..., H, d_model), float32.

        Computed on z's device (the weights are brought there: under a device map the projection
        may live elsewhere, or be offloaded), in float32 also for half-precision models."""
        z_heads = z.float().reshape(*z.shape[:-1], self.n_heads, self.head_dim)
        weights = self.head_weights(layer).to(device=z.device, dtype=torch.float32)
        return torch.einsum("...hk,hkd->...hd", z_heads, weights)

    def projection_bias(self, layer: int) -> torch.Tensor | None:
        return parameter(self.out_projections[layer], "bias")


def _kv_heads(config, n_heads: int) -> int:
    for attr in ("num_key_value_heads", "num_kv_heads"):
        value = getattr(config, attr, None)
        if value:
            return int(value)
    if getattr(config, "multi_query", False) and not getattr(config, "new_decoder_architecture", False):
        return 1  # Falcon-7B style multi-query attention
    return n_heads


def build_adapter(model: nn.Module, family: Family) -> Adapter | None:
    """The adapter of ``model`` as ``family`` describes it, or None when its modules do not match."""
    if not family.applies_to(model):
        return None
    layers = family.projections(model)
    if not layers:
        return None
    n_heads = int(model.config.num_attention_heads)
    proj = layers[0]
    weight = proj.weight  # shapes are known also on the meta device
    in_features = weight.shape[1] if isinstance(proj, nn.Linear) else weight.shape[0]
    d_model = weight.shape[0] if isinstance(proj, nn.Linear) else weight.shape[1]
    if in_features % n_heads:
        raise ModelError(f"cannot split {in_features} attention features into {n_heads} heads")
    return Adapter(family.name, len(layers), n_heads, _kv_heads(model.config, n_heads), in_features // n_heads,
                   d_model, layers, family.causal)


def head_kind(model: nn.Module) -> str:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return CLASSIFIER
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return CAUSAL_LM
    if name.endswith("ForMaskedLM"):
        return MASKED_LM
    if name.endswith("ForImageClassification"):  # ViT: patches as tokens (methods/vision.py)
        return CLASSIFIER
    if name.endswith("ForConditionalGeneration"):  # T5, BART (methods/seq2seq.py)
        return SEQ2SEQ_LM
    raise ModelError(
        f"{name} has no head to explain: load a sequence classifier (…ForSequenceClassification), "
        "a causal LM (…ForCausalLM) or a masked LM (…ForMaskedLM)."
    )
