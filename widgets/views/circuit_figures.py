"""The circuit graph of a patching circuit (AtP, EAP, EAP-IG): plain arrays in, Bokeh / matplotlib out.

Heads are nodes at (x = layer, y = -head); the logits are one more node at x = L, halfway down.
Edges run sender head -> receiver head (or -> logits), drawn with width by |score| and colour by
sign (``core.DIVERGING``: red positive, blue negative). The circuit of size k is the k strongest
edges by |score| (unit "edges") or the k strongest heads by |node score| with the edges among them
and the logits (unit "nodes": atp, and eap / eap-ig when the faithfulness curve counts nodes).

Every string from data (prompts never reach here; head names are ours) goes to Bokeh as glyph data
or ``PlainText``; numbers are pre-formatted with ``core.readable`` (plain decimals).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, TapTool
from bokeh.plotting import figure

from .. import core
from ..figures import plain, plain_title
from ..sizing import responsive

__all__ = ["ranked_edges", "ranked_nodes", "circuit_nodes", "circuit_edges", "node_xy", "edge_data", "node_data", "graph_figure",
           "draw_graph", "head_name"]

#: Edges drawn at most (the slider's top end; the payload keeps ``payload.MAX_PAIRS``).
MAX_DRAWN = 400


def head_name(flat: int, n_layers: int, n_heads: int) -> str:
    """"l.h" of flat head index ``l * H + h``; "logits" for ``L * H``."""
    return "logits" if int(flat) == n_layers * n_heads else f"{int(flat) // n_heads}.{int(flat) % n_heads}"


def ranked_edges(edge_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero finite entries of ``edge_scores`` (L*H, L*H + 1) as (sender, receiver, score) arrays,
    strongest |score| first (ties: by flat position, stable). Empty arrays for a (0, 0) matrix."""
    S = np.asarray(edge_scores, dtype=np.float64)
    if S.ndim != 2 or S.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    s, r = np.nonzero(np.isfinite(S) & (S != 0))
    v = S[s, r]
    order = np.argsort(-np.abs(v), kind="stable")
    return s[order], r[order], v[order]


def ranked_nodes(node_scores: np.ndarray) -> np.ndarray:
    """Flat head indices of (L, H) ``node_scores``, strongest |score| first (NaN last)."""
    v = np.abs(np.asarray(node_scores, dtype=np.float64).ravel())
    return np.argsort(-np.nan_to_num(v, nan=-1.0), kind="stable")


def circuit_nodes(k: int, unit: str, node_scores: np.ndarray, senders: np.ndarray, receivers: np.ndarray) -> set[int]:
    """Flat indices (``L * H`` = logits) in the circuit of size ``k``: the top-k heads (unit "nodes")
    or every end of the top-k edges (unit "edges")."""
    if unit == "nodes":
        return {int(i) for i in ranked_nodes(node_scores)[:max(0, k)]}
    return {int(i) for i in np.concatenate([senders[:max(0, k)], receivers[:max(0, k)]])}


def node_xy(flat: np.ndarray | Sequence[int], n_layers: int, n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (x, y) of flat node indices: heads at (layer, -head), logits at (L, -(H - 1) / 2)."""
    flat = np.asarray(flat, dtype=np.int64)
    logits = flat == n_layers * n_heads
    x = np.where(logits, n_layers, flat // max(n_heads, 1)).astype(np.float64)
    y = np.where(logits, -(n_heads - 1) / 2.0, -(flat % max(n_heads, 1))).astype(np.float64)
    return x, y


def circuit_edges(k: int, unit: str, senders: np.ndarray, receivers: np.ndarray, members: set[int]) -> np.ndarray:
    """Ranks (into the ranked edge arrays) of the edges drawn for a circuit of size ``k``: the top ``k``
    (unit "edges"), or every edge between circuit heads and the logits (unit "nodes"); at most MAX_DRAWN."""
    if unit == "edges":
        return np.arange(int(min(max(k, 0), len(senders), MAX_DRAWN)))
    ends = set(members)
    keep = [i for i, (a, b) in enumerate(zip(senders, receivers)) if int(a) in ends and int(b) in ends]
    return np.asarray(keep[:MAX_DRAWN], dtype=np.int64)


def edge_data(senders: np.ndarray, receivers: np.ndarray, scores: np.ndarray, n_layers: int, n_heads: int,
              peak: float | None = None, max_width: float = 7.0) -> dict:
    """Columns of the given edges: x0, y0, x1, y1, width (px, by |score| / ``peak``, default max |score|),
    colour (sign), score, text (plain decimal), sender, receiver, name ("0.1 -> 2.3")."""
    s, r, v = np.asarray(senders), np.asarray(receivers), np.asarray(scores, dtype=np.float64)
    x0, y0 = node_xy(s, n_layers, n_heads)
    x1, y1 = node_xy(r, n_layers, n_heads)
    peak = float(np.abs(v).max()) if peak is None and len(v) else (peak or 1.0)
    peak = peak if peak > 0 else 1.0
    return {"x0": x0.tolist(), "y0": y0.tolist(), "x1": x1.tolist(), "y1": y1.tolist(),
            "width": (0.8 + max_width * np.abs(v) / peak).tolist(),
            "colour": [core.colour_for(float(x), -peak, peak) for x in v], "score": v.tolist(),
            "text": [core.readable(x) for x in v], "sender": [int(a) for a in s], "receiver": [int(b) for b in r],
            "name": [f"{head_name(a, n_layers, n_heads)} -> {head_name(b, n_layers, n_heads)}" for a, b in zip(s, r)]}


def node_data(node_scores: np.ndarray, in_circuit: set[int]) -> dict:
    """Columns of every head plus the logits node: x, y, colour (node score, diverging), alpha (1 in
    the circuit, 0.35 outside), score, text, flat, name, layer, head (-1 for logits)."""
    V = np.asarray(node_scores, dtype=np.float64)
    L, H = V.shape
    flat = np.arange(L * H + 1)
    x, y = node_xy(flat, L, H)
    values = np.append(V.ravel(), np.nan)
    peak = core.symmetric_scale(V)
    colour = [core.colour_for(float(v), -peak, peak) if np.isfinite(v) else "#444444" for v in values]
    return {"x": x.tolist(), "y": y.tolist(), "colour": colour, "score": values.tolist(),
            "alpha": [1.0 if int(i) in in_circuit else 0.35 for i in flat],
            "text": [core.readable(v) if np.isfinite(v) else "" for v in values], "flat": flat.tolist(),
            "name": [head_name(i, L, H) for i in flat], "layer": [int(i) // H if i < L * H else -1 for i in flat],
            "head": [int(i) % H if i < L * H else -1 for i in flat]}


def graph_figure(nodes: dict, edges: dict, n_layers: int, n_heads: int, *, title: str = "",
                 stretch: bool = False) -> tuple:
    """The graph: edges (tappable segments) under nodes (tappable circles).

    Returns (figure, node source, edge source, node renderer, edge renderer). Natural size: 64 px
    per layer, 30 px per head (at least 240 x 200), as wide as the cell when ``stretch``.
    """
    L, H = n_layers, n_heads
    node_source = ColumnDataSource(nodes, name="xattr-circuit-nodes")
    edge_source = ColumnDataSource(edges, name="xattr-circuit-edges")
    width = int(max(240, 90 + 64 * (L + 1)))
    height = int(max(200, 80 + 30 * H))
    p = figure(width=width, height=height, x_range=(-0.7, L + 0.9), y_range=(-H + 0.4, 0.8), tools="",
               toolbar_location=None, title=plain_title(title), name="xattr-circuit-graph")
    p.grid.visible = False
    p.outline_line_color = None
    p.toolbar.logo = None
    p.xaxis.ticker = FixedTicker(ticks=list(range(L + 1)))
    p.xaxis.major_label_overrides = {**{l: str(l) for l in range(L)}, L: "logits"}
    p.xaxis.axis_label = plain("layer")
    p.yaxis.ticker = FixedTicker(ticks=[-h for h in range(H)])
    p.yaxis.major_label_overrides = {-h: f"H{h}" for h in range(H)}
    p.yaxis.axis_label = plain("head")
    edge_renderer = p.segment("x0", "y0", "x1", "y1", source=edge_source, line_width="width", line_color="colour",
                              line_alpha=0.75, selection_line_alpha=1.0, selection_line_color="#000000",
                              nonselection_line_alpha=0.6)
    node_renderer = p.scatter("x", "y", source=node_source, size=15, fill_color="colour", fill_alpha="alpha",
                              line_color="#333333", line_alpha="alpha", selection_line_color="#000000",
                              selection_line_width=3, nonselection_fill_alpha="alpha", nonselection_line_alpha="alpha")
    p.add_tools(TapTool(renderers=[node_renderer, edge_renderer]))
    p.add_tools(HoverTool(renderers=[node_renderer], tooltips=[("head", "@name"), ("node score", "@text")]))
    p.add_tools(HoverTool(renderers=[edge_renderer], tooltips=[("edge", "@name"), ("edge score", "@text")],
                          line_policy="interp"))
    if stretch:
        responsive(p, width)
    return p, node_source, edge_source, node_renderer, edge_renderer


def draw_graph(nodes: dict, edges: dict, n_layers: int, n_heads: int, *, title: str = "", caption: str = ""):
    """A matplotlib figure of the same graph (PNG export; no browser)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    L, H = n_layers, n_heads
    fig = Figure(figsize=(min(16.0, 2.0 + 0.7 * (L + 1)), min(12.0, 1.6 + 0.35 * H)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for x0, y0, x1, y1, w, c in zip(edges["x0"], edges["y0"], edges["x1"], edges["y1"], edges["width"],
                                    edges["colour"]):
        ax.plot([x0, x1], [y0, y1], color=c, linewidth=w * 0.6, alpha=0.8, zorder=1)
    ax.scatter(nodes["x"], nodes["y"], c=nodes["colour"], s=90, edgecolors="#333333", zorder=2,
               alpha=None)
    ax.set_xticks(range(L + 1), [str(l) for l in range(L)] + ["logits"])
    ax.set_yticks([-h for h in range(H)], [f"H{h}" for h in range(H)])
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_xlim(-0.7, L + 0.9)
    ax.set_ylim(-H + 0.4, 0.8)
    if title:
        ax.set_title(title, fontsize=10)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=8)
    fig.tight_layout()
    return fig
