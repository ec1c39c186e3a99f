"""Quadrature on [0, 1] and the completeness check of IG and SIG: pure numpy, no model, no torch.

docs/ARCHITECTURE.md, section "Gradients". What the gradient methods of every input kind share
(text, encoder-decoder, image): the rules (nodes and weights), the step and tolerance checks,
composite quadrature over panels (adaptive for ``steps="auto"``; the nested Newton-Cotes panels
are in :mod:`.panels`), and the convergence entries every result carries. The integrand comes
from the caller as two functions of (paths, alphas) arrays, so nothing here knows what a model is.

Convergence (``Attribution.options``):

- ``relative_completeness_error`` = |sum of raw - (F(x) - F(x'))| / max(|F(x) - F(x')|, floor)
  for IG; for SIG the same per token, |raw_i - (F(x) - F(x_i -> x'_i))| / max(|...|, floor), kept
  per token in ``relative_completeness_error_per_token`` and reported as its maximum.
- Guard for an output change of ~0: ``floor`` = ``CHANGE_FLOOR`` (1 %) of max(1, |F(x)|, |F(x')|),
  recorded as ``completeness_floor``. A change smaller than that counts as ~0 and the error is
  measured against the floor instead (so zero change with zero scores reads 0, not 0/0).
- ``converged`` = ``relative_completeness_error <= convergence_tol`` (default ``CONVERGENCE_TOL``,
  5 %). When False a ``RuntimeWarning`` names the error and the fix; the views draw a badge.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .pacing import Pace, timed_round

QUADRATURES = ("gausslegendre", "riemann_trapezoid")
#: default tolerance on the relative completeness error (``converged``, and what ``steps="auto"`` aims at)
CONVERGENCE_TOL = 0.05
#: nodes per panel of IG's steps="auto" (``min_steps``): on smollm2's jagged paths small panels
#: halved where needed cost fewer gradient rows than 8-node ones (docs/guides/gradients.md)
IG_PANEL_NODES = 4
#: an output change below this fraction of max(1, |F(x)|, |F(x')|) counts as ~0 (the guard)
CHANGE_FLOOR = 0.01
#: panels narrower than this are not split again (float32 interpolation cannot resolve them)
MIN_PANEL_WIDTH = 2.0 ** -20


# ---------------------------------------------------------------------------- pure helpers
def quadrature(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1] -> (alphas (steps,), weights (steps,)), float64.

    "gausslegendre": Gauss-Legendre nodes mapped from [-1, 1] (exact for polynomials of degree
    2*steps-1; weights sum to 1). "riemann_trapezoid": ``steps`` >= 2 equally spaced nodes
    including both ends, trapezoid weights (sum to 1).
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise InputError(f"steps must be a positive integer or 'auto' ('exact' for SIG), not {steps!r}")
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


def normalise(raw: np.ndarray) -> np.ndarray:
    """raw / ||raw||_2 (all zeros stay zeros)."""
    norm = float(np.linalg.norm(raw))
    return raw / norm if norm > 0 else raw.copy()


def check_steps(steps: Any, method: str, allowed: tuple[str, ...], min_steps: int, max_steps: int) -> None:
    """InputError unless ``steps`` is an int >= 1 or one of ``allowed`` with a valid quadrature and node range."""
    if not isinstance(steps, str):
        quadrature(steps, method)  # validates steps and method
        return
    if steps not in allowed:
        extra = " (steps='exact' is SIG's limit; IG has none)" if steps == "exact" else ""
        raise InputError(f"steps must be a positive integer or one of {list(allowed)}, not {steps!r}{extra}")
    if method not in QUADRATURES:
        raise InputError(f"unknown quadrature {method!r}; choose one of {list(QUADRATURES)}")
    if steps == "auto":
        quadrature(min_steps, method)
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < min_steps:
            raise InputError(f"max_steps must be an integer >= min_steps ({min_steps}), not {max_steps!r}")


# ---------------------------------------------------------------------------- convergence
def check_tol(value: Any, name: str = "convergence_tol") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
        raise InputError(f"{name} must be a positive number (a fraction: 0.05 = 5 %), not {value!r}")
    return float(value)


def change_floor(f_x: float, f_baseline: float) -> float:
    """The guard: output changes below this count as ~0 (see the module docstring)."""
    return CHANGE_FLOOR * max(1.0, abs(float(f_x)), abs(float(f_baseline)))


def relative_errors(approx, change, floor: float) -> np.ndarray:
    """|approx - change| / max(|change|, floor), elementwise."""
    approx, change = np.asarray(approx, dtype=np.float64), np.asarray(change, dtype=np.float64)
    return np.abs(approx - change) / np.maximum(np.abs(change), floor)


def percent(error: float) -> str:
    """A relative error for people: '54%', '0.31%', '3,930%'."""
    if not np.isfinite(error):
        return "n/a"
    return f"{100 * error:,.0f}%" if error >= 0.01 else f"{100 * error:.2g}%"


def convergence_options(errors: np.ndarray, tol: float, floor: float, per_token: bool) -> dict:
    """The convergence entries of ``Attribution.options`` (module docstring)."""
    worst = float(np.max(errors)) if len(errors) else 0.0
    options = {"relative_completeness_error": worst, "converged": bool(worst <= tol),
               "convergence_tol": tol, "completeness_floor": floor}
    if per_token:
        options["relative_completeness_error_per_token"] = np.asarray(errors, dtype=np.float64).tolist()
    return options


def warn_not_converged(what: str, error: float, tol: float, detail: str, fix: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{what} has not converged: relative completeness error {percent(error)} {detail} is above "
        f"convergence_tol={percent(tol)}. {fix}", RuntimeWarning, stacklevel=stacklevel,
    )


# ---------------------------------------------------------------------------- panels
@dataclass
class Panels:
    """Composite quadrature of several paths: ``integral`` (P, k), active ``nodes`` (P,),
    gradient ``rows`` run, ``limited`` = paths left above tolerance by the node cap or panel width,
    ``stopped`` = "max_seconds" when the time cap ended the refinement (else None)."""

    integral: np.ndarray
    nodes: np.ndarray
    rows: int
    limited: list[int]
    stopped: str | None = None


def integrate_panels(
    f_start: np.ndarray, f_end: np.ndarray, nodes: int, method: str,
    gradients: Callable[[np.ndarray, np.ndarray], np.ndarray],
    values: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *, tol_abs: np.ndarray | None = None, max_nodes: int = 0, bar=None, pace: Pace | None = None,
) -> Panels:
    """Integrate each path p's integrand over alpha in [0, 1] with ``nodes``-point panels.

    gradients(paths (R,), alphas (R,)) -> (R, k): the integrand <dF/dx, x - x'> at those points,
    split into k parts (per token for IG, k = 1 for SIG). values(paths, alphas) -> (R,): F there.
    f_start / f_end: F at alpha = 0 and 1 of each path (P,).

    Without ``tol_abs``: one panel, i.e. plain ``quadrature(nodes, method)``. With it: every
    panel [a, b] has a completeness check of its own, e = |integral over [a, b] - (F(b) - F(a))|
    (the fundamental theorem of calculus on that piece). While a path's summed e exceeds its
    ``tol_abs``, its worst panels are halved (F at the midpoint from a forward pass), worst first
    until the e of the panels left alone sums to at most tol_abs / 2, as long as the path keeps at
    most ``max_nodes`` nodes and panels stay wider than ``MIN_PANEL_WIDTH``. The summed e bounds
    the reported error. ``pace`` (:class:`~.pacing.Pace`): rows are counted for the estimate and the
    bar; a round that would end past its ``max_seconds`` is not run or is dropped, keeping the
    panels it would have split (``stopped``). ``bar``: a plain progress bar (older callers).
    """
    t, w = quadrature(nodes, method)
    done: list[list[list]] = [[] for _ in range(len(f_start))]  # per path: [a, b, fa, fb, integral, error]
    todo = [(p, 0.0, 1.0, float(f_start[p]), float(f_end[p])) for p in range(len(f_start))]
    rows, limited, parents, stopped = 0, set(), [], None
    while todo:
        paths = np.repeat([p for p, *_ in todo], nodes)
        starts = np.repeat([a for _, a, *_ in todo], nodes)
        widths = np.repeat([b - a for _, a, b, *_ in todo], nodes)
        alphas, weights = starts + widths * np.tile(t, len(todo)), widths * np.tile(w, len(todo))
        if bar is not None and bar.n + len(alphas) > bar.total:
            bar.total = bar.n + len(alphas)
            bar.refresh()
        ran, g = timed_round(pace, len(alphas), bool(parents), lambda: gradients(paths, alphas))
        if not ran:
            stopped = "max_seconds"
            break
        g = np.asarray(g, dtype=np.float64).reshape(len(alphas), -1)
        rows += len(alphas)
        for p, panel in parents:  # the halves are done: the panels they replace go
            done[p] = [q for q in done[p] if q is not panel]
        parents = []
        pieces = (weights[:, None] * g).reshape(len(todo), nodes, -1).sum(1)
        for (p, a, b, fa, fb), piece in zip(todo, pieces):
            done[p].append([a, b, fa, fb, piece, abs(float(piece.sum()) - (fb - fa))])
        todo = []
        if tol_abs is None:
            break
        splits = []
        for p, panels in enumerate(done):
            if sum(q[5] for q in panels) <= tol_abs[p]:
                continue
            active, chosen, left = len(panels) * nodes, [], sum(q[5] for q in panels)
            for j in sorted(range(len(panels)), key=lambda j: -panels[j][5]):
                if left <= tol_abs[p] / 2:
                    break
                if (panels[j][1] - panels[j][0]) / 2 >= MIN_PANEL_WIDTH and active + nodes <= max_nodes:
                    chosen.append(j)
                    active += nodes
                    left -= panels[j][5]
            if not chosen:
                limited.add(p)
            splits += [(p, j) for j in chosen]
        if not splits:
            break
        mids = np.array([(done[p][j][0] + done[p][j][1]) / 2 for p, j in splits])
        f_mid = np.asarray(values(np.array([p for p, _ in splits]), mids), dtype=np.float64)
        for (p, j), m, fm in zip(splits, mids, f_mid):
            a, b, fa, fb = done[p][j][:4]
            todo += [(p, a, float(m), fa, float(fm)), (p, float(m), b, float(fm), fb)]
        parents = [(p, done[p][j]) for p, j in splits]
    if stopped is not None:
        limited |= {p for p, panels in enumerate(done) if tol_abs is not None and sum(q[5] for q in panels) > tol_abs[p]}
    integral = np.stack([np.sum([q[4] for q in panels], axis=0) for panels in done])
    return Panels(integral, np.array([len(panels) * nodes for panels in done]), rows, sorted(limited), stopped)
