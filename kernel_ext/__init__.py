"""xattr-lab: explain Transformer models inline in Jupyter.

    import xattr_lab as xa
    ex = xa.load("minilm-rt")
    a = ex.attribute("A gripping, beautifully acted film.", method="sig")

Submodules (``xa.flows``, ``xa.gradients``, ...) and torch are imported lazily (PEP 562), so
``%load_ext xattr_lab`` and ``import xattr_lab.widgets`` stay fast.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public submodule names -> the module that holds them
_SUBMODULES = {
    "flows": "flows", "gradients": "gradients", "circuits": "circuits", "geometry": "geometry",
    "faithfulness": "faithfulness", "robustness": "robustness", "tasks": "tasks", "zoo": "zoo", "toy": "toy",
    "results": "results", "magic": "magic", "cli": "cli", "commands": "commands", "widgets": "widgets",
    "errors": "errors", "constants": "constants", "explainer": "explainer", "core": "core",
    "graphs": "graphs", "methods": "methods", "evaluation": "evaluation", "targets": "core.targets",
    "payload": "payload", "workshop": "workshop",
}
_ATTRIBUTES = {
    "Explainer": "explainer",
    "XattrError": "errors",
    "ModelError": "errors",
    "InputError": "errors",
    "SolverError": "errors",
    "BudgetError": "errors",
    "Attribution": "results",
    "FlowResult": "results",
    "HeadStats": "results",
    "CircuitResult": "results",
    "PatchingCircuitResult": "results",
    "GenerationResult": "results",
    "ALIASES": "core.zoo",
    "DEFAULT_MODEL": "constants",
}

if TYPE_CHECKING:  # pragma: no cover
    from .explainer import Explainer


def load(model: Any = None, tokenizer: Any = None, device: Any = "auto", **kwargs: Any) -> "Explainer":
    """An :class:`Explainer` for an embedded alias, a local directory, a hub id, or a (model, tokenizer).

    ``model`` defaults to the embedded ``xattr_lab.DEFAULT_MODEL`` ("minilm-rt").
    ``device``: "auto" (cuda if available, else cpu), "cpu", "cuda", or a torch.device.
    ``dtype`` ("bfloat16", "float16" or a torch dtype), ``device_map`` ("auto" or {module: device}) and
    ``offload_folder`` place the model through accelerate (docs/ARCHITECTURE.md, section "Core").
    Extra keyword arguments go to ``from_pretrained`` for directories and hub ids.
    """
    from .constants import DEFAULT_MODEL
    from .explainer import load as _load

    return _load(DEFAULT_MODEL if model is None else model, tokenizer, device=device, **kwargs)


def load_ipython_extension(ipython) -> None:
    from .magic import load_ipython_extension as _load_ext

    _load_ext(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magic import unload_ipython_extension as _unload_ext

    _unload_ext(ipython)


def _jupyter_labextension_paths():
    return [{"src": "../labextension/dist", "dest": "xattr-lab"}]


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # the token-attribution methods of the registry (torch-free)
        from .methods.registry import ATTRIBUTION_METHODS

        return ATTRIBUTION_METHODS
    if name in _SUBMODULES:
        return importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    raise AttributeError(f"module 'xattr_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_ATTRIBUTES) | {"METHODS"})
