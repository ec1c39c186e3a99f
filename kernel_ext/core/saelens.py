"""Read a pretrained sparse autoencoder saved in SAELens's format (no sae_lens import).

A SAELens SAE directory holds ``cfg.json`` and ``sae_weights.safetensors`` (the names SAELens's
``save_model`` / ``load_from_disk`` use). The weights are ``W_enc`` (d_in, d_sae), ``b_enc``
(d_sae), ``W_dec`` (d_sae, d_in), ``b_dec`` (d_in), and ``threshold`` (d_sae) for JumpReLU SAEs.
The config names ``d_in``, ``d_sae``, ``hook_name`` (in SAELens 6 it may sit under ``metadata``),
``architecture`` ("standard", "jumprelu", "topk"), ``activation_fn`` (older: ``activation_fn_str``),
``apply_b_dec_to_input`` and ``normalize_activations``.

SAE circuits code each head's output into the residual stream (docs/ARCHITECTURE.md, section "SAE
circuits"): an SAE fits when it was trained on per-head outputs of width d_model, TransformerLens's
``blocks.{l}.attn.hook_result``. Other hook points (``hook_z``: a whole layer's concatenated heads;
residual-stream or MLP hooks) are refused with the reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
#: Hook points whose activations are one head's output into the residual stream.
HEAD_OUTPUT_HOOK = re.compile(r"^(blocks\.\d+\.)?attn\.hook_result$")
ARCHITECTURES = ("standard", "jumprelu", "topk")
NORMALISATIONS = ("none", None, "constant_norm_rescale")


def read_saelens(path: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, cfg) of the SAELens SAE in directory ``path``; InputError when it is not one or does not fit.

    ``cfg`` is normalised: ``hook_name``, ``architecture``, ``activation_fn`` at the top level.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    cfg_path, weights_path = folder / CFG_FILENAME, folder / WEIGHTS_FILENAME
    if not cfg_path.is_file() or not weights_path.is_file():
        raise InputError(f"{folder} is not a SAELens SAE directory: it needs {CFG_FILENAME} and {WEIGHTS_FILENAME}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{cfg_path} is not valid JSON ({error})") from None
    meta = cfg.get("metadata") or {}
    cfg["hook_name"] = cfg.get("hook_name") or meta.get("hook_name") or ""
    cfg["architecture"] = cfg.get("architecture", "standard")
    cfg["activation_fn"] = cfg.get("activation_fn") or cfg.get("activation_fn_str") or (
        "topk" if cfg["architecture"] == "topk" else "relu")
    if cfg["architecture"] not in ARCHITECTURES:
        raise InputError(f"SAE architecture {cfg['architecture']!r} is not supported; use one of {ARCHITECTURES}")
    if cfg.get("normalize_activations") not in NORMALISATIONS:
        raise InputError(f"normalize_activations={cfg['normalize_activations']!r} needs a scaling factor this "
                         f"reader does not have; supported: 'none', 'constant_norm_rescale'")
    if not HEAD_OUTPUT_HOOK.match(cfg["hook_name"]):
        raise InputError(
            f"the SAE was trained at hook {cfg['hook_name']!r}; SAE circuits code one head's output into the residual "
            "stream, so it must be a per-head output hook such as 'blocks.5.attn.hook_result' (hook_z SAEs code a whole "
            "layer's heads at once, residual and MLP SAEs other activations)")
    weights = load_file(str(weights_path))
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in weights]
    if cfg["architecture"] == "jumprelu" and "threshold" not in weights:
        missing.append("threshold")
    if missing:
        raise InputError(f"{weights_path} lacks {missing}")
    d_in, d_sae = weights["W_enc"].shape
    if "d_in" in cfg and "d_sae" in cfg and (cfg["d_in"], cfg["d_sae"]) != (d_in, d_sae):
        raise InputError(f"cfg.json says d_in={cfg['d_in']}, d_sae={cfg['d_sae']} but W_enc is {d_in} x {d_sae}")
    if tuple(weights["W_dec"].shape) != (d_sae, d_in) or weights["b_dec"].numel() != d_in or weights["b_enc"].numel() != d_sae:
        raise InputError("W_dec must be (d_sae, d_in), b_dec (d_in,), b_enc (d_sae,)")
    cfg["d_in"], cfg["d_sae"] = int(d_in), int(d_sae)
    return weights, cfg
