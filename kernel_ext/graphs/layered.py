"""The layered attention graph as a networkx DiGraph (the reference format for max-flow).

numpy and networkx only.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .checks import as_float64, check_layers, resolve_sources


def layered_graph(
    C: Any,
    edge_flow: Any = None,
    *,
    tokens: Sequence[str] | None = None,
    sources: Sequence[int] | None = None,
):
    """The layered attention graph as a networkx DiGraph (the reference format for max-flow).

    Nodes: (l, i) for l = 0..L (attributes ``layer``, ``index``, ``token``), plus "s" and "t".
    Edges: (l, i) -> (l−1, j) for every C[l−1][i, j] > 0, with ``capacity``; s -> (L, i)
    for the sources (default all) and (0, j) -> t with capacity U = sum(C). With ``edge_flow``
    (L, n, n) every edge also gets ``flow`` (terminal edges: the node's out-/in-flow).
    ``nx.maximum_flow_value(G, "s", "t")`` is the max-flow value the barrier solution approaches.
    """
    import networkx as nx

    C = check_layers(C, "C")
    L, n, _ = C.shape
    flow = None if edge_flow is None else as_float64(edge_flow, "edge_flow")
    if flow is not None and flow.shape != C.shape:
        raise InputError(f"edge_flow shape {flow.shape} must equal capacities shape {C.shape}")
    names = list(tokens) if tokens is not None else [str(i) for i in range(n)]
    src = np.nonzero(resolve_sources(sources, n))[0]
    U = float(C.sum())
    G = nx.DiGraph()
    for l in range(L + 1):
        for i in range(n):
            G.add_node((l, i), layer=l, index=i, token=names[i])
    G.add_node("s")
    G.add_node("t")
    for k in range(L):
        ii, jj = np.nonzero(C[k] > 0)
        for i, j in zip(ii.tolist(), jj.tolist()):
            attrs = {"capacity": float(C[k, i, j])}
            if flow is not None:
                attrs["flow"] = float(flow[k, i, j])
            G.add_edge((k + 1, i), (k, j), **attrs)
    for i in src.tolist():
        attrs = {"capacity": U}
        if flow is not None:
            attrs["flow"] = float(flow[L - 1, i].sum())
        G.add_edge("s", (L, i), **attrs)
    for j in range(n):
        attrs = {"capacity": U}
        if flow is not None:
            attrs["flow"] = float(flow[0, :, j].sum())
        G.add_edge((0, j), "t", **attrs)
    if flow is not None:
        G.graph["value"] = float(flow[0].sum())
    return G
