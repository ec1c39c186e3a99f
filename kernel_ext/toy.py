"""``xattr_lab.toy``: the toy induction model (:mod:`xattr_lab.core.toy`), loading as an Explainer."""
from __future__ import annotations

from typing import Any

from .core import toy as _toy


def load_toy(device: Any = "cpu", rebuild: bool = False, progress: bool = True):
    """The trained toy induction model as an :class:`xattr_lab.Explainer` (built and cached once)."""
    from .explainer import Explainer

    return _toy.load_toy(device, rebuild=rebuild, progress=progress, session_class=Explainer)


def __getattr__(name: str) -> Any:
    return getattr(_toy, name)


def __dir__() -> list[str]:
    return sorted(set(dir(_toy)) | {"load_toy"})
