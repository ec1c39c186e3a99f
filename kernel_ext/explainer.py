"""The facade: :class:`Explainer` (a model session with the user-facing verbs) and :func:`load`.

Every verb looks its method up in :mod:`xattr_lab.methods.registry`; nothing below this module
imports it (docs/ARCHITECTURE.md, section "Layers").

Every verb checks its request first (texts, option values, the target's type), estimates the
computation's peak memory and refuses it with a :class:`~xattr_lab.errors.BudgetError` when it
would not fit (:mod:`xattr_lab.core.budget`), then runs inside ``restored()``: one Explainer
serialises its verbs across threads, and the model, hooks and torch's global state are put back
afterwards, also on error or interrupt.
"""
from __future__ import annotations

import math
import numbers
import re
import warnings
from typing import Any, Callable, Sequence

from .constants import DEFAULT_MODEL
from .core import budget, loading
from .core.encoding import Encoding
from .core.session import ModelSession
from .errors import InputError, InputTypeError
from .methods import modalities, registry, words

_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")


class Explainer(ModelSession):
    """A model, its tokenizer and a device, ready to explain texts.

    Build one with :func:`xattr_lab.load`. ``head`` is "classifier", "causal_lm" or "masked_lm".
    """

    def attribute(self, text: str, method: str = "sig", target: Any = None, granularity: str = "token", **options: Any):
        """Token attributions for ``text`` -> :class:`xattr_lab.results.Attribution`.

        method: one of ``xattr_lab.METHODS`` (see ``xattr_lab.methods.registry``); options go to the method.
        granularity: "token" (subword tokens) or "word" (tokens merged into words by the tokenizer's
        offsets, scores by the method's rule: :mod:`xattr_lab.methods.words`); integer ``sources``
        (rollout, attention_flow, gaf) are then word positions.
        """
        if modalities.routed(self, text):  # an image (ViT) or an encoder-decoder (T5, BART)
            _check_values(options)
            return modalities.explain(self, "attribute", text, method, target, granularity, **options)
        if not isinstance(method, str) or method not in registry.ATTRIBUTION_METHODS:
            raise InputError(f"unknown method {method!r}; choose one of {list(registry.ATTRIBUTION_METHODS)}")
        words.check_granularity(granularity)
        self._word_sources(text, options, granularity)
        if granularity == "word" and callable(options.get("callback")):  # SIG's streamed partials: words too
            inner = options["callback"]
            options["callback"] = lambda part: inner(self._words(part, text, options, "word", words.attribution_to_words))
        result = self._verb(method, [text], target, options,
                            lambda: registry.function(method)(self, text, method=method, target=target, **options))
        return self._words(result, text, options, granularity, words.attribution_to_words)

    def flow(self, text: str, info: str = "agf", target: Any = None, residual: float | None = None,
             granularity: str = "token", **options: Any):
        """Generalized Attention Flow -> :class:`xattr_lab.results.FlowResult` (``granularity`` as in
        :meth:`attribute`: "word" merges each word's nodes in every layer)."""
        if modalities.routed(self, text):
            _check_values(options)
            return modalities.explain(self, "flow", text, "flow", target, granularity, info=info, residual=residual,
                                      **options)
        words.check_granularity(granularity)
        self._word_sources(text, options, granularity)
        checked = {"info": info, "residual": residual, **options}
        result = self._verb("flow", [text], target, checked, lambda: registry.function("flow")(
            self, text, info=info, target=target, residual=residual, **options))
        return self._words(result, text, options, granularity, words.flow_to_words)

    def attribute_generation(self, prompt: str, max_new_tokens: int = 20, method: str = "ig", target: str | None = None,
                             callback: Callable[[Any], Any] | None = None, **options: Any):
        """Generate (greedy, or teacher-force ``target`` text) and attribute every generated token to
        the prompt and the earlier tokens -> :class:`xattr_lab.results.GenerationResult`.

        method: "ig", "sig", "attention", "rollout" or "gaf"; options go to it. ``callback(partial)``
        gets the result after each row; returning False stops the run (``Cancelled``). See
        :func:`xattr_lab.methods.generation.attribute_generation`.
        """
        _check_values(options)
        if target is not None and not isinstance(target, str):
            raise InputTypeError(f"target must be None (greedy) or a text to teacher-force, not {type(target).__name__}")
        if modalities.routed(self, prompt):  # an encoder-decoder's target, token by token (ViT: an error)
            return modalities.generate(self, prompt, max_new_tokens, method, target, callback, **options)
        with self.restored():
            return registry.function("generate")(self, prompt, max_new_tokens=max_new_tokens, method=method,
                                                   target=target, callback=callback, **options)

    def _words(self, result, text, options: dict, granularity: str, convert):
        """The result over words when ``granularity == "word"`` (the encoding as the method saw it)."""
        if granularity == "token":
            return result
        encoding = self._encoding(text, options)
        return convert(self, result, encoding.input_ids[0].tolist(), encoding.special_mask)

    def _encoding(self, text, options: dict) -> Encoding:
        if isinstance(text, Encoding):
            return text
        with warnings.catch_warnings():  # the method warns about truncation
            warnings.simplefilter("ignore")
            return self.encode(text, truncate=bool(options.get("truncate", False)))

    def _word_sources(self, text, options: dict, granularity: str) -> None:
        """With ``granularity="word"``, integer ``sources`` are word positions: each becomes its tokens."""
        sources = options.get("sources")
        if granularity == "word" and sources is not None and not isinstance(sources, str):
            encoding = self._encoding(text, options)
            options["sources"] = words.word_sources(self, encoding.text, encoding.input_ids[0].tolist(),
                                                    encoding.special_mask, sources)

    def heads(self, text: str | Sequence[str], **options: Any):
        """Attention geometry -> :class:`xattr_lab.results.HeadStats` (mean over a list of texts)."""
        if modalities.routed(self, text):
            return modalities.explain(self, "heads", text, **options)
        texts = [text] if isinstance(text, (str, Encoding)) else _text_list(text, "heads")
        return self._verb("heads", texts, None, options, lambda: registry.function("heads")(self, text, **options))

    def circuit(self, positive: Sequence[str], negative: Sequence[str], **options: Any):
        """A circuit over attention heads. ``method="sae"`` (default): SAE circuit codes ->
        :class:`xattr_lab.results.CircuitResult`; ``"atp"``, ``"eap"``, ``"eap-ig"``: attribution patching of
        clean ``positive`` prompts against their corrupted ``negative`` twins (paired by index, same token
        length; ``metric``, ``ig_steps``, ``truth``, ``faithfulness``) ->
        :class:`xattr_lab.results.PatchingCircuitResult` (:mod:`xattr_lab.methods.patching_circuits`)."""
        if modalities.routed(self, positive):
            return modalities.explain(self, "circuit", positive, "circuit", None, **options)
        texts = _text_list(positive, "positive") + _text_list(negative, "negative")
        return self._verb("circuit", texts, None, options,
                          lambda: registry.function("circuit")(self, positive, negative, **options))

    # ------------------------------------------------------------------ checks
    def _verb(self, method: str, texts: list, target: Any, options: dict, call: Callable[[], Any]):
        """Check the request, check its memory budget, then run ``call`` inside ``restored()``."""
        _check_values(options)
        _check_target(target)
        with self.restored():
            self._check_budget(method, texts, options)
            try:
                return call()
            except TypeError as error:  # an option the method does not take: say which ones it does
                match = _UNEXPECTED.search(str(error))
                if match is None or match.group(1) not in options:
                    raise
                known = ", ".join(o.name for o in registry.spec(method).options)
                raise InputError(f"unknown option {match.group(1)!r} for {method}; its options are: {known}") from None

    def _check_budget(self, method: str, texts: list, options: dict) -> None:
        truncate = bool(options.get("truncate", False))
        n = max(t.n if isinstance(t, Encoding) else self.encode(t, truncate=truncate).n for t in texts)
        if method == "circuit":
            features = options.get("features", 200)
            if not isinstance(features, numbers.Integral):
                return  # the method says what is wrong with it
            estimate = budget.circuit_estimate(budget.shape_of(self), len(texts), n, int(features), self.name)
            budget.check(estimate, self.device)
            return
        budget.check_method(self, method, n, options)


def _text_list(value: Any, what: str) -> list:
    if isinstance(value, str) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        kind = "one string" if isinstance(value, str) else type(value).__name__
        raise InputTypeError(f"{what} must be a list of texts, not {kind}")
    texts = list(value)
    if not texts:
        raise InputError(f"{what}: give at least one text")
    return texts


def _check_values(options: dict) -> None:
    """NaN or infinite numbers where numbers go: an :class:`InputError` naming the option."""
    for name, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, numbers.Real) and not isinstance(item, numbers.Integral) and not math.isfinite(float(item)):
                raise InputError(f"{name}={value!r}: give a finite number")


def _check_target(target: Any) -> None:
    """A target is None, a class index or label, a token or vocabulary index, or a pair of those."""
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    for item in items:
        if item is None and len(items) == 1 or isinstance(item, str):
            continue
        if isinstance(item, numbers.Integral) and not isinstance(item, bool):
            continue
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            raise InputError(f"target={target!r}: a class or token index is a whole number" +
                             ("" if math.isfinite(float(item)) else ", not NaN or infinity"))
        raise InputTypeError(f"target must be None, a class index or label, a token or vocabulary index, or a pair "
                             f"(a, b); not {type(item).__name__}")


def load(model: Any = DEFAULT_MODEL, tokenizer: Any = None, device: Any = "auto", **kwargs: Any) -> Explainer:
    """An :class:`Explainer` for an embedded alias, a local directory, a hub id, or a (model, tokenizer).

    ``device``: "auto" (cuda if available, else cpu), "cpu", "cuda", or a torch.device.
    ``dtype`` ("bfloat16", "float16", a torch dtype), ``device_map`` ("auto" or {module: device})
    and ``offload_folder`` place the model through accelerate, for every kind of ``model``
    (:mod:`xattr_lab.core.devices`). Other keyword arguments go to ``from_pretrained`` for
    directories and hub ids.
    """
    return loading.load(model, tokenizer, device=device, session_class=Explainer, **kwargs)


def load_alias(alias: str, device: Any = "auto", *, rebuild: bool = False, progress: bool = True) -> Explainer:
    """An embedded model by alias as an :class:`Explainer` (built and cached on first use); public as
    ``xattr_lab.zoo.load_alias`` (:func:`xattr_lab.core.zoo.load_alias` gives a plain ``ModelSession``)."""
    from .core import zoo

    return zoo.load_alias(alias, device, rebuild=rebuild, progress=progress, session_class=Explainer)


def load_toy(device: Any = "cpu", rebuild: bool = False, progress: bool = True) -> Explainer:
    """The toy induction model as an :class:`Explainer` (built and cached once); public as
    ``xattr_lab.toy.load_toy`` (:func:`xattr_lab.core.toy.load_toy` gives a plain ``ModelSession``)."""
    from .core import toy

    return toy.load_toy(device, rebuild=rebuild, progress=progress, session_class=Explainer)
