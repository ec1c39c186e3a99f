"""Static exports: self-contained HTML (BokehJS inlined) and PNG (matplotlib, no browser).

Plain data in, files out: this module never imports a view. A view hands over what it shows,
its Bokeh models for HTML (``View.export_models``) and, for PNG, the arrays and labels that
``draw_strip`` / ``draw_flow`` / ``draw_grid`` turn into a matplotlib figure.
"""
from __future__ import annotations

import html
import io
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import core

__all__ = ["html_document", "write_html", "draw_strip", "draw_flow", "draw_grid", "png_bytes", "write_png",
           "plain_text", "new_figure", "hex_to_rgb"]

#: background of the "not converged" badge (white text), as in the widget's header
BADGE_COLOUR = "#b2182b"

_PAGE_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ddd;padding:2px 6px;text-align:left} code{background:#f3f3f3;padding:0 3px}"
)


def html_document(models: Any, title: str = "xattr-lab") -> str:
    """One HTML page of Bokeh ``models`` (a model, a layout, or a list stacked in a column):
    BokehJS INLINE (no CDN), data as JSON that BokehJS reads as text."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.resources import INLINE

    layout = column(*models) if isinstance(models, (list, tuple)) else models
    page = file_html(layout, resources=INLINE, title=title)
    return page.replace("</head>", f"<style>{_PAGE_CSS}</style></head>", 1)


def write_html(models: Any, path, title: str = "xattr-lab") -> str:
    """Write :func:`html_document` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(html_document(models, title), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------- PNG
def new_figure(width_in: float, height_in: float):
    """An empty matplotlib ``Figure`` of ``width_in`` x ``height_in`` inches at 100 dpi on an Agg canvas (no
    pyplot, no display): what every PNG export draws on, the views' own ``png_figure`` included."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _text(ax, x, y, s, **kwargs):
    # parse_math=False: a token such as "$x$" is drawn as typed, never as mathtext.
    return ax.text(x, y, str(s), parse_math=False, **kwargs)


def significant_decimals(values: Any, digits: int = 2, most: int = 4) -> int:
    """Decimals that write the largest |value| of ``values`` (any shape) with ``digits`` significant digits:
    0.87 -> 2 ("0.87"), 4.1 -> 1, 0.0031 -> 4 (at most ``most``), 37 or more -> 0; 0 when every value is a
    whole number (code counts) or none is finite and non-zero."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size == 0 or np.all(finite == np.round(finite)):
        return 0
    return int(min(most, max(0, digits - 1 - int(np.floor(np.log10(finite.max()))))))


def plain_text(markup: str, limit: int = 160) -> str:
    """A header's HTML as one plain line (tags dropped, entities decoded), for a PNG caption."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))[:limit]


def draw_strip(tokens: Sequence[str], scores: np.ndarray, *, selected: int = -1, header: str = "", badge: str = ""):
    """Token strip: tokens coloured by signed score, wrapped into rows; ``selected`` outlined;
    ``badge`` (e.g. "not converged: ...") drawn as white text on red in the top right corner."""
    from matplotlib.patches import Rectangle

    labels = core.pretty_tokens(tokens)
    scores = np.asarray(scores, dtype=np.float64)
    width_px = 1000
    x, rows, widths = core.wrap_layout(labels, width_px, char_px=7.2)
    nrows = int(rows.max()) + 1 if len(rows) else 1
    fig = new_figure(10.5, 0.9 + 0.32 * nrows)
    ax = fig.add_axes((0.01, 0.12, 0.98, 0.8 - 0.0))
    ax.set_xlim(-5, width_px + 5)
    ax.set_ylim(-nrows + 0.4, 0.6)
    ax.axis("off")
    scale = core.symmetric_scale(scores)
    colours = core.diverging_colours(scores, scale)
    text_colours = core.text_colours(scores, scale)
    for i in range(len(labels)):
        ax.add_patch(Rectangle((x[i] - widths[i] / 2, -rows[i] - 0.4), widths[i], 0.8, facecolor=colours[i],
                               edgecolor="#000000" if i == selected else "#bbbbbb",
                               linewidth=2 if i == selected else 0.5))
        _text(ax, x[i], -rows[i], labels[i], ha="center", va="center", fontsize=8, family="monospace",
              color=text_colours[i])
    fig.text(0.01, 0.03, plain_text(header), fontsize=8, parse_math=False)
    if badge:
        fig.text(0.99, 0.97, badge[:120], fontsize=9, ha="right", va="top", color="#ffffff", weight="bold",
                 parse_math=False, bbox={"facecolor": BADGE_COLOUR, "edgecolor": "none", "pad": 3})
    return fig


def draw_flow(tokens: Sequence[str], edge_flow: np.ndarray, node_flow: np.ndarray, attributions: np.ndarray, *,
              selected: int = -1, max_edges: int = core.EDGES_DRAWN, header: str = ""):
    """Layered flow graph: edges by width, the flow into input ``selected`` highlighted.

    edge_flow: (L, n, n); node_flow: (L+1, n); attributions: (n,) colour the input column.
    """
    from matplotlib.collections import LineCollection

    E = np.asarray(edge_flow, dtype=np.float64)
    L, n, _ = E.shape
    labels = core.pretty_tokens(tokens)
    fig = new_figure(min(3 + 1.3 * L, 16), min(max(3.0, 0.25 * n + 1.2), 20))
    ax = fig.add_axes((0.15, 0.08, 0.7, 0.84))
    picked = core.top_edges(E, max_edges)
    peak = max(float(E.max()), 1e-12)
    segments = [((l + 1, -i), (l, -j)) for l, i, j in picked]
    flows = np.array([E[l, i, j] for l, i, j in picked]) if len(picked) else np.zeros(0)
    ax.add_collection(LineCollection(segments, linewidths=0.3 + 5 * flows / peak, colors="#7b8bb2", alpha=0.6))
    j = selected
    if 0 <= j < n:
        carried = core.flow_to_input(E, j)
        hp = core.top_edges(carried, max_edges)
        hs = [((l + 1, -i), (l, -k)) for l, i, k in hp]
        hf = np.array([carried[l, i, k] for l, i, k in hp]) if len(hp) else np.zeros(0)
        ax.add_collection(LineCollection(hs, linewidths=0.5 + 6 * hf / peak, colors="#ff7f0e", alpha=0.9))
    T = np.asarray(node_flow, dtype=np.float64)
    tpeak = max(float(T.max()), 1e-12)
    attributions = np.nan_to_num(np.asarray(attributions, dtype=np.float64))
    a_peak = core.symmetric_scale(attributions)
    for l in range(L + 1):
        colours = ([core.colour_for(a, 0.0, a_peak, core.SEQUENTIAL) for a in attributions] if l == 0
                   else ["#c6cbe0"] * n)
        ax.scatter([l] * n, [-i for i in range(n)], s=10 + 120 * np.sqrt(np.clip(T[l], 0, None) / tpeak),
                   c=colours, edgecolors="#555555", linewidths=0.5, zorder=3)
    if n <= 60:
        for i in range(n):
            _text(ax, -0.15, -i, core.shorten(labels[i]), ha="right", va="center", fontsize=7, family="monospace")
            _text(ax, L + 0.15, -i, core.shorten(labels[i]), ha="left", va="center", fontsize=7, family="monospace")
    ax.set_xlim(-1.2, L + 1.2)
    ax.set_ylim(-n + 0.3, 0.8)
    ax.set_xticks(range(L + 1), ["input"] + [str(l) for l in range(1, L + 1)])
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.text(0.01, 0.97, plain_text(header), fontsize=8, va="top", parse_math=False)
    return fig


def draw_grid(title: str, colours: Sequence[Sequence[str]], labels: Sequence[Sequence[str]], *,
              head: tuple[int, int] = (-1, -1), edges: Sequence[tuple[str, str, float]] = (),
              codes: dict | None = None, header: str = "", cone: tuple[Sequence[float], float | None] | None = None):
    """L x H head grid: cells in the given hex ``colours`` with ``labels``; ``head`` outlined; the top
    ``edges`` (circuits) and a head's ``codes`` ({"positive", "negative", "unique", "silent"}) listed.
    ``cone`` = (normalised cone index per layer, (L+1,) with 0 = embeddings; its random-direction floor
    1/√n or None) adds a panel below the grid with the floor dashed, as the interactive view shows."""
    from matplotlib.patches import Rectangle

    L, H = len(colours), len(colours[0]) if len(colours) else 0
    l, h = head
    grid_in, cone_in = max(3.0, 1.2 + 0.35 * L), (2.0 if cone is not None else 0.0)
    fig = new_figure(max(4.0, 1.5 + 0.45 * H) + (3.5 if (edges or codes) else 0), grid_in + cone_in)
    ax = fig.add_axes((0.1, (cone_in + 0.16 * grid_in) / (grid_in + cone_in), 0.55 if (edges or codes) else 0.8,
                       0.66 * grid_in / (grid_in + cone_in)))
    if cone is not None:
        _draw_cone(fig.add_axes((0.1, 0.45 / (grid_in + cone_in), 0.55 if (edges or codes) else 0.8,
                                 1.15 / (grid_in + cone_in))), *cone)
    rgb = np.array([[hex_to_rgb(c) for c in row] for row in colours])
    ax.imshow(rgb, aspect="auto")
    for li in range(L):
        for hi in range(H):
            _text(ax, hi, li, labels[li][hi], ha="center", va="center", fontsize=6)
    if l >= 0:
        ax.add_patch(Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    ax.set_xticks(range(H))
    ax.set_yticks(range(L), [f"L{i}" for i in range(L)])
    ax.set_xlabel("head")
    ax.set_title(title, fontsize=9)
    lines = []
    if edges:
        lines.append("top edges:")
        places = significant_decimals([v for _, _, v in edges])
        lines += [f"  {a} - {b}: {v:.{places}f}" for a, b, v in edges]
    if codes:
        def named(values):  # the silent code: no SAE feature fired
            return "[" + ", ".join("silent" if c == codes["silent"] else str(c) for c in values) + "]"

        lines.append(f"head {l}.{h}: pos {named(codes['positive'])}")
        lines.append(f"  neg {named(codes['negative'])}; unique {named(codes['unique'])}")
    if lines:
        fig.text(0.68, 0.88, "\n".join(lines)[:2000], fontsize=7, va="top", family="monospace", parse_math=False)
    fig.text(0.01, 0.97, plain_text(header), fontsize=8, va="top", parse_math=False)
    return fig


def _draw_cone(ax, values: Sequence[float], floor: float | None) -> None:
    """Normalised cone index by layer on ``ax``, with the random-direction floor 1/√n dashed."""
    values = np.asarray(values, dtype=np.float64)
    ax.plot(np.arange(values.size), values, marker="o", markersize=3, linewidth=1.5)
    if floor is not None:
        ax.axhline(floor, linestyle="--", color="#888888", linewidth=1)
        _text(ax, 0, floor + 0.03, f"random directions: 1/√n = {floor:.2f}", fontsize=7, color="#555555")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer (0 = embeddings)", fontsize=7)
    ax.set_ylabel("normalised\ncone index", fontsize=7)
    ax.tick_params(labelsize=7)


def hex_to_rgb(colour: str) -> tuple[float, float, float]:
    """``"#rrggbb"`` (the leading ``#`` optional) -> (r, g, b), each in [0, 1], as matplotlib's ``imshow`` takes."""
    colour = colour.lstrip("#")
    return tuple(int(colour[k:k + 2], 16) / 255 for k in (0, 2, 4))  # type: ignore[return-value]


def png_bytes(fig) -> bytes:
    """A matplotlib figure (from a ``draw_*`` function) as PNG bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs for exotic tokens are drawn as boxes
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_png(fig, path) -> str:
    """Write :func:`png_bytes` of ``fig`` to ``path``; returns the path."""
    Path(path).write_bytes(png_bytes(fig))
    return str(path)
