"""Linked notebook views of xattr results (ipywidgets layout + Bokeh figures via jupyter_bokeh).

Each view holds a result, a :class:`LinkedState` (shared between views that should move together)
and builds its ipywidgets tree lazily (``view.widget``). Bokeh taps call the same Python methods a
test or a user can call directly: ``select_token``, ``select_input``, ``select_output``,
``select_head``, ``select_layer``, ``set_statistic``.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Callable, Sequence

import numpy as np
import traitlets

from . import core

__all__ = ["LinkedState", "View", "TokenStrip", "FlowView", "HeadGrid", "CircuitView"]


class LinkedState(traitlets.HasTraits):
    """What is selected, shared by linked views. -1 / (-1, -1) means nothing."""

    token = traitlets.Int(-1)  # input token position
    output = traitlets.Int(-1)  # top-layer (readout) position chosen in a flow view
    head = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(-1, -1))
    layer = traitlets.Int(-1)
    statistic = traitlets.Unicode("")


def _html(parts: str) -> Any:
    import ipywidgets as w

    return w.HTML(value=parts)


def _bokeh(model) -> Any:
    from jupyter_bokeh import BokehModel

    return BokehModel(model)


class View:
    """Base class: a result, its linked state, a lazily built widget, and exports."""

    view_type = "view"

    def __init__(self, result, *, state: LinkedState | None = None):
        self.result = result
        self.state = state if state is not None else LinkedState()
        self._widget = None
        self._syncing = False
        self._shown_at: Any = None
        self._lock = threading.RLock()
        self._observers: list[tuple[Callable, str]] = []

    def _observe(self, handler: Callable, name: str) -> None:
        self.state.observe(handler, names=name)
        self._observers.append((handler, name))

    def close(self) -> None:
        """Stop following the linked state and close the widget."""
        for handler, name in self._observers:
            self.state.unobserve(handler, names=name)
        self._observers.clear()
        if self._widget is not None:
            self._widget.close()

    # -------------------------------------------------------------- widget
    @property
    def widget(self):
        """The ipywidgets tree (built on first access)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def model_id(self) -> str | None:
        return getattr(self.widget, "model_id", None)

    def _on_tap(self, source, handler: Callable[[int], None]) -> None:
        """Call handler(row) when a glyph of ``source`` is tapped (ignores our own syncing and repeats)."""

        def callback(attr, old, new):
            if self._syncing or not new:
                return
            handler(int(new[0]))

        source.selected.on_change("indices", callback)

    def _set_selected(self, source, rows: Sequence[int]) -> None:
        self._syncing = True
        try:
            source.selected.indices = list(rows)
        finally:
            self._syncing = False

    # -------------------------------------------------------------- exports
    def selection(self) -> dict:
        s = self.state
        return {"token": s.token, "output": s.output, "head": list(s.head), "layer": s.layer, "statistic": s.statistic}

    def to_dict(self) -> dict:
        """The result's JSON payload plus ``"view"``: this view's type and selection."""
        payload = self.result.to_dict()
        payload["view"] = {"type": self.view_type, "selection": self.selection()}
        return payload

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def export_models(self) -> list:
        """Fresh Bokeh models (with the current selection drawn) for static export."""
        raise NotImplementedError

    def header_html(self) -> str:
        return ""

    def to_html(self, path) -> str:
        """Write a self-contained HTML page (BokehJS inlined, no CDN, escaped data); returns the path."""
        from .export import write_html

        return write_html(self, path)

    def to_png(self, path) -> str:
        """Write a PNG rendering (matplotlib, no browser); returns the path."""
        from .export import write_png

        return write_png(self, path)

    def png_bytes(self) -> bytes:
        from .export import png_bytes

        return png_bytes(self)

    # -------------------------------------------------------------- display
    def _repr_mimebundle_(self, include=None, exclude=None):
        from .bundle import mime_bundle

        return mime_bundle(self.result, view=self)

    def _ipython_display_(self):
        # Shown at most once per cell, so `widgets.view(r)` (which displays itself) as the last
        # expression of a cell does not show twice.
        from IPython import get_ipython
        from IPython.display import display

        ip = get_ipython()
        count = getattr(ip, "execution_count", None)
        if count is not None and self._shown_at == count:
            return
        self._shown_at = count
        display(self._repr_mimebundle_(), raw=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.result!r})"


def _prediction_html(prediction: dict) -> str:
    items = sorted(prediction.items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{core.escape(k)} {v:.3f}" for k, v in items)


# ============================================================================ token strip
class TokenStrip(View):
    """Tokens coloured by signed score (diverging palette, colour bar, hover with the exact value).

    Click a token to select it (``state.token``). Long inputs wrap into rows and are paged
    (``page_size`` tokens per page).
    """

    view_type = "token_strip"

    def __init__(self, result, *, state: LinkedState | None = None, page_size: int = 300, width: int = 900):
        super().__init__(result, state=state)
        self.page_size = page_size
        self.width = width
        self.page = 0
        self._source = None
        self._observe(self._on_state_token, "token")

    # data -----------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        return list(self.result.tokens)

    @property
    def scores(self) -> np.ndarray:
        return np.asarray(self.result.scores, dtype=np.float64)

    @property
    def raw(self) -> np.ndarray:
        raw = getattr(self.result, "raw", None)
        return self.scores if raw is None else np.asarray(raw, dtype=np.float64)

    @property
    def n_pages(self) -> int:
        return len(core.pages(len(self.tokens), self.page_size))

    def page_rows(self, page: int | None = None) -> range:
        return core.pages(len(self.tokens), self.page_size)[self.page if page is None else page]

    def _page_data(self) -> dict:
        from .figures import strip_data

        rows = self.page_rows()
        labels = core.pretty_tokens([self.tokens[i] for i in rows])
        return strip_data(labels, self.scores[rows.start:rows.stop], self.raw[rows.start:rows.stop], list(rows),
                          core.symmetric_scale(self.scores), self.width)

    def _figure(self):
        from .figures import token_strip_figure

        rows = self.page_rows()
        labels = core.pretty_tokens([self.tokens[i] for i in rows])
        return token_strip_figure(labels, self.scores[rows.start:rows.stop], self.raw[rows.start:rows.stop],
                                  list(rows), scale=core.symmetric_scale(self.scores), width=self.width)

    def header_html(self) -> str:
        r = self.result
        target = getattr(r, "target_label", "") or getattr(r, "target", "")
        parts = [f"<b>{core.escape(getattr(r, 'method', '') or 'scores')}</b>"]
        if target not in ("", None):
            parts.append(f"target <code>{core.escape(target)}</code>")
        if getattr(r, "model", ""):
            parts.append(f"model <code>{core.escape(r.model)}</code>")
        if getattr(r, "prediction", None):
            parts.append(f"prediction: {_prediction_html(r.prediction)}")
        return " &middot; ".join(parts)

    def _build(self):
        import ipywidgets as w

        fig, self._source, _ = self._figure()
        self._fig = fig
        self._on_tap(self._source, lambda row: self.select_token(self._source.data["index"][row]))
        self._header = _html(self.header_html())
        self._info = _html(self._info_html())
        self._pager_label = w.Label(self._pager_text())
        prev_button = w.Button(description="\u25c0", layout=w.Layout(width="40px"), tooltip="previous page")
        next_button = w.Button(description="\u25b6", layout=w.Layout(width="40px"), tooltip="next page")
        prev_button.on_click(lambda _: self.set_page(self.page - 1))
        next_button.on_click(lambda _: self.set_page(self.page + 1))
        self._pager = w.HBox([prev_button, self._pager_label, next_button],
                             layout=w.Layout(display="flex" if self.n_pages > 1 else "none"))
        self._plot = _bokeh(fig)
        box = w.VBox([self._header, self._pager, self._plot, self._info])
        box.add_class("xattr-view")
        box.add_class("xattr-token-strip")
        return box

    def _pager_text(self) -> str:
        rows = self.page_rows()
        return f"page {self.page + 1}/{self.n_pages} (tokens {rows.start}-{max(rows.stop - 1, rows.start)})"

    def _info_html(self) -> str:
        i = self.state.token
        if not 0 <= i < len(self.tokens):
            return "<i>click a token for its exact score</i>"
        return (f"token {i} <code>{core.escape(self.tokens[i])}</code>: score {self.scores[i]:+.6g}"
                f" (raw {self.raw[i]:+.6g})")

    # actions -----------------------------------------------------------------
    def set_page(self, page: int) -> None:
        page = int(np.clip(page, 0, self.n_pages - 1))
        if page == self.page and self._source is not None and self._source.data.get("index"):
            return
        self.page = page
        if self._source is not None:
            self._source.data = self._page_data()
            self._pager_label.value = self._pager_text()
            self._sync_selection()

    def select_token(self, index: int) -> None:
        """Select token ``index`` (global position); updates the linked state."""
        index = int(index)
        if not 0 <= index < len(self.tokens):
            raise IndexError(f"token {index} out of range 0..{len(self.tokens) - 1}")
        self.state.token = index

    def update(self, result) -> None:
        """Show a new result (same view, same widget): new tokens and/or scores."""
        with self._lock:
            self.result = result
            if self._source is None:
                return
            self.page = min(self.page, self.n_pages - 1)
            self._source.data = self._page_data()
            self._header.value = self.header_html()
            self._info.value = self._info_html()
            self._pager_label.value = self._pager_text()
            self._pager.layout.display = "flex" if self.n_pages > 1 else "none"
            self._sync_selection()

    def _on_state_token(self, change) -> None:
        if self._source is None:
            return
        i = change["new"]
        if 0 <= i < len(self.tokens):
            target_page = i // self.page_size
            if target_page != self.page:
                self.set_page(target_page)
        self._sync_selection()
        self._info.value = self._info_html()

    def _sync_selection(self) -> None:
        i = self.state.token
        rows = self.page_rows()
        self._set_selected(self._source, [i - rows.start] if i in rows else [])

    def export_models(self) -> list:
        from bokeh.models import Div

        from .figures import token_strip_figure

        labels = core.pretty_tokens(self.tokens)
        fig, source, _ = token_strip_figure(labels, self.scores, self.raw, scale=core.symmetric_scale(self.scores),
                                            width=self.width)
        if 0 <= self.state.token < len(self.tokens):
            source.selected.indices = [self.state.token]
        return [Div(text=self.header_html()), fig]


# ============================================================================ flow view
class FlowView(View):
    """Layered flow graph of a :class:`FlowResult` (columns = layers, rows = tokens).

    Click an input token (left column) to highlight the paths that carry its flow and to plot the
    throughput of its position per layer; click an output token (right column) to re-target: with
    ``retarget`` (a callable position -> FlowResult, as the Explorer provides) the flow is
    recomputed, otherwise the paths leaving that position are highlighted.
    """

    view_type = "flow"

    def __init__(self, result, *, state: LinkedState | None = None, max_edges: int = 400,
                 retarget: Callable[[int], Any] | None = None):
        super().__init__(result, state=state)
        self.max_edges = max_edges
        self.retarget = retarget
        self._nodes = None
        self.highlight: dict = {}
        self._observe(self._on_state_token, "token")
        self._observe(self._on_state_output, "output")

    @property
    def tokens(self) -> list[str]:
        return list(self.result.tokens)

    @property
    def edge_flow(self) -> np.ndarray:
        return np.nan_to_num(np.asarray(self.result.edge_flow, dtype=np.float64))

    @property
    def n_layers(self) -> int:
        return self.edge_flow.shape[0]

    @property
    def node_flow(self) -> np.ndarray:
        nf = getattr(self.result, "node_flow", None)
        if nf is not None and np.asarray(nf).shape == (self.n_layers + 1, len(self.tokens)):
            return np.nan_to_num(np.asarray(nf, dtype=np.float64))
        return core.node_throughput(self.edge_flow)

    def _figures(self):
        from .figures import flow_figure, throughput_figure

        fig, nodes, edges, highlight, _ = flow_figure(core.pretty_tokens(self.tokens), self.edge_flow, self.node_flow,
                                                      self.result.attributions, max_edges=self.max_edges,
                                                      sources=getattr(self.result, "sources", []) or [])
        tfig, tsource = throughput_figure(np.zeros(self.n_layers + 1), title="throughput per layer")
        return fig, nodes, edges, highlight, tfig, tsource

    def header_html(self) -> str:
        r = self.result
        parts = [f"<b>flow ({core.escape(r.info)})</b>", f"value {r.value:.6g}"]
        sources = list(getattr(r, "sources", []) or [])
        if len(sources) == 1 and 0 <= sources[0] < len(r.tokens):
            parts.append(f"from <code>{core.escape(r.tokens[sources[0]])}</code> (position {sources[0]})")
        elif sources:
            parts.append(f"from {len(sources)} positions")
        if not r.value > 0:
            parts.append("<i>no flow reaches the inputs from here (a classifier's target is read at its readout "
                         "token only)</i>")
        target = r.target_label or r.target
        if target not in ("", None):
            parts.append(f"target <code>{core.escape(target)}</code>")
        if r.prediction:
            parts.append(f"prediction: {_prediction_html(r.prediction)}")
        return " &middot; ".join(parts)

    def _build(self):
        import ipywidgets as w

        fig, self._nodes, self._edges, self._highlight, tfig, self._throughput = self._figures()
        self._on_tap(self._nodes, self._tapped_node)
        self._header = _html(self.header_html())
        self._info = _html("<i>click an input token (left) for its paths, an output token (right) to re-target</i>")
        self._progress = w.Label("")
        self._plot = _bokeh(fig)
        self._tplot = _bokeh(tfig)
        box = w.VBox([self._header, w.HBox([self._plot, w.VBox([self._tplot, self._info, self._progress])])])
        box.add_class("xattr-view")
        box.add_class("xattr-flow")
        return box

    def _tapped_node(self, row: int) -> None:
        layer = int(self._nodes.data["layer"][row])
        index = int(self._nodes.data["index"][row])
        if layer == 0:
            self.select_input(index)
        elif layer == self.n_layers:
            self.select_output(index)
        else:
            self.select_node(layer, index)

    # actions -----------------------------------------------------------------
    def select_input(self, j: int) -> None:
        """Highlight the flow reaching input token ``j`` and plot position j's throughput per layer."""
        if not 0 <= int(j) < len(self.tokens):
            raise IndexError(f"token {j} out of range")
        if self.state.token == int(j):
            self._show_input(int(j))
        self.state.token = int(j)

    def select_output(self, i: int) -> None:
        """Re-target to top-layer position ``i`` (recompute with ``retarget``, else highlight its paths)."""
        if not 0 <= int(i) < len(self.tokens):
            raise IndexError(f"token {i} out of range")
        if self.state.output == int(i):
            self._show_output(int(i))
        self.state.output = int(i)

    def select_node(self, layer: int, i: int) -> None:
        """Highlight the edges entering and leaving node (layer, i)."""
        E = self.edge_flow
        carried = np.zeros_like(E)
        if layer < self.n_layers:
            carried[layer, :, i] = E[layer, :, i]
        if layer > 0:
            carried[layer - 1, i, :] = E[layer - 1, i, :]
        self._draw_highlight(carried, f"edges through <code>{core.escape(self.tokens[i])}</code> at layer {layer}")

    def _on_state_token(self, change) -> None:
        if 0 <= change["new"] < len(self.tokens):
            self._show_input(change["new"])

    def _on_state_output(self, change) -> None:
        if 0 <= change["new"] < len(self.tokens):
            self._show_output(change["new"])

    def _show_input(self, j: int) -> None:
        carried = core.flow_to_input(self.edge_flow, j)
        total = float(np.nan_to_num(self.result.attributions[j]))
        value = max(abs(self.result.value), 1e-300)
        self._draw_highlight(carried, f"flow into <code>{core.escape(self.tokens[j])}</code> (position {j}): "
                                      f"{total:.6g} = {100 * total / value:.1f}% of {self.result.value:.6g}",
                             throughput=self.node_flow[:, j], kind="input", position=j)

    def _show_output(self, i: int) -> None:
        if self.retarget is not None:
            if self._nodes is not None:
                self._progress.value = f"recomputing flow for output position {i}..."
            self.retarget(i)
            return
        carried = core.flow_from_output(self.edge_flow, i)
        self._draw_highlight(carried, f"flow leaving output <code>{core.escape(self.tokens[i])}</code> (position {i})",
                             throughput=self.node_flow[:, i], kind="output", position=i)

    def _draw_highlight(self, carried: np.ndarray, message: str, throughput=None, kind="node", position=-1) -> None:
        from .figures import flow_edge_data

        peak = float(self.edge_flow.max()) if self.edge_flow.size else 1.0
        data = flow_edge_data(carried, self.max_edges, peak=peak, max_width=9.0)
        self.highlight = {"kind": kind, "position": position, "edges": len(data["flow"]),
                          "carried": float(carried[0].sum()) if len(carried) else 0.0}
        if self._nodes is None:
            return
        with self._lock:
            self._highlight.data = data
            self._info.value = message
            if throughput is not None:
                self._throughput.data = {"layer": list(range(len(throughput))),
                                         "value": np.nan_to_num(np.asarray(throughput, float)).tolist()}
            if kind in ("input", "output"):
                layer = 0 if kind == "input" else self.n_layers
                self._set_selected(self._nodes, [layer * len(self.tokens) + position])

    def update(self, result) -> None:
        """Show a new FlowResult in place (e.g. after re-targeting)."""
        from .figures import flow_edge_data, flow_node_data

        with self._lock:
            self.result = result
            if self._nodes is None:
                return
            self._nodes.data = flow_node_data(core.pretty_tokens(self.tokens), self.node_flow,
                                              self.result.attributions, getattr(result, "sources", []) or [])
            self._edges.data = flow_edge_data(self.edge_flow, self.max_edges)
            self._highlight.data = {k: [] for k in self._highlight.data}
            self._header.value = self.header_html()
            self._progress.value = ""
        if 0 <= self.state.token < len(self.tokens):
            self._show_input(self.state.token)

    def export_models(self) -> list:
        from bokeh.layouts import row
        from bokeh.models import Div

        fig, nodes, edges, highlight, tfig, tsource = self._figures()
        j = self.state.token
        if 0 <= j < len(self.tokens):
            from .figures import flow_edge_data

            highlight.data = flow_edge_data(core.flow_to_input(self.edge_flow, j), self.max_edges,
                                            peak=float(self.edge_flow.max()), max_width=9.0)
            tsource.data = {"layer": list(range(self.n_layers + 1)), "value": self.node_flow[:, j].tolist()}
        return [Div(text=self.header_html()), row(fig, tfig)]


# ============================================================================ head grid
class HeadGrid(View):
    """L x H grid of heads coloured by a chosen statistic.

    Statistics come from the result (HeadStats: entropy, pattern; CircuitResult: circuit node
    score, ablation effect when present) plus ``extra`` ({name: (L, H) array}). Click a cell for
    that head's attention matrix (needs ``attentions``) and, for circuits, its codes in positives
    vs negatives; click a layer label for the layer's rollout and cone index.
    """

    view_type = "heads"

    def __init__(self, result, *, state: LinkedState | None = None, extra: dict | None = None,
                 attentions: np.ndarray | None = None, tokens: Sequence[str] | None = None):
        super().__init__(result, state=state)
        self.extra = dict(extra or {})
        self._attentions = attentions
        self._tokens = tokens
        self._cells = None
        self.detail: dict = {}
        self.statistics = self._statistics()
        if self.state.statistic not in self.statistics:
            self.state.statistic = next(iter(self.statistics))
        self._observe(self._on_state_statistic, "statistic")
        self._observe(self._on_state_head, "head")
        self._observe(self._on_state_layer, "layer")

    # data -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        r = self.result
        if hasattr(r, "entropy"):
            return tuple(np.asarray(r.entropy).shape)  # type: ignore[return-value]
        return tuple(np.asarray(r.node_scores).shape)  # type: ignore[return-value]

    @property
    def attentions(self) -> np.ndarray | None:
        a = self._attentions if self._attentions is not None else getattr(self.result, "attentions", None)
        return None if a is None else np.asarray(a, dtype=np.float64)

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens if self._tokens is not None else getattr(self.result, "tokens", []) or [])

    def _statistics(self) -> dict:
        """name -> {"values": (L, H) float, "labels": L x H strings, "categorical": bool}."""
        r = self.result
        stats: dict[str, dict] = {}

        def numeric(name, values, fmt="{:.2f}"):
            values = np.asarray(values, dtype=np.float64)
            stats[name] = {"values": values, "categorical": False,
                           "labels": [[("" if not np.isfinite(v) else fmt.format(v)) for v in row] for row in values]}

        if getattr(r, "node_scores", None) is not None:
            numeric("circuit node score", r.node_scores, "{:.0f}")
        if getattr(r, "difference_scores", None) is not None:  # circuits.mean_difference_scores
            numeric("class-mean difference", r.difference_scores, "{:.2g}")
        for name in ("ablation", "ablation_effect"):
            if getattr(r, name, None) is not None:
                numeric("ablation effect", getattr(r, name), "{:.3f}")
        if getattr(r, "entropy", None) is not None:
            numeric("entropy", r.entropy)
        patterns = getattr(r, "patterns", None)
        if patterns:
            categories = sorted({p for row in patterns for p in row})
            codes = np.array([[categories.index(p) for p in row] for row in patterns], dtype=np.float64)
            stats["pattern"] = {"values": codes, "categorical": True, "categories": categories,
                                "labels": [[str(p)[:6] for p in row] for row in patterns]}
        if getattr(r, "truth", None) is not None and len(r.truth):
            given = np.asarray(r.truth)
            if given.shape == self.shape:  # (L, H) 0/1 mask, as circuits.discover stores it
                truth = given.astype(np.float64)
            else:  # a list of (layer, head) pairs
                truth = np.zeros(self.shape)
                for l, h in given.reshape(-1, 2):
                    truth[int(l), int(h)] = 1.0
            numeric("ground truth", truth, "{:.0f}")
        for name, values in self.extra.items():
            numeric(name, values, "{:.3g}")
        if not stats:
            raise ValueError("this result has no per-head statistic to show")
        return stats

    def _colours(self, name: str):
        stat = self.statistics[name]
        values = stat["values"]
        if stat["categorical"]:
            return [[core.CATEGORICAL[int(v) % len(core.CATEGORICAL)] for v in row] for row in values], None, 0, 1
        finite = values[np.isfinite(values)]
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 1.0
        if low < 0 < high:
            scale = max(-low, high)
            return ([[core.colour_for(v, -scale, scale) for v in row] for row in values], core.DIVERGING, -scale, scale)
        return ([[core.colour_for(v, low, high if high > low else low + 1, core.SEQUENTIAL) for v in row]
                 for row in values], core.SEQUENTIAL, low, high)

    def _grid_figure(self):
        from .figures import head_grid_figure

        name = self.state.statistic
        colours, palette, low, high = self._colours(name)
        stat = self.statistics[name]
        return head_grid_figure(stat["values"], colours, stat["labels"], title=name, palette=palette, low=low,
                                high=high)

    def _legend_html(self) -> str:
        stat = self.statistics[self.state.statistic]
        if not stat["categorical"]:
            return ""
        return " ".join(
            f'<span style="background:{core.CATEGORICAL[i % len(core.CATEGORICAL)]};padding:1px 5px;'
            f'border-radius:3px">{core.escape(c)}</span>' for i, c in enumerate(stat["categories"]))

    def header_html(self) -> str:
        r = self.result
        L, H = self.shape
        parts = [f"<b>heads</b> {L} layers &times; {H} heads"]
        if getattr(r, "model", ""):
            parts.append(f"model <code>{core.escape(r.model)}</code>")
        texts = getattr(r, "texts", None)
        if texts:
            parts.append(f"{len(texts)} text(s)")
        return " &middot; ".join(parts)

    def _build(self):
        import ipywidgets as w

        fig, self._cells, self._layers, _, _ = self._grid_figure()
        self._on_tap(self._cells, lambda row: self.select_head(self._cells.data["layer"][row],
                                                               self._cells.data["head"][row]))
        self._on_tap(self._layers, lambda row: self.select_layer(self._layers.data["layer"][row]))
        self._stat_picker = w.Dropdown(options=list(self.statistics), value=self.state.statistic,
                                       description="colour by")
        self._stat_picker.observe(lambda ch: self.set_statistic(ch["new"]), names="value")
        self._legend = _html(self._legend_html())
        self._header = _html(self.header_html())
        self._plot = _bokeh(fig)
        self._fig = fig
        self._detail_title = _html("<i>click a head for its attention matrix, a layer label for its rollout</i>")
        self._matrix_box = w.Box([])
        self._matrix = None  # (figure, source, BokehModel) reused while n is the same
        self._extra_detail = _html("")
        detail = w.VBox([self._detail_title, self._matrix_box, self._extra_detail])
        box = w.VBox([self._header, w.HBox([self._stat_picker]), self._legend,
                      w.HBox([self._plot, detail])])
        box.add_class("xattr-view")
        box.add_class("xattr-head-grid")
        return box

    # actions -----------------------------------------------------------------
    def set_statistic(self, name: str) -> None:
        if name not in self.statistics:
            raise KeyError(f"unknown statistic {name!r}; choose one of {list(self.statistics)}")
        self.state.statistic = name

    def select_head(self, layer: int, head: int) -> None:
        L, H = self.shape
        if not (0 <= int(layer) < L and 0 <= int(head) < H):
            raise IndexError(f"head {layer}.{head} out of range for {L} x {H}")
        if tuple(self.state.head) == (int(layer), int(head)):
            self._show_head(int(layer), int(head))
        self.state.head = (int(layer), int(head))

    def select_layer(self, layer: int) -> None:
        if not 0 <= int(layer) < self.shape[0]:
            raise IndexError(f"layer {layer} out of range")
        if self.state.layer == int(layer):
            self._show_layer(int(layer))
        self.state.layer = int(layer)

    def _on_state_statistic(self, change) -> None:
        if change["new"] not in self.statistics or self._cells is None:
            return
        from .figures import grid_data

        colours, palette, low, high = self._colours(change["new"])
        stat = self.statistics[change["new"]]
        with self._lock:
            self._cells.data = grid_data(stat["values"], colours, stat["labels"])
            self._fig.title.text = change["new"]
            self._legend.value = self._legend_html()
            if self._stat_picker.value != change["new"]:
                self._stat_picker.value = change["new"]

    def _on_state_head(self, change) -> None:
        layer, head = change["new"]
        if layer >= 0:
            self._show_head(layer, head)

    def _on_state_layer(self, change) -> None:
        if change["new"] >= 0:
            self._show_layer(change["new"])

    def head_codes(self, layer: int, head: int) -> dict | None:
        """For circuits: the head's codes in positives and negatives, and which are positive-only."""
        r = self.result
        if getattr(r, "codes_positive", None) is None:
            return None
        flat = layer * self.shape[1] + head
        pos = np.asarray(r.codes_positive)[:, flat]
        neg = np.asarray(r.codes_negative)[:, flat]
        pos = [int(c) for c in pos if np.isfinite(c)]
        neg = [int(c) for c in neg if np.isfinite(c)]
        unique = sorted(set(pos) - set(neg))
        silent = (getattr(r, "options", None) or {}).get("features")  # circuits.codes: no feature fired
        return {"positive": pos, "negative": neg, "unique": unique, "silent": silent}

    def _codes_html(self, layer: int, head: int) -> str:
        codes = self.head_codes(layer, head)
        if codes is None:
            return ""
        r = self.result
        unique = set(codes["unique"])

        def label(c: int) -> str:
            return "silent" if c == codes["silent"] else str(c)

        rows = []
        for k in range(max(len(codes["positive"]), len(codes["negative"]))):
            p = codes["positive"][k] if k < len(codes["positive"]) else None
            q = codes["negative"][k] if k < len(codes["negative"]) else None
            ptext = (r.positive[k] if k < len(r.positive) else "") if getattr(r, "positive", None) else ""
            qtext = (r.negative[k] if k < len(r.negative) else "") if getattr(r, "negative", None) else ""
            pcell = "" if p is None else (f"<b>{label(p)}</b>" if p in unique else label(p))
            rows.append(f"<tr><td>{k}</td><td>{pcell}</td><td title=\"{core.escape(ptext)}\">{core.escape(ptext[:40])}</td>"
                        f"<td>{'' if q is None else label(q)}</td><td title=\"{core.escape(qtext)}\">{core.escape(qtext[:40])}</td></tr>")
        return (f"<div class='xattr-codes'><b>codes of head {layer}.{head}</b> (bold: seen only in positives; "
                f"{len(unique)} unique)<table><tr><th>#</th><th>pos code</th><th>positive</th><th>neg code</th>"
                f"<th>negative</th></tr>{''.join(rows)}</table></div>")

    def _show_matrix(self, matrix: np.ndarray, title: str) -> None:
        from .figures import matrix_figure

        labels = core.pretty_tokens(self.tokens) if len(self.tokens) == matrix.shape[0] else [str(i) for i in range(matrix.shape[0])]
        if self._matrix is not None and self._matrix[3] == matrix.shape[0]:
            fig, source, _, _ = self._matrix
            if "image" in source.data:
                source.data = dict(source.data, image=[matrix])
                fig.select_one({"type": _color_mapper_type()}).high = max(float(matrix.max()), 1e-12)
            else:
                peak = max(float(np.nanmax(matrix)), 1e-12)
                flat = matrix.ravel()
                source.data = dict(source.data, value=flat.tolist(),
                                   colour=[core.colour_for(v, 0.0, peak, core.SEQUENTIAL) for v in flat])
            fig.title.text = title
            return
        fig, source = matrix_figure(matrix, labels, title=title)
        model = _bokeh(fig)
        self._matrix = (fig, source, model, matrix.shape[0])
        self._matrix_box.children = [model]

    def _show_head(self, layer: int, head: int) -> None:
        A = self.attentions
        message = f"<b>head {layer}.{head}</b>"
        name = self.state.statistic
        stat = self.statistics[name]
        message += f" &middot; {core.escape(name)}: {core.escape(stat['labels'][layer][head])}"
        self.detail = {"kind": "head", "layer": layer, "head": head, "has_matrix": A is not None,
                       "codes": self.head_codes(layer, head)}
        if self._cells is None:
            return
        with self._lock:
            self._detail_title.value = message
            if A is not None:
                self._show_matrix(A[layer, head], f"attention of head {layer}.{head}")
            elif self._matrix is None:
                self._detail_title.value = message + " <i>(no attention maps stored in this result)</i>"
            self._extra_detail.value = self._codes_html(layer, head)
            self._set_selected(self._cells, [layer * self.shape[1] + head])

    def layer_summary(self, layer: int) -> dict:
        r = self.result
        out: dict[str, Any] = {"layer": layer}
        cone = getattr(r, "cone_index", None)
        if cone is not None and len(cone) > layer + 1:
            out["cone_index_in"] = float(cone[layer])
            out["cone_index_out"] = float(cone[layer + 1])
        cone_n = getattr(r, "cone_index_normalised", None)
        if cone_n is not None and len(cone_n) > layer + 1:
            out["cone_index_out_normalised"] = float(cone_n[layer + 1])
        return out

    def _show_layer(self, layer: int) -> None:
        A = self.attentions
        summary = self.layer_summary(layer)
        self.detail = {"kind": "layer", **summary, "has_matrix": A is not None}
        if self._cells is None:
            return
        message = f"<b>layer {layer}</b>"
        if "cone_index_out" in summary:
            message += (f" &middot; cone index of its output {summary['cone_index_out']:.3f}"
                        f" (input {summary['cone_index_in']:.3f}")
            if "cone_index_out_normalised" in summary:
                message += f"; normalised {summary['cone_index_out_normalised']:.3f}"
            message += ")"
        with self._lock:
            self._detail_title.value = message
            if A is not None:
                self._show_matrix(core.rollout(A, layer), f"rollout through layer {layer} (residual 0.5)")
            self._extra_detail.value = ""
            self._set_selected(self._layers, [layer])

    def export_models(self) -> list:
        from bokeh.layouts import row
        from bokeh.models import Div

        from .figures import matrix_figure

        fig, cells, layers, _, _ = self._grid_figure()
        models = [Div(text=self.header_html()), Div(text=self._legend_html())]
        l, h = self.state.head
        A = self.attentions
        side = None
        if l >= 0:
            cells.selected.indices = [l * self.shape[1] + h]
            if A is not None:
                side, _ = matrix_figure(A[l, h], core.pretty_tokens(self.tokens), title=f"attention of head {l}.{h}")
        elif self.state.layer >= 0 and A is not None:
            side, _ = matrix_figure(core.rollout(A, self.state.layer), core.pretty_tokens(self.tokens),
                                    title=f"rollout through layer {self.state.layer}")
        models.append(row(fig, side) if side is not None else fig)
        if l >= 0 and self.head_codes(l, h) is not None:
            models.append(Div(text=self._codes_html(l, h)))
        return models


def _color_mapper_type():
    from bokeh.models import LinearColorMapper

    return LinearColorMapper


# ============================================================================ circuit view
class CircuitView(HeadGrid):
    """SAE circuit result: head grid of node scores, the top edges, the code table of a head."""

    view_type = "circuit"

    def __init__(self, result, *, state: LinkedState | None = None, top: int = 10, **kwargs):
        super().__init__(result, state=state, **kwargs)
        self.top = top

    def top_edges(self) -> list[tuple[str, str, float]]:
        H = self.shape[1]
        return [(core.head_label(a, H), core.head_label(b, H), v)
                for a, b, v in core.top_pairs(self.result.edge_scores, self.top)]

    def edges_html(self) -> str:
        rows = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{v:.0f}</td></tr>" for a, b, v in self.top_edges())
        metrics = ", ".join(f"{core.escape(k)} {v:.3f}" for k, v in (self.result.metrics or {}).items()
                            if isinstance(v, (int, float)))
        return (f"<div class='xattr-edges'><b>top edges</b>{' &middot; ' + metrics if metrics else ''}"
                f"<table><tr><th>head</th><th>head</th><th>score</th></tr>{rows}</table></div>")

    def header_html(self) -> str:
        r = self.result
        parts = [f"<b>circuit</b> {self.shape[0]} layers &times; {self.shape[1]} heads",
                 f"{len(r.positive) or len(r.codes_positive)} positives / {len(r.negative) or len(r.codes_negative)} negatives"]
        if r.model:
            parts.append(f"model <code>{core.escape(r.model)}</code>")
        return " &middot; ".join(parts)

    def _build(self):
        import ipywidgets as w

        box = super()._build()
        self._edges_panel = _html(self.edges_html())
        box.children = tuple(box.children) + (self._edges_panel,)
        box.add_class("xattr-circuit")
        return box

    def export_models(self) -> list:
        from bokeh.models import Div

        return super().export_models() + [Div(text=self.edges_html())]
