"""`xattr_lab.load`: turn an alias, a directory, a hub id or a (model, tokenizer) into an Explainer."""
from __future__ import annotations

import os
import socket
from typing import Any

from .models import Explainer, XattrError
from .zoo import ALIASES, load_alias, unknown_model_error

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
    raise XattrError(
        f"cannot tell which head to load for architectures={config.architectures}: load the model yourself "
        "(…ForSequenceClassification / …ForCausalLM / …ForMaskedLM) and pass xattr_lab.load(model, tokenizer)"
    )


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


def from_pretrained(name_or_path: str, device: Any = "auto", **kwargs: Any) -> Explainer:
    """Load a local directory (offline) or a hub id with eager attention.

    A hub id is looked up in the local Hugging Face cache only (``local_files_only``) when the hub
    cannot be reached, so an offline machine answers at once.
    """
    from transformers import AutoConfig, AutoTokenizer

    local = os.path.isdir(name_or_path)
    if not local and (name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]):
        raise unknown_model_error(name_or_path, FileNotFoundError("no such directory"))
    if not local and "local_files_only" not in kwargs and not _hub_resolves():
        kwargs = {**kwargs, "local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        raise unknown_model_error(name_or_path, error) from error
    model = _auto_class(config).from_pretrained(name_or_path, attn_implementation="eager", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    return Explainer(model, tokenizer, device=device, name=os.path.basename(os.path.normpath(name_or_path)))


def load(model: Any = "minilm-rt", tokenizer: Any = None, device: Any = "auto", **kwargs: Any) -> Explainer:
    if isinstance(model, Explainer):
        return model
    if isinstance(model, tuple) and len(model) == 2 and tokenizer is None:
        model, tokenizer = model
    if isinstance(model, str):
        if tokenizer is not None:
            raise XattrError("pass a tokenizer only together with a model object, not with a name")
        if model in ALIASES:
            return load_alias(model, device, **kwargs)
        return from_pretrained(model, device, **kwargs)
    if tokenizer is None:
        raise XattrError("a model object needs its tokenizer: xattr_lab.load(model, tokenizer)")
    name = kwargs.pop("name", "")
    if kwargs:
        raise XattrError(
            f"unexpected options {sorted(kwargs)} for a model object: from_pretrained options apply when "
            "loading by name or directory; pass the loaded model as it is"
        )
    return Explainer(model, tokenizer, device=device, name=name)
