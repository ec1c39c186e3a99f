"""Rollout, attention flow and GAF over a layered graph that is already built, as arrays.

The text models build their graph inside :mod:`.flows`; vision transformers (:mod:`.vision`) and
encoder-decoders (:mod:`.seq2seq`) build theirs (patches as tokens; the encoder-decoder graph of
:mod:`xattr_lab.graphs.seq2seq`) and share these steps: pick the source rows, run the array
algorithm of :mod:`xattr_lab.graphs`, and package a ``FlowResult``. docs/ARCHITECTURE.md, sections
"Rollout and attention flow" and "Flows and GAF".
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..graphs.attention_flow import attention_flow
from ..graphs.rollout import rollout
from ..results import FlowResult

#: residual weight r when the user gives none (rollout / attention flow: the paper's 0.5; gaf: none)
DEFAULT_RESIDUAL = {"rollout": 0.5, "attention_flow": 0.5, "gaf": None}
GRAPH_METHODS = tuple(DEFAULT_RESIDUAL)


def pick_sources(sources: Any, n: int, readout: int, default: str) -> list[int]:
    """Source rows of the top layer: ``sources`` None -> ``default`` ("all" or "readout"); "all";
    "cls"/"readout"/"source" -> [readout]; an int or a list of positions (negative from the end)."""
    if sources is None:
        sources = default
    if isinstance(sources, str):
        if sources == "all":
            return list(range(n))
        if sources in ("cls", "readout", "source"):
            return [readout]
        raise InputError(f"sources must be 'all', 'cls'/'readout', or token positions, not {sources!r}")
    picked = np.atleast_1d(np.asarray(sources))
    if picked.size == 0 or not np.issubdtype(picked.dtype, np.integer):
        raise InputError(f"sources must be 'all', 'cls'/'readout', or token positions (ints), not {sources!r}")
    out = set()
    for p in picked.tolist():
        if not -n <= p < n:
            raise InputError(f"source position {p} is outside these {n} tokens")
        out.add(p % n)
    return sorted(out)


def rollout_or_flow(method: str, A: np.ndarray, residual: float | None, picked: Sequence[int]) -> np.ndarray:
    """(n,) scores: rollout's or attention flow's rows ``picked`` of the top layer, averaged.

    A: (L, n, n) row-stochastic capacities (head-averaged attention, or the encoder-decoder graph)."""
    if method == "rollout":
        return rollout(A, residual)[-1][list(picked)].mean(axis=0)
    if method == "attention_flow":
        return attention_flow(A, residual, sources=list(picked))[list(picked)].mean(axis=0)
    raise InputError(f"{method!r} is not rollout or attention_flow")


def solver_options(options: dict) -> dict:
    """Pop the barrier solver's options (``rtol``, ``tol``, ``max_iter``, ``device``, ``threads``)."""
    return {k: options.pop(k) for k in ("rtol", "tol", "max_iter", "device", "threads") if k in options}


def gaf_flow(C: np.ndarray, mu: float | None, picked: Sequence[int], *, tokens: list[str], info: str,
             residual: float | None, device: Any, solver: dict, meta: dict) -> FlowResult:
    """The barrier max-flow of GAF on capacities C (L, n, n) from ``picked`` top rows -> FlowResult.

    ``meta``: target, target_label, prediction, text, model and extra ``options`` entries."""
    from ..graphs.barrier import barrier_max_flow

    sol = barrier_max_flow(C, mu, list(picked), device=solver.pop("device", device), **solver)
    extra = dict(meta.pop("options", {}))
    return FlowResult(
        tokens=list(tokens), attributions=sol.attributions, edge_flow=sol.edge_flow, value=sol.value,
        node_flow=sol.node_flow, capacities=C, info=info, sources=[int(p) for p in picked], mu=sol.mu,
        method="gaf", options={"residual": residual, "mu": mu, **solver, **extra}, upper_bound=sol.upper_bound,
        solver={"iterations": sol.iterations, "decrement": float(sol.residuals.get("decrement", 0.0)),
                "conservation": float(sol.residuals.get("conservation", 0.0))},
        **meta,
    )
