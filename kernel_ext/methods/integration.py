"""What IG and SIG share: quadrature rules, baseline tokens, one text prepared for attribution,
and the target score (and its gradient) along an interpolation path.

docs/ARCHITECTURE.md, section "Gradients".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.session import Encoding, ModelSession
from ..core.targets import CAUSAL_LM, Target
from ..errors import InputError

BASELINES = ("pad", "mask", "zero")
QUADRATURES = ("gausslegendre", "riemann_trapezoid")
#: show a progress bar by default when a call needs more gradient rows than this
PROGRESS_MIN_ROWS = 512


# ---------------------------------------------------------------------------- pure helpers
def quadrature(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1] -> (alphas (steps,), weights (steps,)), float64.

    "gausslegendre": Gauss-Legendre nodes mapped from [-1, 1] (exact for polynomials of degree
    2*steps-1; weights sum to 1). "riemann_trapezoid": ``steps`` >= 2 equally spaced nodes
    including both ends, trapezoid weights (sum to 1).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise InputError(f"steps must be a positive integer (or 'auto' for SIG), not {steps!r}")
    steps = int(steps)
    if steps < 1:
        raise InputError(f"steps must be at least 1, not {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        if steps < 2:
            raise InputError("the trapezoid rule needs steps >= 2 (both end points); use more steps or 'gausslegendre'")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    raise InputError(f"unknown quadrature {method!r}; choose one of {list(QUADRATURES)}")


def baseline_token(tokenizer, baseline: str) -> int | None:
    """Vocabulary id whose embedding is the baseline ("pad"/"mask"), or None for "zero".

    Fallbacks for tokenizers without the token: "mask" -> unk -> eos -> pad; "pad" -> eos -> unk.
    """
    if baseline == "zero":
        return None
    if baseline == "mask":
        order = ("mask_token_id", "unk_token_id", "eos_token_id", "pad_token_id")
    elif baseline == "pad":
        order = ("pad_token_id", "eos_token_id", "unk_token_id")
    else:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}")
    for attr in order:
        token_id = getattr(tokenizer, attr, None)
        if token_id is not None:
            return int(token_id)
    raise InputError(f"this tokenizer has no token to use as the {baseline!r} baseline; use baseline='zero'")


def normalise(raw: np.ndarray) -> np.ndarray:
    """raw / ||raw||_2 (all zeros stay zeros)."""
    norm = float(np.linalg.norm(raw))
    return raw / norm if norm > 0 else raw.copy()


def _progress_bar(total: int, progress: Any, desc: str):
    show = total > PROGRESS_MIN_ROWS if progress is None else bool(progress)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not show, leave=False)


# ---------------------------------------------------------------------------- the problem
@dataclass
class _Problem:
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


def _prepare(ex: ModelSession, text: str | Encoding, target: Any, baseline: str, truncate: bool = False) -> _Problem:
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}")
    encoding = text if isinstance(text, Encoding) else ex.encode(text, truncate=truncate)
    moving = [i for i, special in enumerate(encoding.special_mask) if not special]
    if not moving:
        raise InputError(
            f"the text tokenises to special tokens only ({encoding.tokens}); give some words to explain"
        )
    token_id = baseline_token(ex.tokenizer, baseline)
    with torch.no_grad():
        x = ex.embed(encoding.input_ids).detach().float()
        if token_id is None:
            row = torch.zeros_like(x[0, 0])
        else:
            row = ex.embed(torch.tensor([[token_id]], device=ex.device))[0, 0].detach().float()
        x_base = x.clone()
        x_base[0, moving] = row
        position = ex.readout_position(encoding)
        logits = ex.forward(inputs_embeds=x, attention_mask=encoding.attention_mask).logits
        logits_row = ex.target_logits(logits, position)
        resolved = ex.resolve_target(target, logits_row, position)
        f_x = float(resolved.score(logits)[0])
    return _Problem(
        encoding, x, x_base, moving, resolved, f_x, logits_row.detach().float().cpu(),
        ex.prediction(logits_row), baseline,
        None if token_id is None else ex.tokenizer.convert_ids_to_tokens(token_id),
    )


def _reads_last_token(ex: ModelSession, problem: _Problem) -> bool:
    return ex.head == CAUSAL_LM and problem.target.position == problem.encoding.n - 1


def _target_scores(ex: ModelSession, problem: _Problem, embeds: torch.Tensor, prefix=None) -> torch.Tensor:
    """F for each row of ``embeds`` (B, m, d) -> (B,).

    ``prefix``: per-layer (key, value) tensors (1, heads, p, head_dim) of the first p = n - m
    tokens (causal models only); ``embeds`` then holds the remaining m tokens.
    """
    rows, m = embeds.shape[:2]
    n = problem.encoding.n
    mask = problem.encoding.attention_mask.expand(rows, n)
    if _reads_last_token(ex, problem):
        # Causal LM read at the last token: ask only for that position's logits (saves the LM head
        # on every other position), optionally after a cached prefix.
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask, "logits_to_keep": 1}
        if prefix is not None:
            from transformers import DynamicCache

            kwargs["past_key_values"] = DynamicCache(
                ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix]
            )
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        logits = ex.model(**kwargs).logits
        return dataclasses.replace(problem.target, position=logits.shape[1] - 1).score(logits)
    if prefix is not None:
        raise ValueError("prefix reuse needs a causal LM read at its last token")
    return problem.target.score(ex.forward(inputs_embeds=embeds, attention_mask=mask).logits)


def _prefix_cache(ex: ModelSession, problem: _Problem, length: int):
    """Per-layer (key, value) of the first ``length`` tokens of x, batch 1, no gradient."""
    with torch.no_grad():
        out = ex.model(
            inputs_embeds=problem.x[:, :length],
            attention_mask=problem.encoding.attention_mask[:, :length],
            use_cache=True,
            logits_to_keep=1,
        )
    cache = out.past_key_values
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]  # pragma: no cover - legacy tuple caches


def _scores_and_grads(ex: ModelSession, problem: _Problem, embeds: torch.Tensor, prefix=None):
    """(F (B,), dF/d embeds (B, m, d)) for a batch of (suffix) embeddings."""
    embeds = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = _target_scores(ex, problem, embeds, prefix)
        (grads,) = torch.autograd.grad(scores.sum(), embeds)
    return scores.detach(), grads


def _forward_scores(ex: ModelSession, problem: _Problem, embeds: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _target_scores(ex, problem, embeds)
