"""Widths and tick formats of the live figures: a view fits its notebook cell.

Live figures stretch to their cell's width (Bokeh ``stretch_width``, at most their natural width,
:func:`responsive`); Bokeh reports the width it drew (``inner_width``) back to the kernel and the
view re-lays out what needs pixels: the token strip re-wraps its rows (:func:`fit_strip`), the
flow graph keeps room for its token labels (:func:`fit_flow`). Tick labels are plain decimals
(:func:`readable_ticks`: "0.0015", never "1.500e-3").
"""
from __future__ import annotations

import math

from bokeh.models import NumeralTickFormatter, PlainText

from . import core

__all__ = ["MIN_WIDTH", "LABEL_GAP", "responsive", "tick_decimals", "tick_format", "readable_ticks", "strip_rows",
           "strip_height", "fit_strip", "label_px", "fit_flow"]

#: The narrowest a responsive figure is drawn (px); ``max_width`` is its natural width.
MIN_WIDTH = 240


def responsive(p, natural_width: int, min_width: int = MIN_WIDTH):
    """Make figure ``p`` as wide as its cell (Bokeh ``stretch_width``), at most ``natural_width`` px;
    returns ``p``. Live views use it; exports keep fixed widths (a page scrolls, a cell must not)."""
    p.sizing_mode = "stretch_width"
    p.max_width = int(natural_width)
    p.min_width = int(min(min_width, natural_width))
    return p


def tick_decimals(span: float) -> int:
    """Decimals that write every tick of an axis or colour bar covering ``span`` (high - low)
    exactly: Bokeh's ticks are 1, 2 or 5 x 10^k apart, at most ~10 per span, so 10^k >= span / 20.
    0 for span >= 20 (or not finite / not positive)."""
    span = float(span)
    if not math.isfinite(span) or span <= 0:
        return 0
    return int(min(12, max(0, math.ceil(-math.log10(span / 20)))))


def tick_format(span: float) -> str:
    """A Numeral format writing the ticks of a range ``span`` wide as plain decimals: "0.0015",
    never "1.500e-3" (trailing zeros dropped: "0.[00000]")."""
    decimals = tick_decimals(span)
    return "0" if decimals == 0 else "0.[" + "0" * decimals + "]"


def readable_ticks(low: float, high: float) -> NumeralTickFormatter:
    """The tick formatter of an axis or colour bar from ``low`` to ``high``."""
    return NumeralTickFormatter(format=tick_format(abs(float(high) - float(low))))


def strip_rows(data: dict) -> int:
    """Rows of a strip layout (``strip_data``'s ``y`` is minus the row)."""
    return int(max(1, 1 - min(data["y"], default=0)))


def strip_height(nrows: int) -> int:
    """Figure height (px) of a strip of ``nrows`` rows (32 px a row, title and colour bar)."""
    return 32 * nrows + 95


def fit_strip(p, source, inner_width: float, max_wrap: int) -> int | None:
    """Re-wrap strip figure ``p`` to a measured frame width (px); returns the new wrap width, or
    None when it did not change. The boxes keep one screen pixel per layout pixel: a narrower cell
    gets more rows, never squeezed boxes."""
    wrap = int(max(60, min(max_wrap, float(inner_width) - 10)))
    if abs((p.x_range.end - 5) - wrap) < 1:
        return None
    x, rows, widths = core.wrap_layout(source.data["token"], wrap)
    data = dict(source.data, x=x.tolist(), y=(-rows).astype(float).tolist(), w=widths.tolist())
    nrows = strip_rows(data)
    source.data = data
    p.x_range.end = wrap + 5
    p.y_range.start = -nrows + 0.45
    p.height = strip_height(nrows)
    return wrap


#: Pixels between a flow graph's end columns and their token labels (room for the largest node).
LABEL_GAP = 13


def label_px(texts, char_px: float = 6.7) -> float:
    """Room (px) for the longest of ``texts`` in 11 px monospace beside a column, gap included."""
    return max((len(str(t)) for t in texts), default=0) * char_px + LABEL_GAP + 4


def fit_flow(p, inner_width: float) -> bool:
    """Fit flow figure ``p`` (of :func:`flow_figure`) to a frame ``inner_width`` px wide: its x range
    keeps ``label_px`` pixels for the token labels on each side, and the layer axis says "L3"
    instead of "layer 3" when columns are narrower than 56 px. Returns whether anything changed."""
    L = len(p.xaxis[0].ticker.ticks) - 1
    left = label_px(p.select_one({"name": "xattr-flow-labels-left"}).data["text"])
    right = label_px(p.select_one({"name": "xattr-flow-labels-right"}).data["text"])
    unit = max(12.0, (float(inner_width) - left - right) / max(L, 1))  # px per layer
    start, end = -left / unit, L + right / unit
    compact = unit < 56
    labels = {0: "in" if compact else "input", **{l: f"L{l}" if compact else f"layer {l}" for l in range(1, L + 1)}}
    old = {k: v.text for k, v in (p.xaxis[0].major_label_overrides or {}).items()}
    if abs(p.x_range.start - start) < 1e-3 and abs(p.x_range.end - end) < 1e-3 and old == labels:
        return False
    p.x_range.start, p.x_range.end = start, end
    if old != labels:
        p.xaxis.major_label_overrides = {k: PlainText(text=v) for k, v in labels.items()}
    return True
