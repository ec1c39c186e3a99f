"""Attention-graph algorithms over arrays: rollout, attention flow, GAF information tensors and
the barrier max-flow solver (docs/ARCHITECTURE.md, sections "Rollout and attention flow" and
"Flows and GAF").

Arrays in, numpy float64 out. This layer uses numpy, scipy, networkx, and torch only as an array
library (so the barrier solver runs on a GPU); it knows nothing of models, tokenizers or results.
Importing this package does not import torch: the barrier solver's names are loaded on first
use (PEP 562), so the torch-free widgets can use rollout, attention flow and the graph export.

- :func:`rollout` (Abnar & Zuidema 2020) — cumulative products of residual-mixed attention.
- :func:`attention_flow` — all-pairs max-flow values top token -> input token (scipy max-flow on
  integer-scaled capacities, with a certified per-pair error bound).
- :func:`information_tensor` — AF / GF / AGF capacities of Generalized Attention Flow.
- :func:`barrier_max_flow` — the log-barrier max-flow of GAF, solved exactly (to round-off) by a
  path-following Newton method whose linear systems are weighted graph Laplacians, factorised
  layer by layer (block-tridiagonal Cholesky) in torch, on CPU or GPU.
- :func:`layered_graph` — the layered graph as a networkx DiGraph; :func:`sweep_cut` — the cut
  certificate.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .attention_flow import attention_flow
from .checks import DROP_RELATIVE
from .cut import sweep_cut
from .information import INFO_KINDS, information_tensor
from .layered import layered_graph
from .rollout import mix_residual, mix_residual_capacity, rollout

#: imported on first use: they need torch
_LAZY = {"VALUE_RTOL": "barrier", "FlowSolution": "barrier", "barrier_max_flow": "barrier"}

__all__ = [
    "rollout",
    "mix_residual",
    "mix_residual_capacity",
    "attention_flow",
    "INFO_KINDS",
    "information_tensor",
    "barrier_max_flow",
    "FlowSolution",
    "VALUE_RTOL",
    "DROP_RELATIVE",
    "layered_graph",
    "sweep_cut",
]

if TYPE_CHECKING:  # pragma: no cover
    from .barrier import VALUE_RTOL, FlowSolution, barrier_max_flow


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xattr_lab.graphs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
