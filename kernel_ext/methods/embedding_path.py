"""The embedding path of IG, SIG and gradient x input (torch): one text prepared for attribution
(word embeddings x, the baseline x', the target), and the target score F with its gradient at any
batch of embedding rows, read at the last token with a reused key/value prefix where that is exact.

docs/ARCHITECTURE.md, section "Gradients". The quadrature that integrates along the path is pure
numpy and lives apart, in :mod:`.quadrature`. Shapes: n tokens, d embedding width, B rows.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from ..core import budget
from ..core.encoding import Encoding
from ..core.session import ModelSession
from ..core.targets import CAUSAL_LM, Target
from ..errors import InputError
from .baselines import BASELINES, baseline_token, choose_baseline


@dataclass
class Problem:
    """One text prepared for attribution. Tensors on the explainer's device, float32."""

    encoding: Encoding
    x: torch.Tensor  # (1, n, d) word embeddings
    x_base: torch.Tensor  # (1, n, d) baseline (special rows = x)
    moving: list[int]  # non-special positions
    target: Target
    f_x: float
    logits_row: torch.Tensor
    prediction: dict[str, float]
    baseline: str
    baseline_token: str | None
    baseline_note: str | None = None  # why another token than the requested one is the baseline


def prepare(ex: ModelSession, text: str | Encoding, target: Any, baseline: str, truncate: bool = False,
            check_baseline: bool = True) -> Problem:
    """One text (or its ``Encoding``) -> :class:`Problem`: x and x' (1, n, d) float32, F(x), the target.

    check_baseline: False = take the baseline row as it is (grad x input has no path).
    """
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}")
    encoding = text if isinstance(text, Encoding) else ex.encode(text, truncate=truncate)
    budget.check_method(ex, "ig", encoding.n)  # one forward+backward row: the least IG/SIG/grad x input run with
    moving = [i for i, special in enumerate(encoding.special_mask) if not special]
    if not moving:
        raise InputError(
            f"the text tokenises to special tokens only ({encoding.tokens}); give some words to explain"
        )
    with torch.no_grad():
        x = ex.embed(encoding.input_ids).detach().float()
    # a (near) zero row on a model that normalises the embeddings first is degenerate: the next token, or an error
    token_id, row, note = choose_baseline(ex, encoding, x, moving, baseline, baseline_token(ex.tokenizer, baseline),
                                          check_baseline)
    with torch.no_grad():
        x_base = x.clone()
        x_base[0, moving] = row
        position = ex.readout_position(encoding)
        logits_row = _scored_logits(ex, encoding, x, position)
        resolved = ex.resolve_target(target, logits_row, position)
        f_x = float(dataclasses.replace(resolved, position=None).score(logits_row[None])[0])
    return Problem(
        encoding, x, x_base, moving, resolved, f_x, logits_row.detach().float().cpu(),
        ex.prediction(logits_row), baseline,
        None if token_id is None else ex.tokenizer.convert_ids_to_tokens(token_id), note,
    )


def _scored_logits(ex: ModelSession, encoding: Encoding, x: torch.Tensor, position: int | None) -> torch.Tensor:
    """The logits the target reads, (C,) or (V,), from one pass without gradients over x (1, n, d).

    A causal LM is read at its last token: the pass is lean (SDPA) and keeps that position's logits
    only, as the gradient rows do (:func:`target_scores`), so F(x) is the same function the rows
    integrate, and the (n, V) logits of every position (0.19 GiB at 1,023 tokens of a 49k vocabulary)
    and eager attention's n x n temporaries are never allocated. Other heads run the plain pass.
    """
    if ex.head == CAUSAL_LM and position == encoding.n - 1:
        with ex.lean(1, encoding.n, logit_positions=1):
            logits = ex.model(inputs_embeds=ex.cast(x), attention_mask=encoding.attention_mask, use_cache=False,
                              logits_to_keep=1).logits
        return logits[0, -1].float()
    return ex.target_logits(ex.forward(inputs_embeds=x, attention_mask=encoding.attention_mask).logits, position)


def reads_last_token(ex: ModelSession, problem: Problem) -> bool:
    """Whether F is a causal LM's logit at the last token (only that position's logits are needed)."""
    return ex.head == CAUSAL_LM and problem.target.position == problem.encoding.n - 1


def cache_keyword(model) -> str:
    """The forward keyword that takes a key/value cache: ``cache`` (transformers >= 5.2x, where
    ``past_key_values`` is deprecated for removal in 5.40) or ``past_key_values`` (older)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return "cache"
    return "cache" if "cache" in parameters or "past_key_values" not in parameters else "past_key_values"


def _output_cache(out):
    """The cache of a model output, read without the deprecated ``past_key_values`` attribute."""
    keys = out.keys()
    return out["cache"] if "cache" in keys else out["past_key_values"]


def target_scores(ex: ModelSession, problem: Problem, embeds: torch.Tensor, prefix=None) -> torch.Tensor:
    """F for each row of ``embeds`` (B, m, d) -> (B,).

    ``prefix``: per-layer (key, value) tensors (1, heads, p, head_dim) of the first p = n - m
    tokens (causal models only); ``embeds`` then holds the remaining m tokens.
    """
    rows, m = embeds.shape[:2]
    n = problem.encoding.n
    mask = problem.encoding.attention_mask.expand(rows, n)
    if reads_last_token(ex, problem):
        # Causal LM read at the last token: ask only for that position's logits (saves the LM head
        # on every other position), optionally after a cached prefix.
        kwargs: dict[str, Any] = {"inputs_embeds": ex.cast(embeds), "attention_mask": mask, "logits_to_keep": 1}
        if prefix is not None:
            from transformers import DynamicCache

            kwargs[cache_keyword(ex.model)] = DynamicCache(
                ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix]
            )
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        # memory (core/batching.lean_pass): SDPA, no attention maps; layers checkpointed when that is what fits
        with ex.lean(rows, m, past=n - m, logit_positions=1):
            logits = ex.model(**kwargs).logits.float()  # half-precision models: scored in float32
        return dataclasses.replace(problem.target, position=logits.shape[1] - 1).score(logits)
    if prefix is not None:
        raise ValueError("prefix reuse needs a causal LM read at its last token")
    with ex.lean(rows, m):  # memory: as above
        return problem.target.score(ex.forward(inputs_embeds=embeds, attention_mask=mask).logits)


def prefix_cache(ex: ModelSession, problem: Problem, length: int):
    """Per-layer (key, value) of the first ``length`` tokens of x, batch 1, no gradient."""
    with torch.no_grad():
        out = ex.model(
            inputs_embeds=ex.cast(problem.x[:, :length]),
            attention_mask=problem.encoding.attention_mask[:, :length],
            use_cache=True,
            logits_to_keep=1,
        )
    cache = _output_cache(out)
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]  # pragma: no cover - legacy tuple caches


class PrefixCaches:
    """The cached keys and values of x's prefixes over one SIG run, from one forward pass of the whole text.

    In a causal LM the key and value at position i depend on tokens ≤ i only, so the first ``length``
    positions of the whole text's cache are the cache of x[:, :length]. Slicing it costs nothing,
    where a forward pass per prefix cost the prefix's length each time: SIG's default on 512 tokens of
    smollm2 (chunks of one or two rows there) took 1.54x less time (tests/benchmarks/test_bench_sig_prefix.py).
    A cache whose layers keep fewer than n positions (a sliding window) is not sliced: each prefix gets
    its own pass.
    """

    def __init__(self, ex: ModelSession, problem: Problem) -> None:
        self.ex, self.problem = ex, problem
        self.whole: list | None = None

    def __call__(self, length: int) -> list | None:
        """Per-layer (key, value) of the first ``length`` tokens of x (None for ``length`` 0)."""
        if length <= 0:
            return None
        if self.whole is None:
            self.whole = prefix_cache(self.ex, self.problem, self.problem.encoding.n)
        if any(k.shape[-2] != self.problem.encoding.n for k, _ in self.whole):
            return prefix_cache(self.ex, self.problem, length)
        return [(k[..., :length, :], v[..., :length, :]) for k, v in self.whole]


def scores_and_grads(ex: ModelSession, problem: Problem, embeds: torch.Tensor, prefix=None):
    """(F (B,), dF/d embeds (B, m, d)) for a batch of (suffix) embeddings."""
    embeds = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = target_scores(ex, problem, embeds, prefix)
        (grads,) = torch.autograd.grad(scores.sum(), embeds)
    return scores.detach(), grads


def forward_scores(ex: ModelSession, problem: Problem, embeds: torch.Tensor) -> torch.Tensor:
    """F for each row of ``embeds`` (B, n, d) -> (B,), without gradients."""
    with torch.no_grad():
        return target_scores(ex, problem, embeds)
