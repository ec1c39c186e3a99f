"""``xattr_lab.gradients``: gradient attributions on word embeddings — IG, Sequential IG, gradient × input.

The code lives in :mod:`xattr_lab.methods.gradients` (the methods) and the modules it names
(baselines, quadrature rules, batching); docs/ARCHITECTURE.md, section "Gradients".
"""
from .methods.gradients import (
    BASELINES, CHANGE_FLOOR, CONVERGENCE_TOL, IG_PANEL_NODES, QUADRATURES, Cancelled, Panels, attribute,
    auto_batch_size, baseline_token, convergence_options, grad_x_input, integrate_panels, integrated_gradients,
    quadrature, sequential_integrated_gradients,
)

__all__ = [
    "BASELINES", "CHANGE_FLOOR", "CONVERGENCE_TOL", "IG_PANEL_NODES", "QUADRATURES", "Cancelled", "Panels",
    "attribute", "auto_batch_size", "baseline_token", "convergence_options", "grad_x_input", "integrate_panels",
    "integrated_gradients", "quadrature", "sequential_integrated_gradients",
]
