"""Images as model input for vision transformers (ViT): checking, preprocessing, patch tokens, capture.

An image is a PIL image or an (H, W, 3) array: uint8 in 0..255, or float in [0, 1]. It is turned
into the model's ``pixel_values`` (1, 3, S, S) by

- the session's image processor when it has one (``xa.load(model, processor)`` with a
  ``ViTImageProcessor`` or any processor with ``image_mean``/``image_std``): it is called with
  the image as float RGB in [0, 1] (``do_rescale=False``), so its own resize and normalisation apply;
- otherwise a minimal path: bilinear resize (torch, antialiased) to ``config.image_size`` square,
  then (x − 0.5) / 0.5 per channel, the ``ViTImageProcessor`` defaults (IMAGENET_STANDARD mean/std).

The tokens are the model's sequence: ``[CLS]`` then one token per patch, row-major, named
``patch(r,c)`` (row r, column c of the patch grid, from 0). ``display`` is what the model saw, as
uint8 (S, S, 3): the pixel values with the normalisation undone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.inputs import VISION_MODEL_TYPES, is_image  # noqa: F401  (is_image: a name of this module)
from ..core.capture import Capture
from ..errors import InputError, InputTypeError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession

#: ``ViTImageProcessor``'s defaults (transformers' IMAGENET_STANDARD_MEAN / _STD)
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def is_vision(ex: "ModelSession") -> bool:
    """Whether ``ex`` holds a vision transformer (its inputs are images, not texts)."""
    return getattr(ex.config, "model_type", None) in VISION_MODEL_TYPES


def to_rgb(image: Any) -> np.ndarray:
    """A PIL image or (H, W, 3) array -> (H, W, 3) float32 RGB in [0, 1].

    uint8 arrays are divided by 255; float arrays must already lie in [0, 1]. Anything else is an
    :class:`~xattr_lab.errors.InputError` (:class:`InputTypeError` for a non-image).
    """
    if not isinstance(image, np.ndarray):
        if not is_image(image):
            raise InputTypeError(f"an image is a PIL image or an (H, W, 3) array, not {type(image).__name__}")
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"an image array must have shape (H, W, 3) (RGB), not {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"an image array is uint8 (0..255) or float (0..1), not {image.dtype}")
    if not np.isfinite(image).all():
        raise InputError("the image array holds NaN or infinite values")
    if image.min() < 0.0 or image.max() > 1.0:
        raise InputError(f"a float image must lie in [0, 1] (got {image.min():.3g}..{image.max():.3g}); "
                         "divide by 255, or pass uint8")
    return image.astype(np.float32)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, dict):
        if "height" in value:
            return int(value["height"]), int(value["width"])
        side = int(value.get("shortest_edge", value.get("longest_edge")))
        return side, side
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _processor(ex: "ModelSession"):
    proc = ex.tokenizer
    return proc if hasattr(proc, "image_mean") and hasattr(proc, "image_std") and callable(proc) else None


def normalisation(ex: "ModelSession") -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) the model's pixel values were normalised with, each (3,)."""
    proc = _processor(ex)
    if proc is not None and getattr(proc, "do_normalize", True):
        return np.asarray(proc.image_mean, dtype=np.float64), np.asarray(proc.image_std, dtype=np.float64)
    if proc is not None:
        return np.zeros(3), np.ones(3)
    return np.asarray(DEFAULT_MEAN), np.asarray(DEFAULT_STD)


@dataclass
class ImageInput:
    """One image prepared for a ViT. ``pixels`` (1, 3, S, S) float32 on the model's device."""

    pixels: torch.Tensor
    display: np.ndarray  # (S, S, 3) uint8: what the model saw
    grid: tuple[int, int]  # patch rows, patch columns
    patch: tuple[int, int]  # patch height, width in pixels
    tokens: list[str]
    special_mask: list[bool]

    @property
    def n(self) -> int:
        return len(self.tokens)

    def black(self, ex: "ModelSession") -> torch.Tensor:
        """The all-black image (0 in every channel before normalisation), normalised like ``pixels``."""
        mean, std = normalisation(ex)
        value = torch.tensor(-mean / std, dtype=self.pixels.dtype, device=self.pixels.device)
        return value[None, :, None, None].expand_as(self.pixels).clone()

    def image_options(self) -> dict:
        """What an image view needs, for ``Attribution.options["image"]`` (plain JSON data)."""
        return {"grid": list(self.grid), "patch": list(self.patch), "special": [0],
                "pixels": self.display.tolist()}


def prepare(ex: "ModelSession", image: Any) -> ImageInput:
    """Check and preprocess one image for ``ex``'s vision transformer (module docstring)."""
    if not is_vision(ex):
        raise ModelError(f"{ex.name} takes text, not images; load a vision transformer (ViT) to explain images")
    rgb = to_rgb(image)
    config = ex.config
    proc = _processor(ex)
    if proc is not None:
        pixels = proc(images=rgb, return_tensors="pt", do_rescale=False)["pixel_values"].float()
    else:
        size = _pair(config.image_size)
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        if tuple(tensor.shape[-2:]) != size:
            tensor = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                                                     antialias=True).clamp(0.0, 1.0)
        mean, std = (torch.tensor(v, dtype=torch.float32)[None, :, None, None] for v in (DEFAULT_MEAN, DEFAULT_STD))
        pixels = (tensor - mean) / std
    mean, std = normalisation(ex)
    shown = pixels[0].permute(1, 2, 0).double().numpy() * std + mean
    display = np.clip(np.rint(shown * 255.0), 0, 255).astype(np.uint8)
    patch = _pair(config.patch_size)
    height, width = pixels.shape[-2:]
    if height % patch[0] or width % patch[1]:
        raise InputError(f"the preprocessed image is {height}x{width}, not a whole number of {patch} patches")
    grid = (height // patch[0], width // patch[1])
    tokens = ["[CLS]"] + [f"patch({r},{c})" for r in range(grid[0]) for c in range(grid[1])]
    special = [True] + [False] * (len(tokens) - 1)
    return ImageInput(pixels.to(ex.device), display, grid, patch, tokens, special)


def capture(ex: "ModelSession", image: "ImageInput", target: Any = None, *, attention_grads: bool = False,
            hidden_states: bool = False) -> Capture:
    """Attention maps (and their gradients w.r.t. the target logit) of one image (1 forward pass) -> a
    :class:`~xattr_lab.core.capture.Capture` whose input is the image (tokens [CLS] + patches)."""
    with ex.restored(), (torch.enable_grad() if attention_grads else torch.no_grad()):
        pixels = image.pixels.detach().requires_grad_(attention_grads)
        out = ex.model(pixel_values=pixels, output_attentions=True, output_hidden_states=hidden_states)
        attentions = out.attentions
        if not attentions or any(a is None for a in attentions):
            raise ModelError(f"{ex.name} returned no attention maps; load it with attn_implementation='eager'")
        if attentions[0].shape[-1] != image.n:
            raise ModelError(f"{ex.name} has {attentions[0].shape[-1]} tokens per image, not [CLS] + "
                             f"{image.n - 1} patches; only plain ViT sequences are supported")
        resolved = ex.resolve_target(target, out.logits[0], None)
        score = resolved.score(out.logits)[0]
        grads = None
        if attention_grads:
            found = torch.autograd.grad(score, list(attentions), allow_unused=True)
            grads = torch.stack([torch.zeros_like(a[0]) if g is None else g[0] for g, a in zip(found, attentions)])
    return Capture(
        image, resolved, float(score.detach()), out.logits[0].detach().float().cpu(), ex.prediction(out.logits[0]),
        torch.stack([a[0] for a in attentions]).detach().float().cpu(),
        None if grads is None else grads.detach().float().cpu(),
        torch.stack([h[0] for h in out.hidden_states]).detach().float().cpu() if hidden_states else None,
    )
