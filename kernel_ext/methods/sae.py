"""The sparse autoencoder of SAE circuit discovery, and the discrete code of each vector.

One :class:`SparseAutoencoder` is shared by all heads; :func:`codes` turns each (example, head)
vector into one code, its argmax feature (``features`` when none fires).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.capture import progress_bar as _progress
from ..errors import InputError


def _float_tensor(X: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor, numpy array or nested list as a float tensor (tensors keep their device)."""
    return torch.as_tensor(X if torch.is_tensor(X) else np.asarray(X), dtype=dtype)


# ---------------------------------------------------------------------------- sparse autoencoder
class SparseAutoencoder(nn.Module):
    """Tied pre-bias, ReLU encoder, unit-norm decoder columns.

    encode(x) = ReLU(W_enc (x/scale - head_bias - b_pre) + b_enc)  (…, F);
    decode(z) = (W_dec z + b_pre + head_bias) · scale  (…, d).
    ``decoder`` is (d_model, F); :meth:`normalise_decoder` keeps each column unit-norm.
    ``scale``: inputs are divided by it before encoding (and outputs multiplied back), so that λ
    means the same across models whose head outputs differ in size.
    ``head_bias``: optional fixed (heads, d_model) per-head centre in scaled units (see
    :func:`train_sae`'s ``center_heads``); inputs must then be (…, heads, d_model).
    """

    def __init__(self, d_model: int, features: int = 200, scale: float = 1.0, head_bias: torch.Tensor | None = None):
        super().__init__()
        self.pre_bias = nn.Parameter(torch.zeros(d_model))
        self.encoder = nn.Linear(d_model, features)
        decoder = torch.randn(d_model, features)
        self.decoder = nn.Parameter(decoder / decoder.norm(dim=0, keepdim=True))
        with torch.no_grad():
            self.encoder.weight.copy_(self.decoder.t())
            self.encoder.bias.zero_()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("head_bias", None if head_bias is None else head_bias.detach().clone().float())

    @property
    def features(self) -> int:
        return self.decoder.shape[1]

    def _centre(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.scale
        if self.head_bias is None:
            return x
        if x.dim() < 2 or x.shape[-2:] != self.head_bias.shape:
            raise InputError(
                f"this SAE centres each head: give vectors shaped (…, {self.head_bias.shape[0]}, {self.head_bias.shape[1]}), "
                f"not {tuple(x.shape)}")
        return x - self.head_bias

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder(self._centre(x) - self.pre_bias))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = z @ self.decoder.t() + self.pre_bias
        if self.head_bias is not None:
            out = out + self.head_bias
        return out * self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.decoder.div_(self.decoder.norm(dim=0, keepdim=True).clamp_min(1e-12))


def train_sae(
    X: Any,
    features: int = 200,
    l1: float = 0.02,
    epochs: int = 500,
    lr: float = 1e-3,
    seed: int = 0,
    device: Any = "cpu",
    progress: bool = False,
    center_heads: bool = False,
) -> SparseAutoencoder:
    """Fit a :class:`SparseAutoencoder` on rows of X (N, d_model) (or (…, d_model), flattened).

    Loss, in units of the scaled input: mean squared error + ``l1`` · mean over rows of ‖z‖₁.
    Full-batch Adam for ``epochs`` steps; decoder columns renormalised after every step. The
    scale is the RMS distance of the rows from their mean (one scalar); the pre-bias starts at the
    scaled mean. Seeded: the same X and seed give the same SAE on the same device.

    ``center_heads``: X must be (examples, heads, d_model); each head's mean over the examples is
    subtracted first (kept fixed as the SAE's ``head_bias``), so the SAE codes how a head's output
    *moves* between examples rather than which head it is, and heads that barely move fall below
    the L1 threshold (no feature fires -> the silent code, see :func:`codes`). Uses no labels.
    """
    X = _float_tensor(X)
    head_mean = None
    if center_heads:
        if X.dim() != 3:
            raise InputError(f"center_heads needs head outputs shaped (examples, heads, d_model), not {tuple(X.shape)}")
        head_mean = X.mean(dim=0)
        X = X - head_mean
    X = X.reshape(-1, X.shape[-1])
    if X.shape[0] < 2:
        raise InputError("the SAE needs at least two vectors to train on")
    device = torch.device(device)
    X = X.to(device)
    mean = X.mean(dim=0)
    scale = float((X - mean).pow(2).sum(dim=1).mean().sqrt() / X.shape[1] ** 0.5)
    if not scale > 0:
        raise InputError("all head outputs are identical: there is nothing for the SAE to separate")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        sae = SparseAutoencoder(X.shape[1], features, scale,
                                None if head_mean is None else head_mean / scale).to(device)
    with torch.no_grad():
        sae.pre_bias.copy_(mean / scale)
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr)
    Xs = X / scale
    for _ in _progress(range(epochs), epochs, "SAE", progress):
        z = torch.relu(sae.encoder(Xs - sae.pre_bias))
        recon = z @ sae.decoder.t() + sae.pre_bias
        loss = (recon - Xs).pow(2).mean() + l1 * z.abs().sum(dim=1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        sae.normalise_decoder()
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


@torch.no_grad()
def codes(sae: SparseAutoencoder, X: Any) -> np.ndarray:
    """Argmax SAE feature of each vector: X (examples, heads, d_model) -> int64 (examples, heads).

    A vector on which no feature fires (all zero after the ReLU) gets the code ``sae.features``
    (one past the last feature), not 0: with ``center_heads`` most heads are silent, and an argmax
    of 0 would merge "silent" with feature 0 firing.
    """
    X = _float_tensor(X)
    z = sae.encode(X.to(sae.decoder.device))
    best = z.max(dim=-1)
    silent = torch.full_like(best.indices, sae.features)
    return torch.where(best.values > 0, best.indices, silent).cpu().numpy().astype(np.int64)


# ---------------------------------------------------------------------------- scores
