"""One Integrated Gradients and one Sequential IG for every input kind, over a per-kind path problem.

docs/ARCHITECTURE.md, section "Gradients". Each input kind's adapter (text: :mod:`.gradients`, image:
:mod:`.vision`, encoder-decoder: :mod:`.seq2seq_gradients`) prepares one input as a :class:`PathProblem`
(the input x and baseline x', the units scores go to, F and dF/dx at any batch of points, how the
integrand sums to units, the one-unit paths of SIG, a result builder) and names its differences in a
:class:`Style` (option keys, warning texts, SIG's completeness floor); the drivers below are the only
IG and SIG bodies. Each runs in two calls: ``*_run`` (the model passes; inside the caller's
``ex.restored()``) and ``*_result`` (options, the convergence warning, the result; after it).

Shapes: n units, B rows, x (1, *s) (text and encoder-decoder (1, n, d), image pixels (1, 3, S, S),
image SIG patch embeddings (1, P, d)), P moving units.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.batching import run_chunked
from ..errors import Cancelled
from .path_integrals import PathIntegral, integrate_path, integrate_tokens
from .quadrature import Panels, change_floor, convergence_options, normalise, relative_errors, warn_not_converged

#: points (B, *s) -> (F (B,), dF/dpoints (B, *s))
Grad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: unit indices (R,), alphas (R,) -> (R,): F, or the one-unit integrand <dF/dx_p, x_p - x'_p>
UnitRows = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _sum_last(products: torch.Tensor) -> torch.Tensor:
    """(B, n, d) -> (B, n): the integrand of a unit is the sum over its embedding's width."""
    return products.sum(-1)


@dataclass
class PathProblem:
    """One input prepared for IG or SIG by its kind's adapter (module docstring for shapes).

    IG needs x, x_base, grad, value and per_unit; SIG needs moving, unit_values and unit_rows.
    f_baseline: F(x'), or None where the kind's SIG does not run it. size: rows per chunk (IG: the
    first; out of memory halves it). pace: the text's progress bar and time cap, or None.
    prefix_reuse: whether SIG's rows reuse a cached key/value prefix (recorded in the options).
    result(method, scores (n,), raw (n,), options) -> Attribution.
    """

    units: Sequence[str]
    f_x: float
    f_baseline: float | None
    result: Callable[[str, np.ndarray, np.ndarray, dict], Any]
    size: int
    baseline: str | None = None
    baseline_token: str | None = None
    baseline_note: str | None = None
    x: torch.Tensor | None = None
    x_base: torch.Tensor | None = None
    grad: Grad | None = None
    value: Callable[[torch.Tensor], torch.Tensor] | None = None
    per_unit: Callable[[torch.Tensor], torch.Tensor] = _sum_last
    moving: Sequence[int] = ()
    unit_values: UnitRows | None = None
    unit_rows: UnitRows | None = None
    pace: Any = None
    prefix_reuse: bool = False

    @property
    def n(self) -> int:
        return len(self.units)


def _fix_ig(run: "Run") -> str:
    return "Use steps='auto' or more steps."


def _fix_sig(run: "Run") -> str:
    return "Use steps='exact' or steps='auto'."


def _floor_from_without(f_x: float, f_baseline: float | None, f_without: np.ndarray) -> float:
    """SIG's floor from the largest |F(x with a unit at its baseline)| (F(x') is not run)."""
    return change_floor(f_x, float(np.max(np.abs(f_without))) if len(f_without) else f_x)


@dataclass(frozen=True)
class Style:
    """What one input kind writes and says, where the kinds differ.

    ig_keys / sig_keys: the option keys of the result, in order (the convergence entries follow);
    ig_change: how the warning names F(x) - F(x'); sig_detail(run) / ig_fix(run) / sig_fix(run): the
    warning's detail and advice; stacklevel: of the warning, counted from ``*_result`` (its caller's
    caller is 3); sig_floor(f_x, f_baseline, f_without): SIG's completeness floor; sig_errors_all:
    the per-token errors cover every unit (non-moving ones 0) rather than the moving ones only.
    """

    ig_keys: tuple[str, ...]
    sig_keys: tuple[str, ...]
    ig_change: str = "F(x) - F(x')"
    sig_detail: Callable[["Run"], str] = lambda run: "on its worst token"
    ig_fix: Callable[["Run"], str] = _fix_ig
    sig_fix: Callable[["Run"], str] = _fix_sig
    stacklevel: int = 4
    sig_floor: Callable[[float, float | None, np.ndarray], float] = _floor_from_without
    sig_errors_all: bool = False


@dataclass
class Run:
    """What a driver's model passes gave: raw (n,) scores, the rule's panels, the errors, and every
    option any kind records (``options``; a kind keeps its :class:`Style` keys)."""

    raw: np.ndarray
    errors: np.ndarray
    floor: float
    tol: float
    steps: Any
    max_steps: int
    options: dict = field(default_factory=dict)
    panels: Panels | None = None
    path: PathIntegral | None = None
    rel: np.ndarray | None = None
    f_without: np.ndarray | None = None
    max_seconds: float | None = None
    units: Sequence[str] = ()


def _pace_options(problem: PathProblem) -> dict:
    pace = problem.pace
    return {"max_seconds": None if pace is None else pace.max_seconds,
            "seconds": None if pace is None else pace.elapsed()}


# ---------------------------------------------------------------------------- IG
def ig_run(problem: PathProblem, *, steps: Any, method: str, tol: float, min_steps: int, max_steps: int,
           guard: float | None = None) -> Run:
    """IG along x' -> x: F and dF/dx at the rule's nodes, integrated by :func:`.path_integrals.integrate_path`."""
    x, x_base = problem.x, problem.x_base
    delta = x - x_base
    used = [problem.size]

    def path(alphas: np.ndarray) -> torch.Tensor:
        a = torch.tensor(alphas, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
        return x_base + a * delta

    def rows(paths: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, scores = np.zeros((len(alphas), problem.n)), np.zeros(len(alphas))

        def work(start: int, stop: int) -> None:
            f, grads = problem.grad(path(alphas[start:stop]))
            out[start:stop] = problem.per_unit(grads.double() * delta.double()).cpu().numpy()
            scores[start:stop] = f.double().cpu().numpy()

        used[0] = run_chunked(len(alphas), used[0], work, bar=problem.pace)
        return out, scores

    def values(paths: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        out = np.zeros(len(alphas))

        def work(start: int, stop: int) -> None:
            out[start:stop] = problem.value(path(alphas[start:stop])).double().cpu().numpy()

        run_chunked(len(alphas), used[0], work)
        return out

    integral = integrate_path(problem.f_baseline, problem.f_x, lambda p, a: rows(p, a)[0], values, steps=steps,
                              method=method, tol=tol, min_steps=min_steps, max_steps=max_steps, rows=rows,
                              guard=guard, pace=problem.pace)
    panels, raw, expected = integral.panels, integral.raw, integral.expected
    adaptive = steps == "auto"
    options = {
        "steps": "auto" if adaptive else int(steps), "quadrature": method, "baseline": problem.baseline,
        "baseline_token": problem.baseline_token, "baseline_note": problem.baseline_note, "f_x": problem.f_x,
        "f_baseline": problem.f_baseline,
        "completeness_error": abs(float(raw.sum()) - expected) / max(abs(expected), 1e-12),
        "batch_size": used[0], "nodes": int(panels.nodes[0]), "gradient_rows": panels.rows,
        "max_steps": max_steps if adaptive else None, "stopped": panels.stopped, **_pace_options(problem),
    }
    if method == "nested":  # the guard and the unsigned sum of the panels' errors (relative, as the error is)
        options["cancellation_guard"] = guard
        options["panel_error_sum"] = float(panels.error_sum[0]) / max(abs(expected), integral.floor)
    return Run(raw, integral.errors, integral.floor, tol, steps, max_steps, options, panels, integral,
               max_seconds=options["max_seconds"])


def ig_result(problem: PathProblem, run: Run, style: Style):
    """IG's result: ``style.ig_keys`` options + convergence entries; not converged -> RuntimeWarning."""
    options = {key: run.options[key] for key in style.ig_keys}
    options.update(convergence_options(run.errors, run.tol, run.floor, per_token=False))
    for key in ("cancellation_guard", "panel_error_sum"):
        if key in run.options:
            options[key] = run.options[key]
    if not options["converged"]:
        detail = f"(scores sum to {run.raw.sum():.4g}, {style.ig_change} = {run.path.expected:.4g})"
        warn_not_converged(f"IG ({run.options['steps']} steps)", options["relative_completeness_error"], run.tol,
                           detail, style.ig_fix(run), stacklevel=style.stacklevel)
    return problem.result("ig", run.raw, run.raw, options)


# ---------------------------------------------------------------------------- SIG
def sig_run(problem: PathProblem, style: Style, *, steps: Any, method: str, tol: float, min_steps: int,
            max_steps: int, callback: Callable[[Any], Any] | None = None, stream_every: int = 4) -> Run:
    """SIG: each moving unit alone along its own path, the others at x (module docstring of :mod:`.gradients`).

    steps "exact" = the limit F(x) - F(x with the unit at x'); callback: streaming, as in
    :func:`.gradients.sequential_integrated_gradients`.
    """
    adaptive, exact = steps == "auto", steps == "exact"
    n, f_x, moving = problem.n, problem.f_x, list(problem.moving)
    f_without = problem.unit_values(np.array(moving), np.zeros(len(moving)))
    expected = f_x - f_without  # (P,)
    floor = style.sig_floor(f_x, problem.f_baseline, f_without)
    raw, nodes, rel = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n)
    rows, stopped = 0, None
    group_size = len(moving) if callback is None else max(1, int(stream_every))
    for start in range(0, len(moving), group_size):
        group, change = moving[start:start + group_size], expected[start:start + group_size]
        if exact:
            raw[group] = change
        else:
            positions = np.array(group)
            panels = integrate_tokens(
                f_without[start:start + group_size], np.full(len(group), f_x),
                lambda paths, alphas: problem.unit_rows(positions[paths], alphas)[:, None],
                lambda paths, alphas: problem.unit_values(positions[paths], alphas), steps=steps, method=method,
                tol_abs=tol * np.maximum(np.abs(change), floor) if adaptive else None, min_steps=min_steps,
                max_steps=max_steps, pace=problem.pace)
            raw[group], nodes[group] = panels.integral[:, 0], panels.nodes
            rows += panels.rows
            stopped = stopped or panels.stopped
        rel[group] = relative_errors(raw[group], change, floor)
        if callback is not None:
            done = moving[:start + len(group)]
            partial = problem.result("sig", normalise(raw), raw.copy(), {
                "steps": steps, "partial": True, "positions_done": done, "positions_total": len(moving),
                **convergence_options(rel[done], tol, floor, per_token=False)})
            if callback(partial) is False:
                raise Cancelled(f"SIG cancelled after {len(done)} of {len(moving)} tokens")
    f_without_full = np.full(n, f_x)
    f_without_full[moving] = f_without
    f_base = problem.f_baseline
    scale = max(abs(f_x - f_base) if f_base is not None else 0.0, float(np.abs(expected).max()), 1e-12)
    completeness = np.zeros(n)
    completeness[moving] = np.abs(raw[moving] - expected) / scale
    options = {
        "steps": steps if (adaptive or exact) else int(steps), "quadrature": None if exact else method,
        "baseline": problem.baseline, "baseline_token": problem.baseline_token,
        "baseline_note": problem.baseline_note, "tol": tol if adaptive else None, "nodes": nodes.tolist(),
        "completeness_error": completeness.tolist(), "f_x": f_x, "f_baseline": f_base,
        "f_without": f_without_full.tolist(), "gradient_rows": rows, "prefix_reuse": problem.prefix_reuse,
        "batch_size": problem.size, "max_steps": max_steps if adaptive else None, "stopped": stopped,
        **_pace_options(problem),
    }
    errors = rel if style.sig_errors_all else rel[moving]
    return Run(raw, errors, floor, tol, steps, max_steps, options, rel=rel, f_without=f_without_full,
               max_seconds=options["max_seconds"], units=problem.units)


def sig_result(problem: PathProblem, run: Run, style: Style):
    """SIG's result (scores = raw / ||raw||_2): ``style.sig_keys`` options + per-token convergence entries."""
    options = {key: run.options[key] for key in style.sig_keys}
    options.update(convergence_options(run.errors, run.tol, run.floor, per_token=True))
    if not options["converged"]:
        warn_not_converged(f"SIG ({run.options['steps']} steps)", options["relative_completeness_error"], run.tol,
                           style.sig_detail(run), style.sig_fix(run), stacklevel=style.stacklevel)
    return problem.result("sig", normalise(run.raw), run.raw, options)


def gradient_times_input(grad: Grad, x: torch.Tensor, per_unit: Callable[[torch.Tensor], torch.Tensor] = _sum_last
                         ) -> np.ndarray:
    """Gradient × input, every kind's one body: raw_u = Σ x·dF/dx over unit u (float64), for
    ``grad`` and ``per_unit`` as in :class:`PathProblem` and x (1, *s). Returns (n,)."""
    _, grads = grad(x)
    return per_unit(grads.double() * x.double())[0].cpu().numpy()

