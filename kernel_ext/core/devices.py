"""Models bigger than one device: dtypes, accelerate device maps, and where a placed model runs.

``xattr_lab.load(..., device_map="auto" | {module: device}, dtype="bfloat16" | "float16" | torch dtype)``
goes through accelerate: by name, ``from_pretrained`` places the modules; a model object is cast
and dispatched here (:func:`place`). A placed model is never moved as a whole afterwards; its
modules keep accelerate's hooks, which move each module's inputs to its device and load
offloaded ("cpu" next to a GPU, or "disk") weights for the length of one forward pass.
docs/ARCHITECTURE.md, section "Core".
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import InputError, ModelError

#: dtype names ``load`` accepts (besides torch dtypes and "auto" for by-name loading).
DTYPES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "half": torch.float16, "fp16": torch.float16}
#: device-map strategies accelerate knows (``infer_auto_device_map`` over the visible devices).
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def resolve_dtype(dtype: Any, allow_auto: bool = False) -> torch.dtype | str | None:
    """None, a torch floating dtype, or one of :data:`DTYPES` (``"auto"`` when allowed) -> the dtype."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if allow_auto and dtype == "auto":
        return "auto"
    names = sorted(DTYPES) + (["auto"] if allow_auto else [])
    raise InputError(f"unknown dtype {dtype!r}; use a torch floating dtype or one of {names}")


def check_device_map(device_map: Any) -> None:
    if device_map is None or device_map in STRATEGIES:
        return
    if isinstance(device_map, dict) and device_map and all(isinstance(k, str) for k in device_map):
        return
    raise InputError(f"device_map must be one of {list(STRATEGIES)} or a dict of module name -> device "
                     f"(an index, 'cpu', 'cuda:N' or 'disk'), not {device_map!r}")


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate placed the model by a device map (``from_pretrained(device_map=...)`` or
    ``accelerate.dispatch_model``): its modules carry hooks that move inputs and load offloaded weights."""
    return bool(getattr(model, "hf_device_map", None)) or any(hasattr(m, "_hf_hook") for m in model.modules())


def device_summary(model: nn.Module) -> str:
    """'cpu: 5 modules, disk: 2 modules' for a dispatched model."""
    counts: dict[str, int] = {}
    for where in (getattr(model, "hf_device_map", None) or {}).values():
        counts[str(where)] = counts.get(str(where), 0) + 1
    return ", ".join(f"{where}: {count} modules" for where, count in counts.items()) or "accelerate hooks"


def input_device(model: nn.Module) -> torch.device:
    """Where a dispatched model's input embeddings run: their hook's execution device, else their
    weight's device (offloaded weights live on the meta device between passes, so never that)."""
    embeddings = model.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    for inner in getattr(hook, "hooks", ()):  # a SequentialHook: the first with a device
        execution = execution if execution is not None else getattr(inner, "execution_device", None)
    if execution is not None:
        return torch.device(f"cuda:{execution}" if isinstance(execution, int) else execution)
    weight = embeddings.weight
    return torch.device("cpu") if weight.device.type == "meta" else weight.device


def place(model: nn.Module, device_map: Any = None, dtype: Any = None, offload_folder: str | None = None) -> nn.Module:
    """Cast a model object to ``dtype`` and dispatch it by ``device_map`` (accelerate), in place.

    device_map: a strategy of :data:`STRATEGIES` (``accelerate.infer_auto_device_map`` keeps each
    of the model's ``_no_split_modules`` whole) or a dict module name -> device; "disk" entries
    need ``offload_folder``. Returns the model.
    """
    dtype = resolve_dtype(dtype)
    check_device_map(device_map)
    if dtype is not None:
        model = model.to(dtype)
    if device_map is None:
        return model
    if is_dispatched(model):
        raise InputError("this model is already placed by a device map; pass it without device_map")
    from accelerate import dispatch_model, infer_auto_device_map

    if isinstance(device_map, str):
        device_map = infer_auto_device_map(model, no_split_module_classes=list(model._no_split_modules or []),
                                           dtype=dtype)
    if "disk" in device_map.values() and offload_folder is None:
        raise InputError("device_map puts modules on 'disk': give offload_folder= (a directory for their weights)")
    try:
        model = dispatch_model(model, device_map, offload_dir=offload_folder)
    except (ValueError, KeyError) as error:  # modules the map leaves out, or names the model lacks
        raise InputError(f"device_map does not fit this model: {error}") from None
    model.hf_device_map = dict(device_map)
    return model


def resolve_device(device: Any = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; also accepts "cpu", "cuda", "cuda:1", torch.device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return device


def ensure_eager_attention(model: nn.Module) -> None:
    """Switch to eager attention: sdpa/flash kernels return no attention maps."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl in (None, "eager"):
        # encoder-decoders (T5) keep a config copy per stack: set on the top one only, it does not reach them
        impl = next((c._attn_implementation for c in (getattr(m, "config", None) for m in model.modules())
                     if getattr(c, "_attn_implementation", None) not in (None, "eager")), None)
        if impl is None:
            return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:  # older transformers
        model.config._attn_implementation = "eager"
    warnings.warn(f"switched attention from {impl!r} to 'eager' so attention maps can be read", stacklevel=3)
