"""``xattr_lab.zoo``: the embedded models and data (:mod:`xattr_lab.core.zoo`), loading as Explainers."""
from __future__ import annotations

from typing import Any

from .core import zoo as _zoo


def load_alias(alias: str, device: Any = "auto", *, rebuild: bool = False, progress: bool = True):
    """An embedded model by alias as an :class:`xattr_lab.Explainer` (built and cached on first use)."""
    from .explainer import Explainer

    return _zoo.load_alias(alias, device, rebuild=rebuild, progress=progress, session_class=Explainer)


def __getattr__(name: str) -> Any:
    return getattr(_zoo, name)


def __dir__() -> list[str]:
    return sorted(set(dir(_zoo)) | {"load_alias"})
