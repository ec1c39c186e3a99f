"""Information tensors of Generalized Attention Flow: AF, GF, AGF capacities (numpy only).

docs/ARCHITECTURE.md, section "Flows and GAF".
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .checks import as_float64

INFO_KINDS = ("af", "gf", "agf")


def information_tensor(attn: Any, grad: Any = None, kind: str = "agf", *, mask: Any = None) -> np.ndarray:
    """GAF capacities. attn, grad (L, H, n, n) -> (L, n, n) float64.

    "af" = mean_h attn; "gf" = mean_h ReLU(grad); "agf" = mean_h ReLU(attn ⊙ grad) (default).
    ``grad`` is d target / d attn (may be None for "af"). docs/ARCHITECTURE.md, section
    "Flows and GAF".

    ``mask``: the attention mask, (n, n), (L, n, n) or (L, H, n, n), nonzero where query i may
    attend to key j (causal models: j <= i; padding keys: 0). Every kind is 0 where it is 0.
    Give it for "gf": the gradient with respect to a masked attention probability is generally
    nonzero (the model never reads that entry), so without the mask GF puts capacity on edges
    that do not exist, e.g. from a token to later tokens in a causal LM.
    """
    if kind not in INFO_KINDS:
        raise InputError(f"unknown information kind {kind!r}; choose one of {list(INFO_KINDS)}")
    attn = as_float64(attn, "attn")
    if attn.ndim != 4 or attn.shape[2] != attn.shape[3]:
        raise InputError(f"attn must have shape (L, H, n, n); got {attn.shape}")
    if kind == "af":
        out = attn.mean(axis=1)
    else:
        if grad is None:
            raise InputError(f"info={kind!r} needs the attention gradients (capture with attention_grads=True)")
        grad = as_float64(grad, "grad")
        if grad.shape != attn.shape:
            raise InputError(f"grad shape {grad.shape} must equal attn shape {attn.shape}")
        product = grad if kind == "gf" else attn * grad
        out = np.maximum(product, 0.0).mean(axis=1)
    if mask is not None:
        out = out * _edge_mask(mask, attn.shape)
    if not np.all(np.isfinite(out)):
        raise InputError("the information tensor holds non-finite values (check the attentions / gradients)")
    return out


def _edge_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(L, n, n) 0/1 float mask from an (n, n), (L, n, n) or (L, H, n, n) mask (an edge is kept
    when any head may use it)."""
    L, H, n, _ = shape
    m = as_float64(mask, "mask") != 0
    if m.shape == (L, H, n, n):
        m = m.any(axis=1)
    if m.shape not in ((n, n), (L, n, n)):
        raise InputError(f"mask must have shape ({n}, {n}), ({L}, {n}, {n}) or {tuple(shape)}; got {m.shape}")
    return np.broadcast_to(m, (L, n, n)).astype(np.float64)
