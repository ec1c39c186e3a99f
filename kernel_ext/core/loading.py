"""Loading: turn an alias, a directory, a hub id or a (model, tokenizer) into a session.

``xattr_lab.load`` calls :func:`load` with ``session_class=Explainer``. Every session :func:`load` returns
carries its :class:`LoadRecipe` (``session.load_recipe``): what was loaded and with which options, so that
another process (a Ray worker, :mod:`xattr_lab.evaluation.distributed.workers`) loads the same model the same way.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import nn

from ..constants import DEFAULT_MODEL
from ..errors import InputError, InputTypeError, ModelError
from .devices import check_device_map, place, resolve_dtype
from .session import ModelSession, resolve_device
from .zoo import ALIASES, load_alias, load_alias_model, unknown_model_error

_AUTO_CLASSES = (
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
)


def _auto_class(config):
    import transformers

    for arch in config.architectures or []:
        for suffix, auto in _AUTO_CLASSES:
            if arch.endswith(suffix):
                return getattr(transformers, auto)
    if getattr(config, "is_decoder", False) or config.model_type in ("gpt2", "llama", "mistral", "qwen2"):
        return transformers.AutoModelForCausalLM
    raise ModelError(
        f"cannot tell which head to load for architectures={config.architectures}: load the model yourself "
        "(…ForSequenceClassification / …ForCausalLM / …ForMaskedLM) and pass xattr_lab.load(model, tokenizer)"
    )


@dataclass(frozen=True)
class LoadRecipe:
    """How a session was loaded: ``load(source, device="auto", **options)`` loads it again elsewhere.

    source: an embedded alias, an absolute directory (a relative one resolved against the folder it was
    loaded from) or a hub id; None for a model given as an object. options: the keyword arguments
    :func:`load` was given (dtype, device_map, offload_folder, from_pretrained options; for a model object
    dtype/device_map/offload_folder), less those that only concern this process (``rebuild``, ``progress``).
    Attention is eager in every case (:func:`from_pretrained`, :class:`ModelSession`).
    """

    source: str | None
    options: Mapping[str, Any] = field(default_factory=dict)


#: load() options that change nothing about the model (how a cached alias is built, progress bars)
_PROCESS_ONLY = ("rebuild", "progress", "name")


def _recipe(model: Any, kwargs: Mapping[str, Any]) -> LoadRecipe:
    """The :class:`LoadRecipe` of ``load(model, **kwargs)`` (a name resolved, options kept)."""
    options = {k: v for k, v in kwargs.items() if k not in _PROCESS_ONLY}
    if not isinstance(model, str):
        return LoadRecipe(None, options)
    if model not in ALIASES and os.path.isdir(model):
        model = os.path.abspath(model)
    return LoadRecipe(model, options)


def _hub_resolves() -> bool:
    """Whether the hub's host name resolves. Without it, transformers retries for ~25 s (measured
    on this offline machine) before it fails, so a mistyped alias would take that long to report."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True


#: from_pretrained options that shape the model only (not its config or tokenizer).
_MODEL_ONLY = ("device_map", "dtype", "torch_dtype", "max_memory", "offload_folder", "offload_state_dict",
               "offload_buffers", "quantization_config", "low_cpu_mem_usage")


def _model_options(kwargs: dict[str, Any], device: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options for the config and tokenizer, options for the model alone), checked."""
    shared = {k: v for k, v in kwargs.items() if k not in _MODEL_ONLY}
    model = {k: v for k, v in kwargs.items() if k in _MODEL_ONLY}
    if "torch_dtype" in model:  # transformers' older name
        model.setdefault("dtype", model.pop("torch_dtype"))
    if "dtype" in model:
        model["dtype"] = resolve_dtype(model["dtype"], allow_auto=True)
    check_device_map(model.get("device_map"))
    if model.get("device_map") is not None and device not in (None, "auto"):
        raise InputError(f"pass either device={device!r} or device_map=, not both: a device map places the modules")
    return shared, model


def from_pretrained(name_or_path: str, device: Any = "auto", session_class: type = ModelSession, **kwargs: Any):
    """Load a local directory (offline) or a hub id with eager attention.

    A hub id is looked up in the local Hugging Face cache only (``local_files_only``) when the hub
    cannot be reached, so an offline machine answers at once. ``device_map``, ``dtype`` (also
    "bfloat16"/"float16"), ``max_memory`` and ``offload_folder`` go to the model alone (accelerate
    places it; :mod:`xattr_lab.core.devices`); the other options also to its config and tokenizer.
    """
    kwargs, model_kwargs = _model_options(kwargs, device)
    from transformers import AutoConfig, AutoTokenizer

    local = os.path.isdir(name_or_path)
    name = os.path.basename(os.path.normpath(name_or_path))
    if local:  # loaded by absolute path: the config's _name_or_path (in the fingerprint) is the same in every process
        name_or_path = os.path.abspath(name_or_path)
    if not local and (name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]):
        raise unknown_model_error(name_or_path, FileNotFoundError("no such directory"))
    if not local and "local_files_only" not in kwargs and not _hub_resolves():
        kwargs = {**kwargs, "local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        raise unknown_model_error(name_or_path, error) from error
    model = _auto_class(config).from_pretrained(name_or_path, attn_implementation="eager", **kwargs, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    return session_class(model, tokenizer, device=device, name=name)


def _check_name(name: str) -> None:
    """A model name is a printable alias, directory or hub id of reasonable length."""
    if not name.strip() or len(name) > 1024 or not name.isprintable():
        shown = name if len(name) <= 60 else name[:60] + "..."
        why = "empty" if not name.strip() else "too long" if len(name) > 1024 else "it holds control or invisible characters"
        raise unknown_model_error(shown, ValueError(f"not a model name: {why}"))


def load(model: Any = DEFAULT_MODEL, tokenizer: Any = None, device: Any = "auto", session_class: type = ModelSession,
         **kwargs: Any):
    """A ``session_class`` for an embedded alias, a local directory, a hub id, or a (model, tokenizer).

    The session's ``load_recipe`` (:class:`LoadRecipe`) records what was loaded and how.
    """
    if isinstance(model, session_class):
        return model
    recipe = _recipe(model, kwargs)
    session = _load(model, tokenizer, device, session_class, **kwargs)
    session.load_recipe = recipe
    return session


def _load(model: Any, tokenizer: Any, device: Any, session_class: type, **kwargs: Any):
    """:func:`load` without the recipe."""
    resolve_device(device)  # an unknown device is reported before any model loads
    if isinstance(model, tuple) and len(model) == 2 and tokenizer is None:
        model, tokenizer = model
    if isinstance(model, str):
        if tokenizer is not None:
            raise InputError("pass a tokenizer only together with a model object, not with a name")
        _check_name(model)
        if model in ALIASES:
            unknown = sorted(set(kwargs) - {"rebuild", "progress", "dtype", "device_map", "offload_folder"})
            if unknown:
                raise InputError(f"unexpected options {unknown} for the embedded model {model!r}; "
                                 "it takes rebuild=, progress=, dtype=, device_map= and offload_folder=")
            placing = {k: kwargs.pop(k) for k in ("device_map", "dtype", "offload_folder") if k in kwargs}
            if not placing:
                return load_alias(model, device, session_class=session_class, **kwargs)
            pair = load_alias_model(model, **kwargs)
            return _load(pair, None, device, session_class, name=model, **placing)
        return from_pretrained(model, device, session_class=session_class, **kwargs)
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise InputTypeError(f"model must be an alias, a directory, a hub id or a transformers model, not "
                             f"{type(model).__name__}")
    if tokenizer is None or not callable(tokenizer):
        raise InputError("a model object needs its tokenizer: xattr_lab.load(model, tokenizer)")
    name = kwargs.pop("name", "")
    placing = {k: kwargs.pop(k) for k in ("device_map", "dtype", "offload_folder") if k in kwargs}
    if kwargs:
        raise InputError(
            f"unexpected options {sorted(kwargs)} for a model object: it takes name=, dtype=, device_map= and "
            "offload_folder=; other from_pretrained options apply when loading by name or directory"
        )
    if placing.get("device_map") is not None and device not in (None, "auto"):
        raise InputError(f"pass either device={device!r} or device_map=, not both: a device map places the modules")
    if placing:
        model = place(model, **placing)
    return session_class(model, tokenizer, device=device, name=name)
