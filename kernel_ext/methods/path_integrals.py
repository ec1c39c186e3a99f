"""IG's integral along one straight path x' -> x, the same for every input kind (pure numpy).

docs/ARCHITECTURE.md, section "Gradients". The input adapter of each kind (text embeddings,
encoder-decoder embeddings, image pixels) supplies the integrand at points of the path; this
module picks the rule (one fixed rule, adaptive panels, nested Newton-Cotes panels), runs it and
measures completeness, so IG's steps, tolerance and convergence mean the same for every input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .pacing import Pace
from .panels import integrate_nested
from .quadrature import Panels, change_floor, integrate_panels, relative_errors

#: rows(paths (R,), alphas (R,)) -> (integrand (R, k), F (R,)); gradients -> the integrand only
Rows = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Gradients = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PathIntegral:
    """IG along one path: ``raw`` (k,) per token, the rule's ``panels``, F at both ends, and the check.

    expected = f_x - f_baseline; ``floor`` the guard of :func:`.quadrature.change_floor`;
    ``errors`` (1,) the relative completeness error of sum(raw) against ``expected``.
    """

    raw: np.ndarray
    panels: Panels
    f_x: float
    f_baseline: float
    expected: float
    floor: float
    errors: np.ndarray


def integrate_path(f_baseline: float, f_x: float, gradients: Gradients, values: Gradients, *, steps, method: str,
                   tol: float, min_steps: int, max_steps: int, rows: Rows | None = None,
                   guard: float | None = None, pace: Pace | None = None) -> PathIntegral:
    """Integrate the path's integrand over alpha in [0, 1] -> :class:`PathIntegral`.

    steps: "auto" (panels of ``min_steps`` nodes refined until the relative completeness error is
    under ``tol`` or ``max_steps`` nodes are used) or an int (one panel, that many nodes).
    method: a rule of :data:`.quadrature.QUADRATURES`, or "nested" (:mod:`.panels`, needs ``rows``,
    which gives the integrand and F from one gradient row; ``guard`` its cancellation guard).
    gradients / values: as in :func:`.quadrature.integrate_panels`. pace: time cap and progress bar.
    """
    adaptive = steps == "auto"
    expected, floor = f_x - f_baseline, change_floor(f_x, f_baseline)
    nodes = min_steps if adaptive else int(steps)
    tol_abs = np.array([tol * max(abs(expected), floor)]) if adaptive else None
    start, end = np.array([f_baseline]), np.array([f_x])
    if method == "nested":
        panels = integrate_nested(start, end, rows, tol_abs=tol_abs, nodes=nodes, max_nodes=max_steps, guard=guard,
                                  pace=pace)
    else:
        panels = integrate_panels(start, end, nodes, method, gradients, values, tol_abs=tol_abs, max_nodes=max_steps,
                                  pace=pace)
    raw = panels.integral[0]
    errors = relative_errors([float(raw.sum())], [expected], floor)
    return PathIntegral(raw, panels, f_x, f_baseline, expected, floor, errors)


def integrate_tokens(f_start: np.ndarray, f_end: np.ndarray, gradients: Gradients, values: Gradients, *, steps,
                     method: str, tol_abs: np.ndarray | None, min_steps: int, max_steps: int,
                     pace: Pace | None = None) -> Panels:
    """SIG's one-token paths, path p moving token p alone: ``Panels`` with integral (P, 1).

    f_start / f_end (P,): F with the token at its baseline and at its own value. steps "auto"
    (``tol_abs`` (P,) given: panels of ``min_steps`` nodes refined per token) or an int (one panel).
    gradients(paths (R,), alphas (R,)) -> (R, 1) and values(...) -> (R,), as in integrate_panels.
    """
    nodes = min_steps if steps == "auto" else int(steps)
    return integrate_panels(f_start, f_end, nodes, method, gradients, values, tol_abs=tol_abs, max_nodes=max_steps,
                            pace=pace)
