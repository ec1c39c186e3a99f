"""Bokeh figure builders: plain data in, (figure, data sources) out; no callbacks, no widgets.

Every string that comes from data (tokens, labels) reaches Bokeh only as glyph data, tooltip
fields or ``PlainText`` axis labels, which Bokeh draws as text (canvas or textContent), never as
markup; ``no_math`` also breaks TeX delimiters so a token cannot switch on math rendering. Math
rendering is off in every text model built here: titles, axis labels and colour-bar titles are
``PlainText`` (:func:`plain`), Divs have ``disable_math=True`` (:func:`div`), so a token such as
``$$\\href{javascript:alert(1)}{x}$$`` never reaches MathJax.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    Div,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    NumeralTickFormatter,
    PlainText,
    TapTool,
    Title,
)
from bokeh.core.properties import value
from bokeh.plotting import figure

from . import core
from .sizing import LABEL_GAP, MIN_WIDTH, fit_flow, label_px, readable_ticks, responsive, strip_height, strip_rows

TOKEN_FONT = "monospace"


def no_math(text: str) -> str:
    """Break Bokeh's TeX delimiters ($$, \\[, \\(, \\], \\)) with a zero-width space."""
    text = str(text)
    for delim in ("$$", "\\[", "\\]", "\\(", "\\)"):
        text = text.replace(delim, delim[0] + "\u200b" + delim[1:])
    return text


def plain(text) -> PlainText:
    """A Bokeh text value drawn as typed (no TeX), for titles, axis and colour-bar labels, Labels."""
    return PlainText(text=str(text))


def plain_title(text) -> Title | None:
    """A figure title as :func:`plain` text (None for an empty one)."""
    return Title(text=plain(text)) if text else None


def div(markup: str, **kwargs) -> Div:
    """A Bokeh Div of our escaped ``markup`` with math rendering off (MathJax never runs on it) and,
    should a page typeset it anyway, TeX delimiters broken (:func:`no_math`)."""
    return Div(text=no_math(markup), disable_math=True, **kwargs)


def _bare(p) -> None:
    p.axis.visible = False
    p.grid.visible = False
    p.outline_line_color = None
    p.toolbar.logo = None


def token_strip_figure(labels: Sequence[str], values: np.ndarray, raw: np.ndarray | None = None,
                       indices: Sequence[int] | None = None, *, scale: float | None = None,
                       width: int = 900, title: str = "", stretch: bool = False) -> tuple:
    """Token heat strip: one box per token, wrapped into rows of ``width`` px, coloured by signed value.

    labels: display labels (n,); values: (n,) signed scores; scale: colour range [-scale, scale].
    stretch: as wide as the cell, at most ``width + 20`` px (:func:`responsive`; the live view then
    re-wraps to the measured width with :func:`fit_strip`).
    Returns (figure, source, box renderer). ``source`` columns: x, y, w, token, score, raw, index,
    colour, text_colour.
    """
    values = np.asarray(values, dtype=np.float64)
    raw = values if raw is None else np.asarray(raw, dtype=np.float64)
    indices = list(range(len(labels))) if indices is None else list(indices)
    scale = core.symmetric_scale(values) if scale is None else scale
    source = ColumnDataSource(strip_data(labels, values, raw, indices, scale, width), name="xattr-strip-source")
    nrows = strip_rows(source.data)
    p = figure(width=width + 20, height=strip_height(nrows), x_range=(-5, width + 5),
               y_range=(-nrows + 0.45, 0.55), tools="", toolbar_location=None,
               title=plain_title(title), name="xattr-token-strip", min_border_left=5, min_border_right=5)
    _bare(p)
    if stretch:
        responsive(p, width + 20)
    boxes = p.rect("x", "y", "w", 0.82, source=source, fill_color="colour", line_color="#bbbbbb",
                   selection_line_color="#000000", selection_line_width=2.5, nonselection_fill_alpha=0.55,
                   nonselection_line_color="#bbbbbb")
    p.text("x", "y", text="token", source=source, text_align="center", text_baseline="middle",
           text_font=value(TOKEN_FONT), text_font_size="12px", text_color="text_colour", nonselection_text_alpha=1.0)
    p.add_tools(TapTool(renderers=[boxes]))
    p.add_tools(HoverTool(renderers=[boxes], tooltips=[
        ("token", "@token"), ("index", "@index"), ("score", "@score{+0.000000}"), ("raw", "@raw{+0.000000}")]))
    mapper = LinearColorMapper(palette=list(core.DIVERGING), low=-scale, high=scale, nan_color=core.NAN_COLOUR)
    # width "auto": the bar spans the strip whatever its width (a fixed width is clipped in a narrow cell)
    p.add_layout(ColorBar(color_mapper=mapper, orientation="horizontal", height=10,
                          width="auto" if stretch else min(width, 400), title=plain("score"),
                          formatter=readable_ticks(-scale, scale), location=(0, 0)), "below")
    return p, source, boxes


def strip_data(labels, values, raw, indices, scale, width) -> dict:
    labels = [no_math(label) for label in labels]
    x, rows, widths = core.wrap_layout(labels, width)
    return {
        "x": x.tolist(), "y": (-rows).astype(float).tolist(), "w": widths.tolist(),
        "token": labels, "score": np.asarray(values, float).tolist(), "raw": np.asarray(raw, float).tolist(),
        "index": [int(i) for i in indices],
        "colour": core.diverging_colours(values, scale), "text_colour": core.text_colours(values, scale),
    }


# ---------------------------------------------------------------------------- flow graph
def flow_figure(labels: Sequence[str], edge_flow: np.ndarray, node_flow: np.ndarray, attributions: np.ndarray,
                *, max_edges: int = core.EDGES_DRAWN, max_labels: int = 60, sources: Sequence[int] = (),
                stretch: bool = False) -> tuple:
    """Layered flow graph: columns = layers (0 = input tokens), rows = token positions.

    Token labels sit ``LABEL_GAP`` px beside the first and last columns, with room for them kept
    in pixels by :func:`fit_flow` (called again by the live view with the measured width).
    stretch: as wide as the cell, at most the natural width (:func:`responsive`).
    Returns (figure, node_source, edge_source, highlight_source, node renderer).
    Edge widths are proportional to flow; only ``top_edges(edge_flow, max_edges)`` are drawn.
    """
    E = np.asarray(edge_flow, dtype=np.float64)
    L, n, _ = E.shape
    labels = [no_math(label) for label in labels]
    node_source = ColumnDataSource(flow_node_data(labels, node_flow, attributions, sources))
    edge_source = ColumnDataSource(flow_edge_data(E, max_edges))
    highlight = ColumnDataSource(empty_edges(), name="xattr-flow-highlight")
    row_px = 22 if n <= 40 else max(6, int(900 / n))
    height = int(min(max(260, row_px * n + 80), 1400))
    width = int(min(max(520, 260 + 110 * L), 1300))
    keep = set(np.argsort(-np.nan_to_num(np.asarray(attributions, float)), kind="stable")[:max_labels].tolist())
    short = [core.shorten(label) for label in labels]
    left = ColumnDataSource({"x": [0] * n, "y": [-i for i in range(n)], "text": [
        short[i] if (n <= max_labels or i in keep) else "" for i in range(n)]}, name="xattr-flow-labels-left")
    right = ColumnDataSource({"x": [L] * n, "y": [-i for i in range(n)], "text": [
        short[i] if (n <= max_labels or i in set(sources)) else "" for i in range(n)]}, name="xattr-flow-labels-right")
    p = figure(width=width, height=height, x_range=(-1.3, L + 1.3), y_range=(-n + 0.3, 0.8), tools="",
               toolbar_location=None, name="xattr-flow", min_border_left=5, min_border_right=5)
    p.grid.visible = False
    p.yaxis.visible = False
    p.outline_line_color = None
    p.toolbar.logo = None
    p.xaxis.ticker = FixedTicker(ticks=list(range(L + 1)))
    p.segment("x0", "y0", "x1", "y1", source=edge_source, line_width="width", line_alpha="alpha",
              line_color="#7b8bb2")
    p.segment("x0", "y0", "x1", "y1", source=highlight, line_width="width", line_alpha=0.9, line_color="#ff7f0e")
    nodes = p.scatter("x", "y", size="size", source=node_source, fill_color="colour", line_color="#555555",
                      selection_line_color="#000000", selection_line_width=2.5, nonselection_fill_alpha=0.6,
                      nonselection_line_color="#555555")
    for source, align, offset in ((left, "right", -LABEL_GAP), (right, "left", LABEL_GAP)):
        p.text("x", "y", text="text", source=source, text_align=align, text_baseline="middle", x_offset=offset,
               text_font=value(TOKEN_FONT), text_font_size="11px")
    fit_flow(p, width - 10)
    if stretch:  # no narrower than the labels plus fit_flow's 12 px a layer
        responsive(p, width, min_width=max(MIN_WIDTH, int(label_px(left.data["text"]) + label_px(right.data["text"])
                                                           + 12 * L)))
    p.add_tools(TapTool(renderers=[nodes]))
    p.add_tools(HoverTool(renderers=[nodes], tooltips=[
        ("token", "@token"), ("position", "@index"), ("layer", "@layer"), ("throughput", "@throughput{0.000000}"),
        ("attribution", "@attribution{0.000000}")]))
    return p, node_source, edge_source, highlight, nodes


def flow_node_data(labels, node_flow, attributions, sources=()) -> dict:
    T = np.asarray(node_flow, dtype=np.float64)
    Lp1, n = T.shape
    peak = max(float(np.nanmax(T)) if T.size else 0.0, 1e-12)
    attributions = np.asarray(attributions, dtype=np.float64)
    a_peak = core.symmetric_scale(attributions)
    xs, ys, size, colour, layer, index, token, thr, attr = [], [], [], [], [], [], [], [], []
    for l in range(Lp1):
        for i in range(n):
            t = float(np.nan_to_num(T[l, i]))
            xs.append(l)
            ys.append(-i)
            size.append(5.0 + 17.0 * np.sqrt(max(t, 0.0) / peak))
            if l == 0:
                colour.append(core.colour_for(attributions[i], 0.0, a_peak, core.SEQUENTIAL))
            elif l == Lp1 - 1 and i in set(sources):
                colour.append("#2ca02c")
            else:
                colour.append("#c6cbe0")
            layer.append(l)
            index.append(i)
            token.append(labels[i])
            thr.append(t)
            attr.append(float(attributions[i]) if l == 0 else float("nan"))
    return {"x": xs, "y": ys, "size": size, "colour": colour, "layer": layer, "index": index, "token": token,
            "throughput": thr, "attribution": attr}


def empty_edges() -> dict:
    return {"x0": [], "y0": [], "x1": [], "y1": [], "width": [], "alpha": [], "flow": []}


def flow_edge_data(E: np.ndarray, max_edges: int = core.EDGES_DRAWN, peak: float | None = None, max_width: float = 8.0) -> dict:
    """Segments for the largest edges of E (L, n, n); E[l-1][i, j] is (l, i) -> (l-1, j)."""
    picked = core.top_edges(E, max_edges)
    data = empty_edges()
    if not len(picked):
        return data
    flows = E[picked[:, 0], picked[:, 1], picked[:, 2]]
    peak = float(flows.max()) if peak is None else peak
    peak = max(peak, 1e-12)
    data["x0"] = (picked[:, 0] + 1).astype(float).tolist()
    data["y0"] = (-picked[:, 1]).astype(float).tolist()
    data["x1"] = picked[:, 0].astype(float).tolist()
    data["y1"] = (-picked[:, 2]).astype(float).tolist()
    data["width"] = (0.4 + max_width * flows / peak).tolist()
    data["alpha"] = (0.15 + 0.6 * flows / peak).tolist()
    data["flow"] = flows.tolist()
    return data


def throughput_data(values, total: float) -> dict:
    """A throughput bar chart's columns: layer, value (raw) and percent (of ``total``, the flow value)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    total = float(total) if np.isfinite(total) and abs(total) > 1e-300 else 1.0
    return {"layer": list(range(len(values))), "value": values.tolist(), "percent": (100 * values / total).tolist()}


def throughput_figure(values: np.ndarray, title: str = "", total: float = 1.0, stretch: bool = False) -> tuple:
    """Bar chart of one position's throughput per layer (layer 0 = input), in percent of ``total``
    (the flow value; plain-decimal ticks, the raw value on hover). Returns (figure, source)."""
    values = np.asarray(values, dtype=np.float64)
    source = ColumnDataSource(throughput_data(values, total), name="xattr-throughput")
    p = figure(width=360, height=220, tools="", toolbar_location=None, title=plain_title(title),
               name="xattr-throughput")
    p.vbar(x="layer", top="percent", width=0.7, source=source, fill_color="#ff7f0e", line_color=None)
    p.add_tools(HoverTool(tooltips=[("layer", "@layer"), ("throughput", "@value{0.000000}"),
                                    ("of the flow", "@percent{0.0}%")]))
    p.xaxis.ticker = FixedTicker(ticks=list(range(len(values))))
    p.xaxis.axis_label = plain("layer")
    p.yaxis.axis_label = plain("% of the flow value")
    p.yaxis.formatter = NumeralTickFormatter(format="0.[000]")
    p.toolbar.logo = None
    if stretch:
        responsive(p, 360, min_width=200)
    return p, source


# ---------------------------------------------------------------------------- head grid
def grid_data(values: np.ndarray, colours: Sequence[Sequence[str]], texts: Sequence[Sequence[str]]) -> dict:
    L, H = np.asarray(values).shape[:2]
    data = {"x": [], "y": [], "colour": [], "value": [], "text": [], "layer": [], "head": [], "label": []}
    for l in range(L):
        for h in range(H):
            data["x"].append(h)
            data["y"].append(-l)
            data["colour"].append(colours[l][h])
            v = values[l][h]
            data["value"].append(float(v) if isinstance(v, (int, float, np.floating, np.integer)) else float("nan"))
            data["text"].append(no_math(texts[l][h]))
            data["layer"].append(l)
            data["head"].append(h)
            data["label"].append(f"{l}.{h}")
    return data


def head_grid_figure(values: np.ndarray, colours, texts, *, title: str = "", palette=None, low=0.0, high=1.0,
                     text_colours=None, stretch: bool = False) -> tuple:
    """L x H grid of head cells plus a tappable column of layer labels at x = -1.

    values: (L, H) numbers (or NaN for categorical stats); colours/texts: L lists of H strings.
    Returns (figure, cell_source, layer_source, cell renderer, layer renderer).
    """
    values = np.asarray(values, dtype=np.float64)
    L, H = values.shape
    cells = ColumnDataSource(grid_data(values, colours, texts), name="xattr-head-cells")
    layers = ColumnDataSource({"x": [-1.0] * L, "y": [-l for l in range(L)], "text": [f"L{l}" for l in range(L)],
                               "layer": list(range(L))}, name="xattr-layer-labels")
    cell_px = 46 if H <= 16 else 30
    p = figure(width=int(80 + cell_px * (H + 1)), height=int(90 + 34 * L), x_range=(-1.6, H - 0.5),
               y_range=(-L + 0.5, 0.5), tools="", toolbar_location=None, title=plain_title(title),
               name="xattr-head-grid")
    p.grid.visible = False
    p.yaxis.visible = False
    p.outline_line_color = None
    p.toolbar.logo = None
    p.xaxis.ticker = FixedTicker(ticks=list(range(H)))
    p.xaxis.axis_label = plain("head")
    cell_renderer = p.rect("x", "y", 0.94, 0.9, source=cells, fill_color="colour", line_color="#ffffff",
                           selection_line_color="#000000", selection_line_width=3, nonselection_fill_alpha=0.75,
                           nonselection_line_color="#ffffff")
    p.text("x", "y", text="text", source=cells, text_align="center", text_baseline="middle", text_font_size="9px",
           text_color="#000000", nonselection_text_alpha=1.0)
    layer_renderer = p.rect("x", "y", 1.0, 0.9, source=layers, fill_color="#eeeeee", line_color="#999999",
                            selection_fill_color="#ffd27f", nonselection_fill_alpha=1.0)
    p.text("x", "y", text="text", source=layers, text_align="center", text_baseline="middle", text_font_size="11px",
           nonselection_text_alpha=1.0)
    p.add_tools(TapTool(renderers=[cell_renderer, layer_renderer]))
    p.add_tools(HoverTool(renderers=[cell_renderer], tooltips=[("head", "@label"), ("value", "@text")]))
    if palette is not None:
        mapper = LinearColorMapper(palette=list(palette), low=low, high=high if high > low else low + 1)
        p.add_layout(ColorBar(color_mapper=mapper, width=10, location=(0, 0),
                              formatter=readable_ticks(low, high if high > low else low + 1)), "right")
    if stretch:
        responsive(p, p.width)
    return p, cells, layers, cell_renderer, layer_renderer


# ---------------------------------------------------------------------------- matrix
def matrix_figure(matrix: np.ndarray, labels: Sequence[str], *, title: str = "", max_ticks: int = 60,
                  stretch: bool = False) -> tuple:
    """Heat map of an (n, n) matrix: rows = queries (top to bottom), columns = keys.

    Returns (figure, source). Rect cells with hover (query, key, value) for n <= 64, an image
    glyph otherwise. stretch: as wide as the cell, at most the natural width.
    """
    M = np.asarray(matrix, dtype=np.float64)
    n = M.shape[0]
    labels = [no_math(label) for label in labels]
    px = max(4, min(22, int(640 / max(n, 1))))
    p = figure(width=int(140 + px * n), height=int(120 + px * n), x_range=(-0.5, n - 0.5), y_range=(n - 0.5, -0.5),
               tools="", toolbar_location=None, title=plain_title(title), name="xattr-matrix")
    p.grid.visible = False
    p.toolbar.logo = None
    peak = max(float(np.nanmax(M)) if M.size else 0.0, 1e-12)
    if n <= 64:
        qi, ki = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        flat = M.ravel()
        source = ColumnDataSource({
            "x": ki.ravel().tolist(), "y": qi.ravel().tolist(), "value": flat.tolist(),
            "colour": [core.colour_for(v, 0.0, peak, core.SEQUENTIAL) for v in flat],
            "query": [labels[i] for i in qi.ravel()], "key": [labels[j] for j in ki.ravel()],
        })
        cells = p.rect("x", "y", 1, 1, source=source, fill_color="colour", line_color=None)
        p.add_tools(HoverTool(renderers=[cells], tooltips=[("query", "@query"), ("key", "@key"),
                                                           ("value", "@value{0.0000}")]))
    else:
        # Image row 0 sits at y = -0.5, the top of this inverted y range: query 0 on top.
        source = ColumnDataSource({"image": [M], "x": [-0.5], "y": [-0.5],
                                   "dw": [n], "dh": [n]})
        mapper = LinearColorMapper(palette=list(core.SEQUENTIAL), low=0.0, high=peak)
        p.image(image="image", x="x", y="y", dw="dw", dh="dh", source=source, color_mapper=mapper)
    step = max(1, int(np.ceil(n / max_ticks)))
    ticks = list(range(0, n, step))
    for axis in (p.xaxis, p.yaxis):
        axis.ticker = FixedTicker(ticks=ticks)
        axis.major_label_overrides = {i: PlainText(text=core.shorten(labels[i], 12)) for i in ticks}
        axis.major_label_text_font = TOKEN_FONT
        axis.major_label_text_font_size = "10px"
    p.xaxis.major_label_orientation = np.pi / 2
    p.xaxis.axis_label = plain("key")
    p.yaxis.axis_label = plain("query")
    if stretch:
        responsive(p, p.width)
    return p, source


def cone_figure(values: np.ndarray, floor: float | None, *, stretch: bool = False):
    """Normalised cone index per layer (values: (L+1,), 0 = embeddings) with the random-direction
    floor 1/√n (None: not drawn) as a dashed line. stretch: as wide as the cell, at most 360 px."""
    from bokeh.models import Label, Span

    layers = list(range(len(values)))
    fig = figure(width=360, height=190, title=plain_title("normalised cone index by layer"), name="xattr-cone-index",
                 toolbar_location=None, y_range=(0, 1.05), x_axis_label=plain("layer (0 = embeddings)"))
    if len(layers) <= 25:
        fig.xaxis.ticker = FixedTicker(ticks=layers)  # whole layers, no "0.5"
    if stretch:
        responsive(fig, 360, min_width=200)
    fig.line(layers, np.asarray(values, float).tolist(), line_width=2)
    fig.scatter(layers, np.asarray(values, float).tolist(), size=5)
    if floor is not None:
        fig.add_layout(Span(location=floor, dimension="width", line_dash="dashed", line_color="#888888"))
        fig.add_layout(Label(x=0, y=floor, text=plain(f"random directions: 1/√n = {floor:.2f}"), text_font_size="9px",
                             y_offset=2, text_color="#555555"))
    return fig
