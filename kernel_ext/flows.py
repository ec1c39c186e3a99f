"""Attention graphs: rollout, attention flow, GAF information tensors and a barrier max-flow solver.

The public face of :mod:`xattr_lab.graphs` (the array algorithms) and
:mod:`xattr_lab.methods.flows` (their adapters to a model), kept as ``xattr_lab.flows`` /
``xa.flows`` for user code. docs/ARCHITECTURE.md, sections "Rollout and attention flow" and
"Flows and GAF", give the definitions.

- :func:`rollout` (Abnar & Zuidema 2020) — cumulative products of residual-mixed attention.
- :func:`attention_flow` — all-pairs max-flow values top token -> input token.
- :func:`information_tensor` — AF / GF / AGF capacities of Generalized Attention Flow.
- :func:`barrier_max_flow` — the log-barrier max-flow of GAF (CPU or GPU), with a cut certificate.
- :func:`attribute` (``ex.attribute(method="rollout"|"attention_flow"|"gaf")``) and
  :func:`explain_flow` (``ex.flow``).
"""

from .errors import SolverError as FlowSolverError
from .graphs.attention_flow import attention_flow
from .graphs.barrier import VALUE_RTOL, FlowSolution, barrier_max_flow
from .graphs.checks import DROP_RELATIVE
from .graphs.cut import sweep_cut
from .graphs.information import INFO_KINDS, information_tensor
from .graphs.layered import layered_graph
from .graphs.rollout import mix_residual, mix_residual_capacity, rollout
from .methods.flows import attribute, explain_flow

__all__ = [
    "rollout",
    "attention_flow",
    "information_tensor",
    "barrier_max_flow",
    "FlowSolution",
    "FlowSolverError",
    "mix_residual",
    "mix_residual_capacity",
    "layered_graph",
    "sweep_cut",
    "attribute",
    "explain_flow",
    "INFO_KINDS",
    "VALUE_RTOL",
    "DROP_RELATIVE",
]
