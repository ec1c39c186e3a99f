"""Generation view: the token x token attribution matrix of a GenerationResult, one row per generated token.

Rows are the generated tokens (top to bottom), columns every token (prompt, then generated); a cell
is coloured by signed score, and the cells a row cannot see (its own token and later ones, NaN)
are left out. Click a cell to focus its row: the token strip below shows that token's attribution
over its inputs (``GenerationResult.row``). :meth:`GenerationView.start` computes on a worker
thread and shows rows as they finish (``ex.attribute_generation(..., callback=...)``); views are
changed on the kernel's main thread only (:func:`..bundle.main_loop_scheduler`), and
:meth:`GenerationView.cancel` stops the run after the row in progress. Never imports torch.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable

import numpy as np

from xattr_lab.constants import MIME_TYPE

from .. import bundle, core
from .base import LinkedState, View, bokeh_widget, html_widget
from .token_strip import TokenStrip

__all__ = ["GenerationView", "generation_figure", "matrix_data"]


def matrix_data(result, scale: float) -> dict:
    """Bokeh columns of the visible cells: x (column), y (row), score, colour, token, generated."""
    rows, cols = np.nonzero(np.isfinite(result.matrix))
    values = result.matrix[rows, cols]
    labels = core.pretty_tokens(result.tokens)
    return {"x": cols.tolist(), "y": rows.tolist(), "score": values.tolist(),
            "colour": core.diverging_colours(values, scale), "token": [labels[c] for c in cols],
            "generated": [core.pretty_token(result.generated[r]) for r in rows]}


def generation_figure(result, *, focus: int = -1, width: int = 900, stretch: bool = False) -> tuple:
    """(figure, cell source, row-marker source): the heat map with the focused row outlined.
    stretch: as wide as the cell, at most the natural width (live views; exports stay fixed)."""
    from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, PlainText, TapTool
    from bokeh.plotting import figure

    T, n = result.matrix.shape
    px = max(8, min(24, int(width / max(n, 1))))
    scale = core.symmetric_scale(result.matrix[np.isfinite(result.matrix)])
    p = figure(width=int(160 + px * n), height=int(110 + px * max(T, 1)), x_range=(-0.5, n - 0.5),
               y_range=(max(T, 1) - 0.5, -0.5), tools="", toolbar_location=None, name="xattr-generation")
    p.grid.visible = False
    p.toolbar.logo = None
    source = ColumnDataSource(matrix_data(result, scale), name="xattr-generation-cells")
    cells = p.rect("x", "y", 1, 1, source=source, fill_color="colour", line_color=None,
                   nonselection_fill_alpha=1.0, selection_line_color=None)
    marker = ColumnDataSource({"y": [focus] if 0 <= focus < T else []})
    p.rect(x=(n - 1) / 2, y="y", width=n, height=1, source=marker, fill_alpha=0, line_color="#000000", line_width=2)
    p.add_tools(TapTool(renderers=[cells]))
    p.add_tools(HoverTool(renderers=[cells], tooltips=[("generated", "@generated"), ("input", "@token"),
                                                       ("score", "@score{+0.000000}")]))
    labels = core.pretty_tokens(result.tokens)
    p.xaxis.ticker = FixedTicker(ticks=list(range(n)))
    p.xaxis.major_label_overrides = {i: PlainText(text=core.shorten(labels[i], 12)) for i in range(n)}
    if stretch:
        from ..sizing import responsive

        responsive(p, p.width)
    p.xaxis.major_label_orientation = np.pi / 2
    p.yaxis.ticker = FixedTicker(ticks=list(range(T)))
    p.yaxis.major_label_overrides = {t: PlainText(text=core.shorten(core.pretty_token(g), 12))
                                     for t, g in enumerate(result.generated)}
    for axis in (p.xaxis, p.yaxis):
        axis.major_label_text_font_size = "10px"
    p.xaxis.axis_label, p.yaxis.axis_label = "input token", "generated token"
    return p, source, marker


class GenerationView(bundle.MainThreadViews, View):
    """Heat map of a GenerationResult plus a token strip of the focused generated token.

    result: a GenerationResult, or None for a view that :meth:`start` fills row by row.
    """

    view_type = "generation"
    #: the display bundle carries the v1 JSON (``to_dict``), not the v2 payload (no generation kind there yet)
    payload_v2 = False

    def __init__(self, result=None, *, state: LinkedState | None = None, width: int = 900,
                 schedule: Callable[[Callable[[], None]], Any] | None = None):
        super().__init__(result, state=state)
        self.width, self.focus = width, self._last_row(result)
        self.strip = TokenStrip(result.row(self.focus), width=width) if self.focus >= 0 else None
        self.status, self.errors = "", []
        self._source = self._marker = None
        self._thread: threading.Thread | None = None
        self._run = 0  # bumped by start() and cancel(): a stale worker's callback returns False
        self._schedule, self._pending = schedule, collections.deque()

    @staticmethod
    def _last_row(result) -> int:
        if result is None:
            return -1
        done = int((result.options or {}).get("rows_done", len(result.generated)))
        return min(done, len(result.generated)) - 1

    # actions -----------------------------------------------------------------
    def select_row(self, t: int) -> None:
        """Focus generated token ``t``: outline its row and show its attribution in the strip."""
        T = len(self.result.generated)
        if not 0 <= t < T:
            raise IndexError(f"generated token {t} out of range 0..{T - 1}")
        self.focus = int(t)
        row = self.result.row(self.focus)
        if self.strip is None:
            self.strip = TokenStrip(row, width=self.width)
        else:
            self.strip.update(row)
        if self._marker is not None:
            self._marker.data = {"y": [self.focus]}
            if self._strip_box.children != (self.strip.widget,):
                self._strip_box.children = [self.strip.widget]

    def update(self, result) -> None:
        """Show a newer (or final) result; the focus follows the last finished row unless the user moved it."""
        with self._lock:
            follow = self.result is None or self.focus == self._last_row(self.result)
            self.result = result
            if self._plot_box is not None and (self._source is None or len(result.generated) != len(self._rows)):
                self._mount_figure()
            elif self._source is not None:
                scale = core.symmetric_scale(result.matrix[np.isfinite(result.matrix)])
                self._source.data = matrix_data(result, scale)
            last = self._last_row(result)
            if last >= 0 and (follow or self.focus > last):
                self.select_row(last)

    # streaming -----------------------------------------------------------------
    def start(self, ex, prompt: str, *, background: bool = True, **kwargs) -> "GenerationView":
        """Run ``ex.attribute_generation(prompt, **kwargs)`` and show each row when it is done."""
        with self._lock:
            self._run += 1
            run = self._run
        self.errors, self.status = [], "generating..."
        self._set_status()

        def callback(partial) -> bool:
            if run != self._run:
                return False  # cancelled, or a newer start(): stop after this row
            self._on_main(lambda: self._show(run, partial, f"{partial.options['rows_done']} of "
                                                           f"{len(partial.generated)} tokens..."))
            return True

        def work() -> None:
            try:
                final = ex.attribute_generation(prompt, callback=callback, **kwargs)
                self._on_main(lambda: self._show(run, final, "done"))
            except Exception as error:  # shown, never raised on the worker thread
                cancelled = type(error).__name__ == "Cancelled"
                self.errors.append("" if cancelled else str(error))
                status = "cancelled" if cancelled else f"error: {error}"  # bound now: `error` is unset after except
                self._on_main(lambda: self._say(run, status))

        if background:
            self._thread = threading.Thread(target=work, daemon=True, name=f"xattr-generation-{run}")
            self._thread.start()
        else:
            work()
        return self

    def cancel(self) -> None:
        """Stop the running computation after the row in progress."""
        with self._lock:
            self._run += 1
        self.status = "cancelled"
        self._set_status()

    def wait(self, timeout: float | None = 120) -> None:
        """Block until the worker is done, then show what it handed over (main thread)."""
        if self._thread is not None:
            self._thread.join(timeout)
        if threading.current_thread() is threading.main_thread():
            self._drain()

    def _show(self, run: int, result, status: str) -> None:
        if run == self._run:
            self.update(result)
            self._say(run, status)

    def _say(self, run: int, status: str) -> None:
        if run == self._run:
            self.status = status
            self._set_status()

    # widget -----------------------------------------------------------------
    _plot_box = None

    def _build(self):
        import ipywidgets as w

        self._header = html_widget(self.header_html())
        self._status = html_widget(core.escape(self.status))
        stop = w.Button(description="cancel", layout=w.Layout(width="70px"), tooltip="stop after the current row")
        stop.on_click(lambda _: self.cancel())
        fit = {"display": "block", "max_width": "100%"}  # children as wide as the cell, no wider
        self._plot_box, self._strip_box = w.Box([], layout=fit), w.Box([], layout=fit)
        if self.result is not None:
            self._mount_figure()
        box = w.VBox([self._header, w.HBox([stop, self._status]), self._plot_box, self._strip_box],
                     layout={"max_width": "100%"})
        box.add_class("xattr-view")
        box.add_class("xattr-generation")
        return box

    def _mount_figure(self) -> None:
        fig, self._source, self._marker = generation_figure(self.result, focus=self.focus, width=self.width,
                                                            stretch=True)
        self._rows = list(self.result.generated)
        self._on_tap(self._source, lambda i: self.select_row(self._source.data["y"][i]))
        self._plot_box.children = [bokeh_widget(fig, layout={"max_width": "100%"})]
        self._header.value = self.header_html()
        if self.strip is not None:
            self._strip_box.children = [self.strip.widget]

    def _set_status(self) -> None:
        if self._widget is not None:
            self._status.value = core.escape(self.status)

    def header_html(self) -> str:
        r = self.result
        if r is None:
            return "<b>generation</b>"
        mode = (r.options or {}).get("mode", "")
        return (f"<b>{core.escape(r.method)}</b> for each generated token ({core.escape(mode)}) &middot; model "
                f"<code>{core.escape(r.model)}</code> &middot; <code>{core.escape(''.join(r.generated))}</code>")

    # exports -----------------------------------------------------------------
    def export_models(self) -> list:
        from bokeh.models import Div

        if self.result is None:
            raise ValueError("nothing computed yet: call start() (and wait()) first")
        fig, _, _ = generation_figure(self.result, focus=self.focus, width=self.width)
        return [Div(text=self.header_html()), fig] + (self.strip.export_models() if self.strip is not None else [])

    def png_figure(self):
        """The heat map (matplotlib): rows generated tokens, columns inputs, NaN cells grey."""
        from .. import export

        if self.result is None:
            raise ValueError("nothing computed yet: call start() (and wait()) first")
        M = self.result.matrix
        T, n = M.shape
        fig = export.new_figure(max(5.0, min(2.5 + 0.28 * n, 16)), 1.8 + 0.28 * max(T, 1))
        ax = fig.add_axes((0.2, 0.32, 0.77, 0.6))
        scale = core.symmetric_scale(M[np.isfinite(M)])
        colours = [[core.colour_for(v, -scale, scale) if np.isfinite(v) else core.NAN_COLOUR
                    for v in row] for row in M]
        ax.imshow([[export.hex_to_rgb(c) for c in row] for row in colours], aspect="auto")
        ax.set_xticks(range(n), [core.shorten(t, 10) for t in core.pretty_tokens(self.result.tokens)], rotation=90,
                      fontsize=7, family="monospace")
        ax.set_yticks(range(T), [core.shorten(core.pretty_token(g), 10) for g in self.result.generated], fontsize=7,
                      family="monospace")
        fig.text(0.01, 0.02, export.plain_text(self.header_html()), fontsize=8, parse_math=False)
        return fig

    def _repr_mimebundle_(self, include=None, exclude=None):
        return mime_bundle(self)

    def to_dict(self) -> dict:
        payload = self.result.to_dict() if self.result is not None else {"kind": "generation"}
        payload["view"] = {"type": self.view_type, "selection": {"row": self.focus}}
        return payload


def mime_bundle(view: GenerationView, widget: bool | None = None) -> dict:
    """The display bundle: the live widget in a kernel, the v1 JSON, a PNG and the text."""
    result = view.result
    out: dict = {"text/plain": repr(result)}
    if bundle.in_kernel() if widget is None else widget:
        out[bundle.WIDGET_MIME] = bundle.widget_entry(view.widget)
    if result is not None:
        out[MIME_TYPE] = result.to_dict()
        try:
            out["image/png"] = __import__("base64").b64encode(view.png_bytes()).decode("ascii")
        except Exception as error:  # never lose the other representations to a drawing problem
            out["text/plain"] += f"\n(PNG rendering failed: {error})"
    return out
