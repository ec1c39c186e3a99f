"""Gradient attributions on word embeddings: Integrated Gradients, Sequential IG, gradient x input.

docs/ARCHITECTURE.md, section "Gradients". Everything here differentiates the pre-softmax target (``Target.score``: a class
logit, a next-token logit or a logit difference) with respect to the *word* embeddings
(``Explainer.embed``); position and token-type embeddings are added inside the model and stay fixed.

Notation: x (n, d) word embeddings of the text, x' (n, d) the baseline, F the target score.

- Baselines: "pad", "mask" or "zero". Special tokens ([CLS], [SEP], BOS, EOS) keep their own
  embeddings in every baseline, so they never move and score 0. Tokenizers without a [MASK] token
  (GPT-2, Llama/SmolLM) use the unknown token's embedding for "mask", then EOS; tokenizers without
  a [PAD] token use EOS, then the unknown token. ``Attribution.options["baseline_token"]`` names the
  token used (None for "zero").
- Quadrature on [0, 1]: Gauss-Legendre (``numpy.polynomial.legendre.leggauss`` mapped from [-1, 1],
  the same nodes and weights as Captum's "gausslegendre") or "riemann_trapezoid" (nodes
  ``linspace(0, 1, steps)``, weights 1/(steps-1) with halved end points — a true trapezoid rule;
  Captum's weights for that name are 1/steps, i.e. its result is ours times (steps-1)/steps).
- IG: raw_j = sum_d (x_jd - x'_jd) * int_0^1 dF/dx_jd(x' + a (x - x')) da; completeness
  sum_j raw_j ~= F(x) - F(x'). ``scores`` = ``raw``.
- SIG (Enguehard 2023): for each non-special position i only token i moves from x'_i to x_i, the
  others stay at x. raw_i = sum_d (x_id - x'_id) int_0^1 dF/dx_id da; per-token completeness
  raw_i ~= F(x) - F(x with token i at the baseline). ``scores`` = raw / ||raw||_2.
- grad x input: raw_j = sum_d x_jd dF/dx_jd at x (one backward pass); special tokens score 0.

Speed (SIG costs positions x nodes forward+backward passes): all (position, node) pairs are
batched together in memory-bounded chunks; ``steps="auto"`` picks the number of Gauss-Legendre
nodes per token (from 4, grown by the observed error's convergence) until its completeness
error is under ``tol``;
for causal models the key/value cache of the unchanged prefix before the moving token is computed
once per chunk and reused (the prefix's activations do not depend on a later token).

Completeness error (what ``tol`` bounds and ``options["completeness_error"]`` reports, per token):
|raw_i - (F(x) - F(x_i -> x'_i))| / scale, scale = max(|F(x) - F(x')|, max_i |F(x) - F(x_i -> x'_i)|).
The second term only matters when the whole-text difference is near zero.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.batching import auto_batch_size, available_memory, is_out_of_memory, resolve_batch_size, run_chunked  # noqa: F401
from ..core.session import ModelSession
from ..errors import InputError
from ..results import Attribution
from .integration import (  # noqa: F401  (public names of xattr_lab.gradients)
    BASELINES, PROGRESS_MIN_ROWS, QUADRATURES, _forward_scores, _prefix_cache, _prepare, _Problem, _progress_bar,
    _reads_last_token, _scores_and_grads, _target_scores, baseline_token, normalise, quadrature,
)
from .registry import implements


# ---------------------------------------------------------------------------- IG
def integrated_gradients(
    ex: ModelSession,
    text: str,
    target: Any = None,
    steps: int = 50,
    baseline: str = "pad",
    method: str = "gausslegendre",
    *,
    batch_size: Any = "auto",
    progress: Any = None,
    truncate: bool = False,
) -> Attribution:
    """Integrated Gradients on the word embeddings -> Attribution (scores = raw, logit units).

    steps: quadrature nodes (int >= 1); method: "gausslegendre" or "riemann_trapezoid";
    baseline: "pad" | "mask" | "zero" (special tokens keep their embeddings).
    options record f_x = F(x), f_baseline = F(x'), completeness_error = |sum raw - (F(x) - F(x'))|
    / |F(x) - F(x')|.
    """
    alphas, weights = quadrature(steps, method)
    with ex.restored():
        problem = _prepare(ex, text, target, baseline, truncate)
        n = problem.encoding.n
        size = resolve_batch_size(ex, n, batch_size)
        delta = problem.x - problem.x_base
        total = torch.zeros(n, delta.shape[-1], dtype=torch.float64, device=ex.device)
        alpha_t = torch.tensor(alphas, dtype=torch.float32, device=ex.device)
        weight_t = torch.tensor(weights, dtype=torch.float64, device=ex.device)

        def work(start: int, stop: int) -> None:
            nonlocal total
            embeds = problem.x_base + alpha_t[start:stop, None, None] * delta
            _, grads = _scores_and_grads(ex, problem, embeds)
            total = total + (weight_t[start:stop, None, None] * grads.double()).sum(0)

        with _progress_bar(len(alphas), progress, "IG") as bar:
            used = run_chunked(len(alphas), size, work, bar=bar)
        raw = (delta[0].double() * total).sum(-1)
        f_base = float(_forward_scores(ex, problem, problem.x_base)[0])
    raw_np = raw.cpu().numpy()
    expected = problem.f_x - f_base
    error = abs(float(raw_np.sum()) - expected) / max(abs(expected), 1e-12)
    return _attribution(ex, problem, "ig", raw_np, raw_np, {
        "steps": int(steps), "quadrature": method, "baseline": baseline, "baseline_token": problem.baseline_token,
        "f_x": problem.f_x, "f_baseline": f_base, "completeness_error": error, "batch_size": used,
    })


# ---------------------------------------------------------------------------- SIG
def sequential_integrated_gradients(
    ex: ModelSession,
    text: str,
    target: Any = None,
    steps: Any = 50,
    baseline: str = "mask",
    method: str = "gausslegendre",
    batch_size: Any = "auto",
    tol: float = 0.01,
    progress: Any = None,
    *,
    min_steps: int = 4,
    max_steps: int = 128,
    prefix_reuse: bool = True,
    positions: Sequence[int] | None = None,
    truncate: bool = False,
    callback: Callable[[Attribution], Any] | None = None,
    stream_every: int = 4,
) -> Attribution:
    """Sequential Integrated Gradients -> Attribution (scores = raw / ||raw||_2, raw in logit units).

    steps: an int = exactly that many quadrature nodes for every token; "auto" = per token, start
    at ``min_steps`` nodes and add nodes (see :func:`next_node_count`, at most ``max_steps``)
    until its completeness error is under ``tol``; "exact" = the limit of the quadrature, which
    for the token-level score is F(x) - F(x with token i at the baseline) by the fundamental
    theorem of calculus along the one-token path (forward passes only, no gradients).
    batch_size: rows per forward+backward chunk, or "auto" (from free memory).
    prefix_reuse: for causal LMs, reuse the key/value cache of the tokens before the moving one.
    positions: attribute only these (non-special) token positions; the others get 0.
    callback: streaming. Positions are then done ``stream_every`` at a time, and after each group
    ``callback(partial)`` gets an Attribution holding the tokens finished so far (the others 0;
    ``options["positions_done"]`` lists them). If it returns False the run stops and raises
    :class:`Cancelled`. Per-token results are the same as without a callback.
    options: steps, nodes (per token, 0 for special tokens), completeness_error (per token, see
    the module docstring), f_x, f_baseline, f_without (F with token i at the baseline; F(x) for
    tokens not attributed), gradient_rows (forward+backward rows run).
    """
    adaptive = steps == "auto"
    exact = steps == "exact"
    if not (adaptive or exact):
        quadrature(steps, method)  # validates steps and method
    elif method not in QUADRATURES:
        raise InputError(f"unknown quadrature {method!r}; choose one of {list(QUADRATURES)}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise InputError(f"tol must be a positive number, not {tol!r}")
    if adaptive:
        quadrature(min_steps)
        quadrature(max_steps)
    with ex.restored():
        problem = _prepare(ex, text, target, baseline, truncate)
        n = problem.encoding.n
        if positions is not None:
            chosen = sorted({int(p) % n if -n <= int(p) < n else n for p in positions})
            bad = [p for p in chosen if p >= n or p not in problem.moving]
            if bad or not chosen:
                raise InputError(f"positions must be non-special token positions of this text, i.e. in {problem.moving}")
            problem.moving = chosen
        size = resolve_batch_size(ex, n, batch_size)
        reuse = prefix_reuse and _reads_last_token(ex, problem)
        f_without = _sig_endpoints(ex, problem, size)
        f_base = float(_forward_scores(ex, problem, problem.x_base)[0])
        expected = problem.f_x - f_without  # (P,)
        scale = max(abs(problem.f_x - f_base), float(np.abs(expected).max()), 1e-12)

        raw = np.zeros(n)
        nodes = np.zeros(n, dtype=int)
        errors = np.zeros(n)
        rows = 0
        unconverged: list[int] = []
        moving = list(problem.moving)
        group_size = len(moving) if callback is None else max(1, int(stream_every))
        for start in range(0, len(moving), group_size):
            group = moving[start:start + group_size]
            if exact:
                raw[group] = expected[start:start + group_size]
            else:
                problem.moving = group  # each token's quadrature is independent of the others
                g_raw, g_nodes, g_errors, g_rows, g_unconverged = _sig_quadrature(
                    ex, problem, expected[start:start + group_size], scale, steps, method, size, tol,
                    progress, min_steps, max_steps, reuse)
                problem.moving = moving
                raw[group], nodes[group], errors[group] = g_raw[group], g_nodes[group], g_errors[group]
                rows += g_rows
                unconverged += g_unconverged
            if callback is not None:
                done = moving[:start + len(group)]
                partial = _attribution(ex, problem, "sig", normalise(raw), raw.copy(),
                                       {"steps": steps, "partial": True, "positions_done": done,
                                        "positions_total": len(moving)})
                if callback(partial) is False:
                    raise Cancelled(f"SIG cancelled after {len(done)} of {len(moving)} tokens")
        if unconverged:
            warnings.warn(
                f"SIG: {len(unconverged)} token(s) still above tol={tol} at {max_steps} nodes "
                f"(max error {errors[unconverged].max():.3g}); raise max_steps or tol", RuntimeWarning, stacklevel=2,
            )
    f_without_full = np.full(n, problem.f_x)
    f_without_full[problem.moving] = f_without
    return _attribution(ex, problem, "sig", normalise(raw), raw, {
        "steps": steps if (adaptive or exact) else int(steps), "quadrature": None if exact else method,
        "baseline": baseline, "baseline_token": problem.baseline_token, "tol": tol if adaptive else None,
        "nodes": nodes.tolist(), "completeness_error": errors.tolist(),
        "f_x": problem.f_x, "f_baseline": f_base, "f_without": f_without_full.tolist(),
        "gradient_rows": rows, "prefix_reuse": reuse and not exact, "batch_size": size,
    })


def next_node_count(nodes: int, error: float, tol: float, max_steps: int, previous: tuple[int, float] | None = None) -> int:
    """Nodes to try after ``nodes`` left a relative ``error`` > ``tol``.

    Gauss-Legendre error on a smooth integrand falls about geometrically in the node count. With
    a ``previous`` (nodes, error) of the same token the rate is measured from the two levels;
    otherwise error(m) ~ error ** (m / nodes) is assumed. Aims at tol/4 for a margin and grows
    by 1.5x to 4x per level, at most ``max_steps``.
    """
    goal = math.log(tol / 4)
    if not 0 < error < 1:
        wanted = 4 * nodes
    elif previous is not None and 0 < error < previous[1] and nodes > previous[0]:
        slope = (math.log(error) - math.log(previous[1])) / (nodes - previous[0])  # < 0
        wanted = nodes + math.ceil((goal - math.log(error)) / slope)
    else:
        wanted = math.ceil(nodes * goal / math.log(error))
    return int(min(max_steps, max(math.ceil(1.5 * nodes), min(wanted, 4 * nodes))))


def _sig_quadrature(ex, problem, expected, scale, steps, method, size, tol, progress, min_steps, max_steps, reuse):
    """Quadrature for every moving token; adaptive when steps == "auto".

    Returns raw (n,), nodes (n,), errors (n,), gradient rows used, positions left above tol.
    """
    n = problem.encoding.n
    adaptive = steps == "auto"
    raw, nodes, errors = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n)
    index = {p: j for j, p in enumerate(problem.moving)}
    lowest = 2 if method == "riemann_trapezoid" else 1
    start_nodes = max(lowest, min(min_steps, max_steps)) if adaptive else int(steps)
    plan = {p: start_nodes for p in problem.moving}  # position -> nodes to use next
    history: dict[int, tuple[int, float]] = {}  # position -> (nodes, error) of its last level
    rows = 0
    unconverged: list[int] = []
    with _progress_bar(len(plan) * start_nodes, progress, "SIG") as bar:
        while plan:
            groups: dict[int, list[int]] = {}
            for p, m in plan.items():
                groups.setdefault(m, []).append(p)
            extra = sum(m * len(ps) for m, ps in groups.items()) - (bar.total - bar.n)
            if extra > 0:
                bar.total += extra
                bar.refresh()
            plan = {}
            for m, positions in sorted(groups.items()):
                values = _sig_integrals(ex, problem, positions, m, method, size, reuse, bar)
                rows += len(positions) * m
                err = np.abs(values - expected[[index[p] for p in positions]]) / scale
                raw[positions], nodes[positions], errors[positions] = values, m, err
                if not adaptive:
                    continue
                for p, e in zip(positions, err):
                    if e < tol:
                        continue
                    if m >= max_steps:
                        unconverged.append(p)
                    else:
                        plan[p] = next_node_count(m, float(e), tol, max_steps, history.get(p))
                        history[p] = (m, float(e))
    return raw, nodes, errors, rows, unconverged


def _sig_endpoints(ex: ModelSession, problem: _Problem, size: int) -> np.ndarray:
    """F(x with token i at the baseline) for every moving position i -> (P,)."""
    moving = problem.moving
    out = np.zeros(len(moving))

    def work(start: int, stop: int) -> None:
        embeds = problem.x.expand(stop - start, -1, -1).clone()
        rows = torch.arange(stop - start, device=ex.device)
        cols = torch.tensor(moving[start:stop], device=ex.device)
        embeds[rows, cols] = problem.x_base[0, cols]
        out[start:stop] = _forward_scores(ex, problem, embeds).double().cpu().numpy()

    run_chunked(len(moving), size, work)
    return out


def _sig_integrals(
    ex: ModelSession, problem: _Problem, positions: Sequence[int], steps: int, method: str, size: int, reuse: bool, bar=None,
) -> np.ndarray:
    """raw_i for each position with ``steps`` nodes, all (position, node) rows batched -> (len(positions),)."""
    alphas, weights = quadrature(steps, method)
    device = ex.device
    pos_rows = torch.tensor(np.repeat(positions, steps), device=device)  # sorted by position
    alpha_rows = torch.tensor(np.tile(alphas, len(positions)), dtype=torch.float32, device=device)
    weight_rows = torch.tensor(np.tile(weights, len(positions)), dtype=torch.float64, device=device)
    delta = (problem.x - problem.x_base)[0]  # (n, d)
    contributions = torch.zeros(len(pos_rows), dtype=torch.float64, device=device)
    prefixes: dict[int, Any] = {}

    def work(start: int, stop: int) -> None:
        pos = pos_rows[start:stop]
        rows = torch.arange(stop - start, device=device)
        first = int(pos.min()) if reuse else 0
        embeds = problem.x[:, first:].expand(stop - start, -1, -1).clone()
        embeds[rows, pos - first] = problem.x_base[0, pos] + alpha_rows[start:stop, None] * delta[pos]
        prefix = None
        if first > 0:
            if first not in prefixes:
                prefixes.clear()  # chunks advance through positions: keep one prefix alive
                prefixes[first] = _prefix_cache(ex, problem, first)
            prefix = prefixes[first]
        _, grads = _scores_and_grads(ex, problem, embeds, prefix)
        along = (grads[rows, pos - first].double() * delta[pos].double()).sum(-1)
        contributions[start:stop] = weight_rows[start:stop] * along

    run_chunked(len(pos_rows), size, work, bar=bar)
    return contributions.reshape(len(positions), steps).sum(1).cpu().numpy()


# ---------------------------------------------------------------------------- grad x input
def grad_x_input(ex: ModelSession, text: str, target: Any = None, *, truncate: bool = False) -> Attribution:
    """Gradient x input on the word embeddings: raw_j = sum_d x_jd dF/dx_jd (special tokens 0)."""
    with ex.restored():
        problem = _prepare(ex, text, target, "zero", truncate)
        _, grads = _scores_and_grads(ex, problem, problem.x)
        raw = (grads[0].double() * problem.x[0].double()).sum(-1).cpu().numpy()
    raw[[i for i, s in enumerate(problem.encoding.special_mask) if s]] = 0.0
    return _attribution(ex, problem, "grad_x_input", raw, raw, {"f_x": problem.f_x})


# ---------------------------------------------------------------------------- dispatch
class Cancelled(RuntimeError):
    """A streaming computation was stopped by its callback (see ``sequential_integrated_gradients``)."""


def _attribution(ex: ModelSession, problem: _Problem, method: str, scores, raw, options: dict) -> Attribution:
    return Attribution(
        tokens=list(problem.encoding.tokens),
        scores=np.asarray(scores, dtype=np.float64),
        raw=np.asarray(raw, dtype=np.float64),
        target=problem.target.public,
        target_label=problem.target.label,
        method=method,
        options=options,
        prediction=problem.prediction,
        text=problem.encoding.text,
        model=ex.name,
    )


_FUNCTIONS = {"ig": integrated_gradients, "sig": sequential_integrated_gradients, "grad_x_input": grad_x_input}


@implements("ig", "sig", "grad_x_input")
def attribute(ex: ModelSession, text: str, *, method: str, target: Any = None, **options: Any) -> Attribution:
    """What ``Explainer.attribute(text, method="ig"|"sig"|"grad_x_input", ...)`` calls.

    ``method`` names the attribution method, so the quadrature is passed as ``quadrature=``
    ("gausslegendre" or "riemann_trapezoid"); the other options go to the function unchanged.
    """
    if method not in _FUNCTIONS:
        raise InputError(f"xattr_lab.gradients has no method {method!r}; choose one of {list(_FUNCTIONS)}")
    if "quadrature" in options:
        if method == "grad_x_input":
            raise InputError("grad_x_input takes no quadrature")
        options["method"] = options.pop("quadrature")
    return _FUNCTIONS[method](ex, text, target=target, **options)
