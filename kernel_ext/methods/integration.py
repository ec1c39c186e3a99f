"""What IG and SIG share, under the name earlier code imports: the pure-numpy quadrature
(:mod:`.quadrature`: rules, panels, the convergence check) and the torch embedding path
(:mod:`.embedding_path`: one text prepared for attribution, F and dF/dx along a path), with the
baseline tokens (:mod:`.baselines`). This module holds only imports; new code imports the halves.

docs/ARCHITECTURE.md, section "Gradients".
"""
from __future__ import annotations

from .baselines import BASELINES, baseline_token
from .embedding_path import (Problem, cache_keyword, forward_scores, prefix_cache, prepare, reads_last_token,
                             scores_and_grads, target_scores)
from .quadrature import (CHANGE_FLOOR, CONVERGENCE_TOL, IG_PANEL_NODES, MIN_PANEL_WIDTH, QUADRATURES, Panels,
                         change_floor, check_steps, check_tol, convergence_options, integrate_panels, normalise, percent,
                         quadrature, relative_errors, warn_not_converged)

__all__ = [
    "BASELINES", "baseline_token", "Problem", "cache_keyword", "forward_scores", "prefix_cache", "prepare",
    "reads_last_token", "scores_and_grads", "target_scores", "CHANGE_FLOOR", "CONVERGENCE_TOL", "IG_PANEL_NODES",
    "MIN_PANEL_WIDTH", "QUADRATURES", "Panels", "change_floor", "check_steps", "check_tol", "convergence_options",
    "integrate_panels", "normalise", "percent", "quadrature", "relative_errors", "warn_not_converged",
]
