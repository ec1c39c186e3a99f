"""IG, SIG and gradient × input for encoder-decoders, over the source and decoder input embeddings.

The two embedding sequences are treated as one, X = [source embeddings; decoder input embeddings]
(n, d), split again for ``inputs_embeds`` / ``decoder_inputs_embeds``. The definitions, baselines,
quadrature and convergence checks are those of text (docs/ARCHITECTURE.md, section "Gradients"):
IG from [PAD] (completeness Σ raw ≈ F(x) − F(x')), SIG moving one token at a time from [MASK] (or
the tokenizer's fallback: unk, eos, pad), ``steps`` an int, "auto", or (SIG) "exact". Special
tokens of the source and the decoder start token keep their embeddings and score 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.batching import resolve_batch_size, run_chunked
from ..errors import InputError
from .baselines import BASELINES, baseline_token
from .path_methods import PathProblem, Style, gradient_times_input, ig_result, ig_run, sig_result, sig_run
from .quadrature import check_tol
from .quadrature import quadrature as quadrature_rule
from .seq2seq_input import Seq2SeqInput, attribution, embedders, forward


@dataclass
class _Joint:
    item: Seq2SeqInput
    x: torch.Tensor  # (1, n, d)
    x_base: torch.Tensor  # (1, n, d), fixed rows = x
    moving: list[int]
    target: Any
    f_x: float
    prediction: dict
    baseline: str
    baseline_token: str | None


def _prepare(ex, item: Seq2SeqInput, target: Any, baseline: str) -> _Joint:
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {list(BASELINES)}")
    moving = [i for i, special in enumerate(item.special_mask) if not special]
    if not moving:
        raise InputError(f"only special tokens to explain ({item.tokens}); give some words")
    enc, dec = embedders(ex)
    token_id = baseline_token(ex.tokenizer, baseline)
    with torch.no_grad():
        x = torch.cat([enc(item.source_ids), dec(item.decoder_ids)], dim=1).float()
        row = torch.zeros_like(x[0, 0]) if token_id is None else enc(torch.tensor([[token_id]], device=x.device))[0, 0]
        x_base = x.clone()
        x_base[0, moving] = row.float()
        out = _forward(ex, item, x)
        position = item.n_target - 1
        resolved = ex.resolve_target(target, out.logits[0, position], position)
        f_x = float(resolved.score(out.logits)[0])
    name = None if token_id is None else ex.tokenizer.convert_ids_to_tokens(token_id)
    return _Joint(item, x, x_base, moving, resolved, f_x, ex.prediction(out.logits[0, position]), baseline, name)


def _forward(ex, item: Seq2SeqInput, X: torch.Tensor):
    ns = item.n_source
    return forward(ex, item, source_embeds=X[:, :ns], decoder_embeds=X[:, ns:])


def _scores(ex, joint: _Joint, X: torch.Tensor, grad: bool):
    """F (B,) for rows X (B, n, d), and dF/dX (B, n, d) when ``grad``."""
    if not grad:
        with torch.no_grad():
            return joint.target.score(_forward(ex, joint.item, X).logits), None
    X = X.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = joint.target.score(_forward(ex, joint.item, X).logits)
        (grads,) = torch.autograd.grad(scores.sum(), X)
    return scores.detach(), grads


def _chunked(total: int, size: int, fill: np.ndarray, work) -> np.ndarray:
    def run(start: int, stop: int) -> None:
        fill[start:stop] = work(start, stop)

    run_chunked(total, size, run)
    return fill


def _result(ex, joint: _Joint, method: str, scores, raw, options: dict):
    return attribution(ex, joint.item, method, scores, raw, joint.target, joint.prediction,
                        {"baseline": joint.baseline, "baseline_token": joint.baseline_token, "f_x": joint.f_x,
                         **options})


def _path_problem(ex, joint: _Joint, size: int) -> PathProblem:
    """The encoder-decoder adapter of :mod:`.path_methods`: X = [source; decoder] embeddings (1, n, d)."""
    delta = (joint.x - joint.x_base)[0]

    def rows(positions, alphas):
        X = joint.x.expand(len(positions), -1, -1).clone()
        index, pos = torch.arange(len(positions)), torch.as_tensor(positions)
        a = torch.tensor(alphas, dtype=X.dtype, device=X.device)[:, None]
        X[index, pos] = joint.x_base[0, pos] + a * delta[pos]
        return X, index, pos

    def unit_rows(positions, alphas):
        def work(start, stop):
            X, index, pos = rows(positions[start:stop], alphas[start:stop])
            _, g = _scores(ex, joint, X, True)
            return (g[index, pos].double() * delta[pos].double()).sum(-1).cpu().numpy()

        return _chunked(len(alphas), size, np.zeros(len(alphas)), work)

    def unit_values(positions, alphas):
        return _chunked(len(alphas), size, np.zeros(len(alphas)),
                        lambda a, b: _scores(ex, joint, rows(positions[a:b], alphas[a:b])[0], False)[0]
                        .double().cpu().numpy())

    return PathProblem(
        list(joint.item.tokens), joint.f_x, None,
        lambda method, scores, raw, options: attribution(ex, joint.item, method, scores, raw, joint.target,
                                                         joint.prediction, options),
        size, joint.baseline, joint.baseline_token, x=joint.x, x_base=joint.x_base,
        grad=lambda points: _scores(ex, joint, points, True), value=lambda points: _scores(ex, joint, points, False)[0],
        moving=joint.moving, unit_values=unit_values, unit_rows=unit_rows)


#: what an encoder-decoder's IG / SIG results record and say (:class:`.path_methods.Style`)
SEQ2SEQ_STYLE = Style(ig_keys=("baseline", "baseline_token", "f_x", "steps", "quadrature", "f_baseline", "nodes",
                               "gradient_rows"),
                      sig_keys=("baseline", "baseline_token", "f_x", "steps", "quadrature", "nodes"), stacklevel=5)


def attribute(ex, item: Seq2SeqInput, method: str, target: Any = None, *, steps: Any = None, baseline: str | None = None,
              quadrature: str = "gausslegendre", convergence_tol: float = 0.05, max_steps: int | None = None,
              batch_size: Any = "auto"):
    """``ig``, ``sig`` or ``grad_x_input`` for one encoder-decoder input -> Attribution (module docstring).

    steps None: the defaults of the decoder-only methods, IG "auto" and SIG "exact" (both pass the completeness check).
    """
    tol = check_tol(convergence_tol)
    steps = ("exact" if method == "sig" else "auto") if steps is None else steps
    if method != "grad_x_input":
        allowed = ("auto", "exact") if method == "sig" else ("auto",)
        if isinstance(steps, str) and steps not in allowed:
            raise InputError(f"steps must be a positive integer or one of {list(allowed)}, not {steps!r}")
        quadrature_rule(4 if isinstance(steps, str) else steps, quadrature)  # checks steps and the rule
    joint = _prepare(ex, item, target, baseline or ("mask" if method == "sig" else "pad" if method == "ig" else "zero"))
    size = resolve_batch_size(ex, item.n, batch_size)
    if method == "ig":
        problem = _path_problem(ex, joint, size)
        problem.f_baseline = float(_scores(ex, joint, joint.x_base, False)[0][0])
        run = ig_run(problem, steps=steps, method=quadrature, tol=tol, min_steps=8, max_steps=max_steps or 1024)
        return ig_result(problem, run, SEQ2SEQ_STYLE)
    if method == "sig":
        problem = _path_problem(ex, joint, size)
        run = sig_run(problem, SEQ2SEQ_STYLE, steps=steps, method=quadrature, tol=tol, min_steps=4,
                      max_steps=max_steps or 128)
        return sig_result(problem, run, SEQ2SEQ_STYLE)
    raw = np.zeros(item.n)
    raw[joint.moving] = gradient_times_input(lambda points: _scores(ex, joint, points, True), joint.x)[joint.moving]
    return _result(ex, joint, "grad_x_input", raw, raw, {})

