"""Architecture adapters: where a model keeps its attention output projections, and its head kind.

Adding an architecture is one entry in :data:`_OUT_PROJ_PATTERNS` (docs/ARCHITECTURE.md, "Core").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn
import torch

from ..errors import ModelError
from .targets import CAUSAL_LM, CLASSIFIER, MASKED_LM

# Module names of the attention output projection, per architecture family.
# The layer index is the first group. Checked on tiny configs of each in tests/test_models.py.
_OUT_PROJ_PATTERNS: dict[str, re.Pattern] = {
    "bert": re.compile(r"(?:^|\.)layer\.(\d+)\.attention\.output\.dense$"),  # BERT, RoBERTa, ELECTRA
    "distilbert": re.compile(r"(?:^|\.)layer\.(\d+)\.attention\.out_lin$"),
    "gpt2": re.compile(r"(?:^|\.)h\.(\d+)\.attn\.c_proj$"),
    "llama": re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.o_proj$"),  # Llama, Mistral, Qwen2, SmolLM
}
_CAUSAL_FAMILIES = {"gpt2", "llama"}


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

    @property
    def causal(self) -> bool:
        return self.family in _CAUSAL_FAMILIES

    def head_weights(self, layer: int) -> torch.Tensor:
        """(H, head_dim, d_model): head h maps z[..., h*head_dim:(h+1)*head_dim] to the residual."""
        proj = self.out_projections[layer]
        weight = proj.weight
        if isinstance(proj, nn.Linear):  # weight (d_model, H*head_dim)
            weight = weight.t()
        # GPT-2 Conv1D keeps weight as (H*head_dim, d_model) already.
        return weight.reshape(self.n_heads, self.head_dim, self.d_model)

    def split_heads(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head outputs from the projection input z (..., H*head_dim) -> (..., H, d_model)."""
        z_heads = z.reshape(*z.shape[:-1], self.n_heads, self.head_dim)
        return torch.einsum("...hk,hkd->...hd", z_heads, self.head_weights(layer).to(z.dtype))

    def projection_bias(self, layer: int) -> torch.Tensor | None:
        return getattr(self.out_projections[layer], "bias", None)


def detect_adapter(model: nn.Module) -> Adapter:
    """Find the attention output projections of a supported architecture."""
    config = model.config
    for family, pattern in _OUT_PROJ_PATTERNS.items():
        found: dict[int, nn.Module] = {}
        for name, module in model.named_modules():
            match = pattern.search(name)
            if match:
                found[int(match.group(1))] = module
        if found:
            layers = [found[i] for i in sorted(found)]
            n_heads = int(config.num_attention_heads)
            proj = layers[0]
            in_features = proj.weight.shape[1] if isinstance(proj, nn.Linear) else proj.weight.shape[0]
            d_model = proj.weight.shape[0] if isinstance(proj, nn.Linear) else proj.weight.shape[1]
            if in_features % n_heads:
                raise ModelError(f"cannot split {in_features} attention features into {n_heads} heads")
            n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
            return Adapter(family, len(layers), n_heads, n_kv, in_features // n_heads, d_model, layers)
    raise ModelError(
        f"unsupported architecture {type(model).__name__}: xattr-lab knows BERT/RoBERTa/ELECTRA, DistilBERT, "
        "GPT-2 and Llama-style (Mistral, Qwen2, SmolLM) models; its heads cannot be split otherwise."
    )


def head_kind(model: nn.Module) -> str:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return CLASSIFIER
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return CAUSAL_LM
    if name.endswith("ForMaskedLM"):
        return MASKED_LM
    raise ModelError(
        f"{name} has no head to explain: load a sequence classifier (…ForSequenceClassification), "
        "a causal LM (…ForCausalLM) or a masked LM (…ForMaskedLM)."
    )
