"""Gradient attributions on word embeddings: Integrated Gradients, Sequential IG, gradient x input.

docs/ARCHITECTURE.md, section "Gradients". Everything here differentiates the pre-softmax target (``Target.score``: a class
logit, a next-token logit or a logit difference) with respect to the *word* embeddings
(``Explainer.embed``); position and token-type embeddings are added inside the model and stay fixed.

Notation: x (n, d) word embeddings of the text, x' (n, d) the baseline, F the target score.

- Baselines: "pad", "mask" or "zero". Special tokens ([CLS], [SEP], BOS, EOS) keep their own
  embeddings in every baseline, so they never move and score 0. Tokenizers without a [MASK] token
  (GPT-2, Llama/SmolLM) use the unknown token's embedding for "mask", then EOS; tokenizers without
  a [PAD] token use EOS, then the unknown token. A (near) zero row on a model that normalises the
  embeddings first is degenerate: the next token is used, or an error (:mod:`.baselines`).
  ``options["baseline_token"]`` names the token used (None for "zero"), ``["baseline_note"]`` why.
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

``steps`` (defaults pass the paper's own check, completeness within ``convergence_tol``): ``"auto"``
(IG's default; SIG too) starts from one panel of ``min_steps`` nodes and halves panels whose own
completeness check fails (:func:`.quadrature.integrate_panels`) until the relative completeness
error is under ``convergence_tol`` or ``max_steps`` nodes (per path) are used; ``"exact"`` (SIG's
default) is SIG's limit, F(x) - F(x_i -> x'_i), from forward passes; an int is the paper's fixed
rule with that many nodes. ``max_seconds`` caps the time, ``progress`` the bar (:mod:`.pacing`).

Every IG and SIG result says whether it converged (``options["relative_completeness_error"]``,
``["converged"]``, ``["convergence_tol"]``; see :mod:`.quadrature`) and warns when it did not.
``options["completeness_error"]`` keeps its older meaning: IG's unguarded relative error; SIG's
per-token error over scale = max(|F(x) - F(x')|, max_i |F(x) - F(x_i -> x'_i)|).

Speed: (position, node) rows are batched in memory-bounded chunks; for causal models the key/value
cache of the prefix before SIG's moving token is computed once per chunk and reused.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..core.batching import auto_batch_size, available_memory, is_out_of_memory, resolve_batch_size, run_chunked  # noqa: F401
from ..core.session import ModelSession
from ..errors import Cancelled, InputError  # noqa: F401  (Cancelled: a public name of xattr_lab.gradients)
from ..results import Attribution
from .baselines import BASELINES, baseline_token  # noqa: F401  (public names of xattr_lab.gradients)
from .embedding_path import Problem, forward_scores, prepare, reads_last_token, scores_and_grads
from .quadrature import (  # noqa: F401  (public names of xattr_lab.gradients)
    CHANGE_FLOOR, CONVERGENCE_TOL, IG_PANEL_NODES, QUADRATURES, Panels, change_floor, check_steps, check_tol,
    convergence_options, integrate_panels, normalise, percent, quadrature, relative_errors, warn_not_converged,
)
from .pacing import PROGRESS_MIN_SECONDS, Pace  # noqa: F401
from .panels import CANCELLATION_GUARD, NESTED_NODES, newton_cotes
from .path_methods import PathProblem, Run, Style, gradient_times_input, ig_result, ig_run, sig_result, sig_run
from .sig_paths import sig_rows, sig_values
from .registry import implements


# ---------------------------------------------------------------------------- IG
def integrated_gradients(
    ex: ModelSession,
    text: str,
    target: Any = None,
    steps: Any = "auto",
    baseline: str = "pad",
    method: str | None = None,
    *,
    batch_size: Any = "auto",
    progress: Any = None,
    truncate: bool = False,
    convergence_tol: float = CONVERGENCE_TOL,
    min_steps: int | None = None,
    max_steps: int = 1024,
    max_seconds: float | None = None,
    cancellation_guard: float | None = CANCELLATION_GUARD,
) -> Attribution:
    """Integrated Gradients on the word embeddings -> Attribution (scores = raw, logit units).

    steps: "auto" (default: panels of ``min_steps`` nodes halved where their completeness check
    fails, until the relative completeness error is under ``convergence_tol`` or ``max_steps``
    nodes are in use), or an int >= 1 (that many nodes, the paper's fixed rule);
    method (the quadrature): None = "gausslegendre" for an int ``steps``, "nested" for "auto"
    (:mod:`.panels`: 5-node Newton-Cotes panels whose nodes are reused when halved, stopping on the
    signed completeness check within ``cancellation_guard``; None there = every panel's own check);
    "gausslegendre" / "riemann_trapezoid" with "auto": panels of that rule (4 nodes), none reused.
    baseline: "pad" | "mask" | "zero".
    progress: None = a bar once the run is estimated to take over 5 s; max_seconds: stop refining
    when the next round would end past it (module docstring of :mod:`.pacing`).
    options record f_x = F(x), f_baseline = F(x'), nodes, gradient_rows, completeness_error, seconds,
    stopped, and the convergence entries (module docstring); not converged -> RuntimeWarning.
    """
    adaptive = steps == "auto"
    method = method or ("nested" if adaptive else "gausslegendre")
    nested = method == "nested"
    if nested and not adaptive:
        raise InputError("quadrature 'nested' is steps='auto''s panel rule; give steps='auto' or another quadrature")
    min_steps = min_steps if min_steps is not None else NESTED_NODES if nested else IG_PANEL_NODES
    check_steps(steps, "gausslegendre" if nested else method, ("auto",), min_steps, max_steps)
    if nested:
        newton_cotes(min_steps)  # validates the panel's nodes
    if cancellation_guard is not None:
        check_tol(cancellation_guard, "cancellation_guard")
    tol = check_tol(convergence_tol)
    pace = Pace("IG", progress, max_seconds)
    with ex.restored(), pace:
        problem = prepare(ex, text, target, baseline, truncate)
        path = _text_problem(ex, problem, resolve_batch_size(ex, problem.encoding.n, batch_size), pace)
        run = ig_run(path, steps=steps, method=method, tol=tol, min_steps=min_steps, max_steps=max_steps,
                     guard=cancellation_guard)
    run.max_seconds = max_seconds  # the warning quotes the argument as given
    return ig_result(path, run, TEXT_STYLE)


# ---------------------------------------------------------------------------- SIG
def sequential_integrated_gradients(
    ex: ModelSession,
    text: str,
    target: Any = None,
    steps: Any = "exact",
    baseline: str = "mask",
    method: str = "gausslegendre",
    batch_size: Any = "auto",
    tol: float | None = None,
    progress: Any = None,
    *,
    convergence_tol: float = CONVERGENCE_TOL,
    min_steps: int = 4,
    max_steps: int = 128,
    prefix_reuse: bool = True,
    positions: Sequence[int] | None = None,
    truncate: bool = False,
    callback: Callable[[Attribution], Any] | None = None,
    stream_every: int = 4,
    max_seconds: float | None = None,
) -> Attribution:
    """Sequential Integrated Gradients -> Attribution (scores = raw / ||raw||_2, raw in logit units).

    steps: "exact" (default) = the limit of the quadrature, which for the token-level score is
    F(x) - F(x with token i at the baseline) by the fundamental theorem of calculus along the
    one-token path (forward passes only, no gradients: converged by construction); an int =
    exactly that many quadrature nodes for every token (the paper's fixed rule, 50 there);
    "auto" = per token, panels of ``min_steps`` nodes halved where their completeness check fails,
    until the token's relative completeness error is under ``convergence_tol`` or it uses
    ``max_steps`` nodes. progress / max_seconds: as in :func:`integrated_gradients`.
    tol: older name of ``convergence_tol`` (when given, it wins).
    batch_size: rows per forward+backward chunk, or "auto" (from free memory).
    prefix_reuse: for causal LMs, reuse the key/value cache of the tokens before the moving one.
    positions: attribute only these (non-special) token positions; the others get 0.
    callback: streaming. Positions are then done ``stream_every`` at a time, and after each group
    ``callback(partial)`` gets an Attribution holding the tokens finished so far (the others 0;
    ``options["positions_done"]`` lists them). If it returns False the run stops and raises
    :class:`Cancelled`. Per-token results are the same as without a callback.
    options: steps, nodes (per token, 0 for special tokens), completeness_error (per token, see
    the module docstring), f_x, f_baseline, f_without (F with token i at the baseline; F(x) for
    tokens not attributed), gradient_rows (forward+backward rows run), and the convergence
    entries (per token, reported as the maximum); not converged -> RuntimeWarning.
    """
    check_steps(steps, method, ("auto", "exact"), min_steps, max_steps)
    tol = check_tol(convergence_tol if tol is None else tol, "convergence_tol" if tol is None else "tol")
    pace = Pace("SIG", progress, max_seconds)
    with ex.restored(), pace:
        problem = prepare(ex, text, target, baseline, truncate)
        n = problem.encoding.n
        if positions is not None:
            chosen = sorted({int(p) % n if -n <= int(p) < n else n for p in positions})
            bad = [p for p in chosen if p >= n or p not in problem.moving]
            if bad or not chosen:
                raise InputError(f"positions must be non-special token positions of this text, i.e. in {problem.moving}")
            problem.moving = chosen
        size = resolve_batch_size(ex, n, batch_size)
        # a sliding-window cache keeps only the window's last keys: a cached prefix longer than that
        # scored the suffix wrong (tiny Mistral, window 8: 25% completeness error), so no reuse then
        window = ex.sliding_window
        reuse = prefix_reuse and reads_last_token(ex, problem) and (window is None or n < window)
        path = _text_problem(ex, problem, size, pace, reuse)
        run = sig_run(path, TEXT_STYLE, steps=steps, method=method, tol=tol, min_steps=min_steps,
                      max_steps=max_steps, callback=callback, stream_every=stream_every)
    run.max_seconds = max_seconds  # the warning quotes the argument as given
    return sig_result(path, run, TEXT_STYLE)


# ---------------------------------------------------------------------------- the text's path problem
def _text_problem(ex: ModelSession, problem: Problem, size: int, pace: Pace, reuse: bool = False) -> PathProblem:
    """The text adapter of :mod:`.path_methods`: word embeddings, F read as the target says (a causal LM's
    last token with a cached prefix where ``reuse``), SIG's rows sorted by position (:mod:`.sig_paths`)."""
    return PathProblem(
        units=list(problem.encoding.tokens), f_x=problem.f_x,
        f_baseline=float(forward_scores(ex, problem, problem.x_base)[0]),
        result=lambda method, scores, raw, options: _attribution(ex, problem, method, scores, raw, options),
        size=size, baseline=problem.baseline, baseline_token=problem.baseline_token,
        baseline_note=problem.baseline_note, x=problem.x, x_base=problem.x_base,
        grad=lambda points: scores_and_grads(ex, problem, points),
        value=lambda points: forward_scores(ex, problem, points), moving=problem.moving,
        unit_values=lambda pos, alphas: sig_values(ex, problem, pos, alphas, size, reuse),
        unit_rows=lambda pos, alphas: sig_rows(ex, problem, pos, alphas, size, reuse, pace),
        pace=pace, prefix_reuse=reuse)


def _ig_fix(run: Run) -> str:
    nodes, rows = run.options["nodes"], run.options["gradient_rows"]
    if run.options["stopped"]:
        return f"stopped by max_seconds={run.max_seconds} after {rows} gradient rows ({nodes} nodes); raise it."
    if run.steps == "auto":
        return f"steps='auto' stopped at {nodes} nodes (max_steps={run.max_steps}); raise max_steps or convergence_tol."
    return f"Use steps='auto' (nodes until the error is under convergence_tol) or more steps than {int(run.steps)}."


def _sig_detail(run: Run) -> str:
    worst = int(np.argmax(run.rel))
    return (f"on token {worst} {run.units[worst]!r} (score {run.raw[worst]:.4g}, its exact limit "
            f"F(x) - F(x with it at the baseline) = {run.options['f_x'] - run.f_without[worst]:.4g})")


def _sig_fix(run: Run) -> str:
    over, limit = int(np.sum(run.rel > run.tol)), "use steps='exact' (the limit, forward passes only)"
    if run.options["stopped"]:
        return (f"{over} token(s) left above it when max_seconds={run.max_seconds} stopped the refinement; raise it, "
                f"or {limit}.")
    if run.steps == "auto":
        return (f"{over} token(s) stopped at max_steps={run.max_steps} nodes; {limit}, or raise max_steps or "
                "convergence_tol.")
    return f"{over} token(s) above it with {int(run.steps)} nodes; {limit}, steps='auto', or more steps."


def _text_floor(f_x: float, f_baseline: float | None, f_without: np.ndarray) -> float:
    """SIG's completeness floor for a text: from F(x) and F(x') (:func:`.quadrature.change_floor`)."""
    return change_floor(f_x, f_baseline)


#: what a text's IG / SIG results record and say (:class:`.path_methods.Style`)
TEXT_STYLE = Style(
    ig_keys=("steps", "quadrature", "baseline", "baseline_token", "baseline_note", "f_x", "f_baseline",
             "completeness_error", "batch_size", "nodes", "gradient_rows", "max_steps", "max_seconds", "stopped",
             "seconds"),
    sig_keys=("steps", "quadrature", "baseline", "baseline_token", "baseline_note", "tol", "nodes",
              "completeness_error", "f_x", "f_baseline", "f_without", "gradient_rows", "prefix_reuse", "batch_size",
              "max_steps", "max_seconds", "stopped", "seconds"),
    ig_change="output change F(x) - F(x')", sig_detail=_sig_detail, ig_fix=_ig_fix, sig_fix=_sig_fix,
    sig_floor=_text_floor, sig_errors_all=True)


# ---------------------------------------------------------------------------- grad x input
def grad_x_input(ex: ModelSession, text: str, target: Any = None, *, truncate: bool = False) -> Attribution:
    """Gradient x input on the word embeddings: raw_j = sum_d x_jd dF/dx_jd (special tokens 0)."""
    with ex.restored():
        problem = prepare(ex, text, target, "zero", truncate, check_baseline=False)  # no path, no baseline
        raw = gradient_times_input(lambda points: scores_and_grads(ex, problem, points), problem.x)
    raw[[i for i, s in enumerate(problem.encoding.special_mask) if s]] = 0.0
    return _attribution(ex, problem, "grad_x_input", raw, raw, {"f_x": problem.f_x})


# ---------------------------------------------------------------------------- dispatch
def _attribution(ex: ModelSession, problem: Problem, method: str, scores, raw, options: dict) -> Attribution:
    return Attribution(tokens=list(problem.encoding.tokens), scores=np.asarray(scores, dtype=np.float64),
                       raw=np.asarray(raw, dtype=np.float64), target=problem.target.public,
                       target_label=problem.target.label, method=method, options=options,
                       prediction=problem.prediction, text=problem.encoding.text, model=ex.name)


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
