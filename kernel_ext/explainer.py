"""The facade: :class:`Explainer` (a model session with the user-facing verbs) and :func:`load`.

Every verb looks its method up in :mod:`xattr_lab.methods.registry`; nothing below this module
imports it (docs/ARCHITECTURE.md, section "Layers").
"""
from __future__ import annotations

from typing import Any, Sequence

from .constants import DEFAULT_MODEL
from .core import loading
from .core.session import ModelSession
from .errors import InputError
from .methods import registry


class Explainer(ModelSession):
    """A model, its tokenizer and a device, ready to explain texts.

    Build one with :func:`xattr_lab.load`. ``head`` is "classifier", "causal_lm" or "masked_lm".
    """

    def attribute(self, text: str, method: str = "sig", target: Any = None, **options: Any):
        """Token attributions for ``text`` -> :class:`xattr_lab.results.Attribution`.

        method: one of ``xattr_lab.METHODS`` (see ``xattr_lab.methods.registry``); options go to the method.
        """
        if method not in registry.ATTRIBUTION_METHODS:
            raise InputError(f"unknown method {method!r}; choose one of {list(registry.ATTRIBUTION_METHODS)}")
        return registry.function(method)(self, text, method=method, target=target, **options)

    def flow(self, text: str, info: str = "agf", target: Any = None, residual: float | None = None, **options: Any):
        """Generalized Attention Flow -> :class:`xattr_lab.results.FlowResult`."""
        return registry.function("flow")(self, text, info=info, target=target, residual=residual, **options)

    def heads(self, text: str | Sequence[str], **options: Any):
        """Attention geometry -> :class:`xattr_lab.results.HeadStats` (mean over a list of texts)."""
        return registry.function("heads")(self, text, **options)

    def circuit(self, positive: Sequence[str], negative: Sequence[str], **options: Any):
        """SAE circuit codes -> :class:`xattr_lab.results.CircuitResult`."""
        return registry.function("circuit")(self, positive, negative, **options)


def load(model: Any = DEFAULT_MODEL, tokenizer: Any = None, device: Any = "auto", **kwargs: Any) -> Explainer:
    """An :class:`Explainer` for an embedded alias, a local directory, a hub id, or a (model, tokenizer).

    ``device``: "auto" (cuda if available, else cpu), "cpu", "cuda", or a torch.device.
    Extra keyword arguments go to ``from_pretrained`` for directories and hub ids.
    """
    return loading.load(model, tokenizer, device=device, session_class=Explainer, **kwargs)
