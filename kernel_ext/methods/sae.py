"""The sparse autoencoders of SAE circuit discovery, and the discrete code of each vector.

One autoencoder is shared by all heads; :func:`codes` turns each (example, head) vector into one
code, its argmax feature. Three kinds (docs/ARCHITECTURE.md, section "SAE circuits"):

- :class:`PaperSparseAutoencoder` (``recipe="paper"``): the authors' SAE point by point
  (charlieoneill11/sae-circuits, ``src/sae.py``, ``src/train.py``); a vector on which no feature
  fires gets code 0, as their ``np.argmax`` gives it. Line numbers cited in this module are those of
  that repository at commit 10fd2e7826df9399b6189e5695a631898f4fe116 (2024-04-24);
- :class:`SparseAutoencoder` (``recipe="xattr"``): unit-norm decoder *columns* (dictionary
  vectors), inputs scaled to unit RMS, optional per-head centring; "silent" is a code of its own;
- :class:`PretrainedSAE`: a SAELens-format SAE read from disk (:mod:`xattr_lab.core.saelens`).
"""
from __future__ import annotations

from typing import Any

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from ..core.capture import progress_bar as _progress
from ..errors import InputError


def float_tensor(X: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor, numpy array or nested list as a float tensor (tensors keep their device)."""
    return torch.as_tensor(X if torch.is_tensor(X) else np.asarray(X), dtype=dtype)


# ---------------------------------------------------------------------------- sparse autoencoder
def _encode_folded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pre_bias: torch.Tensor) -> torch.Tensor:
    """ReLU(W (x - pre_bias) + bias) computed as ReLU(W x + (bias - W pre_bias)): the same function, but
    training then needs no gradient with respect to the (N, d) input, one (N, F, d) matmul less per
    step (the SAE epochs cost 25% less on smollm2-135m's 5,400 head vectors). x (…, d) -> (…, F)."""
    return torch.relu(nnf.linear(x, weight, bias - weight @ pre_bias))


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
        """``silent_code``: a vector on which no feature fires gets code ``features``."""
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

    @property
    def silent_code(self) -> int:
        return self.features

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
        return _encode_folded(self._centre(x), self.encoder.weight, self.encoder.bias, self.pre_bias)

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


class PaperSparseAutoencoder(nn.Module):
    """The SAE of O'Neill & Bui's code (charlieoneill11/sae-circuits at 10fd2e7, ``src/sae.py``), point by point.

    - one tied bias, subtracted before the encoder and added after the decoder (``TiedBias``,
      lines 22-74), initialised to zero: the experiments pass ``geometric_median_dataset=None``
      (``experiments/main_results.py`` line 118; ``src/sae.py`` lines 349-357, 394);
    - encoder: weight (F, d) with bias, ReLU; decoder: weight (d, F), no bias (lines 361-370);
    - both weights drawn N(0, 1), then each *row* scaled to unit norm (``DIMENSION_CONSTRAIN_UNIT_NORM
      = -1``, lines 120, 179-187): for the decoder that is each of the d rows over the F features,
      not each dictionary vector; the encoder bias is uniform in ±1/sqrt(d) (lines 189-194);
    - every forward re-normalises those rows first (line 290), and the gradient of each weight
      loses its component along each row (backward hook, lines 162, 196-248);
    - no input scaling: head outputs go in raw (``normalise: False`` in ``src/configs/config.yaml``
      concerns the scores, not the inputs).
    """

    silent_code = 0  # their codes are np.argmax: an all-zero code vector gives feature 0

    def __init__(self, d_model: int, features: int = 200):
        super().__init__()
        self.tied_bias = nn.Parameter(torch.zeros(d_model))
        self.encoder = nn.Linear(d_model, features)
        self.decoder = nn.Parameter(torch.empty(d_model, features))
        with torch.no_grad():
            for w in (self.encoder.weight, self.decoder):
                w.normal_(0.0, 1.0)
                w.div_(w.norm(dim=-1, keepdim=True))
            bound = 1 / math.sqrt(d_model)
            self.encoder.bias.uniform_(-bound, bound)
        for w in (self.encoder.weight, self.decoder):
            w.register_hook(lambda grad, w=w: grad - (grad * w).sum(-1, keepdim=True) * w / w.norm(dim=-1, keepdim=True))

    @property
    def features(self) -> int:
        return self.decoder.shape[1]

    @torch.no_grad()
    def _unit_rows(self) -> None:
        for w in (self.encoder.weight, self.decoder):
            w.div_(w.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._unit_rows()
        return _encode_folded(x, self.encoder.weight, self.encoder.bias, self.tied_bias)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return nnf.linear(z, self.decoder) + self.tied_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


class PretrainedSAE(nn.Module):
    """A SAELens SAE for inference: ``encode(x) = act((norm(x) - b_dec·apply_b_dec) @ W_enc + b_enc)``.

    ``weights``: W_enc (d_in, d_sae), b_enc (d_sae), W_dec (d_sae, d_in), b_dec (d_in), and
    ``threshold`` (d_sae) for JumpReLU; ``cfg`` as :func:`xattr_lab.core.saelens.read_saelens`
    returns it. Codes give "silent" its own code, as :class:`SparseAutoencoder` does.
    """

    def __init__(self, weights: dict[str, torch.Tensor], cfg: dict[str, Any]):
        super().__init__()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            self.register_buffer(name, weights[name].detach().float().clone())
        threshold = weights.get("threshold")
        self.register_buffer("threshold", None if threshold is None else threshold.detach().float().clone())
        self.cfg = dict(cfg)

    @property
    def features(self) -> int:
        return self.W_enc.shape[1]

    @property
    def silent_code(self) -> int:
        return self.features

    @property
    def decoder(self) -> torch.Tensor:
        return self.W_dec.t()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.get("normalize_activations") == "constant_norm_rescale":
            x = x * (self.W_enc.shape[0] ** 0.5) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        pre = (x - self.b_dec * float(self.cfg.get("apply_b_dec_to_input", True))) @ self.W_enc + self.b_enc
        if self.cfg.get("architecture") == "jumprelu":
            return pre * (pre > self.threshold)
        if self.cfg.get("activation_fn") == "topk":
            k = int(self.cfg.get("activation_fn_kwargs", {}).get("k", 1))
            top = pre.topk(k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        return torch.relu(pre)


RECIPES = ("paper", "xattr")


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
    recipe: str = "paper",
) -> nn.Module:
    """Fit one autoencoder on every row of X (N, d_model) (or (…, d_model), flattened); seeded.

    ``recipe="paper"`` (:class:`PaperSparseAutoencoder`), as ``src/train.py`` of the authors'
    code: loss ``F.mse_loss`` (mean over all entries) + ``l1`` · mean over rows of ‖z‖₁
    (lines 7-29); full-batch Adam, one step per epoch (lines 47-55); inputs raw.

    ``recipe="xattr"`` (:class:`SparseAutoencoder`): the same loss on inputs divided by their RMS
    distance from the mean (one scalar, so ``l1`` means the same on every model), the pre-bias
    starting at the scaled mean, decoder columns renormalised after every step.
    ``center_heads`` (xattr only): X must be (examples, heads, d_model); each head's mean over the
    examples is subtracted first (kept as the SAE's ``head_bias``), so the SAE codes how a head's
    output *moves* between examples rather than which head it is. Uses no labels.
    """
    if recipe not in RECIPES:
        raise InputError(f"recipe must be one of {RECIPES}, not {recipe!r}")
    if recipe == "paper" and center_heads:
        raise InputError("center_heads is an option of recipe='xattr'; the paper's SAE takes the head outputs raw")
    X = float_tensor(X)
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
        if recipe == "paper":
            sae = PaperSparseAutoencoder(X.shape[1], features).to(device)
            scale = 1.0
        else:
            sae = SparseAutoencoder(X.shape[1], features, scale,
                                    None if head_mean is None else head_mean / scale).to(device)
            with torch.no_grad():
                sae.pre_bias.copy_(mean / scale)
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr)
    Xs = X / scale
    for _ in _progress(range(epochs), epochs, f"SAE ({recipe})", progress):
        if recipe == "paper":
            recon, z = sae(Xs)
        else:
            z = _encode_folded(Xs, sae.encoder.weight, sae.encoder.bias, sae.pre_bias)
            recon = z @ sae.decoder.t() + sae.pre_bias
        loss = (recon - Xs).pow(2).mean() + l1 * z.sum(dim=1).mean()  # z >= 0: the sum is the L1 norm
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if recipe == "xattr":
            sae.normalise_decoder()
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


@torch.no_grad()
def codes(sae: nn.Module, X: Any, batch: int = 65536) -> np.ndarray:
    """Argmax SAE feature of each vector: X (examples, heads, d_model) -> int64 (examples, heads).

    A vector on which no feature fires (all zero after the activation) gets ``sae.silent_code``:
    ``features`` (one past the last feature) for :class:`SparseAutoencoder` and
    :class:`PretrainedSAE`, 0 for :class:`PaperSparseAutoencoder` (the authors' ``np.argmax``,
    ``src/main.py`` lines 152-153, which merges "silent" with feature 0).
    """
    X = float_tensor(X)
    device = sae.decoder.device
    chunk = max(1, batch // max(1, math.prod(X.shape[1:-1])))  # whole examples at a time
    out = []
    for start in range(0, X.shape[0], chunk):
        z = sae.encode(X[start : start + chunk].to(device))
        best = z.max(dim=-1)
        silent = torch.full_like(best.indices, int(sae.silent_code))
        out.append(torch.where(best.values > 0, best.indices, silent).cpu())
    return torch.cat(out).reshape(X.shape[:-1]).numpy().astype(np.int64)


# ---------------------------------------------------------------------------- scores
