"""Flow view: the layered flow graph of a FlowResult, with paths per input and re-targeting."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import core, export
from .base import LinkedState, View, bokeh_widget, html_widget, prediction_html

__all__ = ["FlowView"]


class FlowView(View):
    """Layered flow graph of a :class:`FlowResult` (columns = layers, rows = tokens).

    Click an input token (left column) to highlight the paths that carry its flow and to plot the
    throughput of its position per layer; click an output token (right column) to re-target: with
    ``retarget`` (a callable position -> FlowResult, as the Explorer provides) the flow is
    recomputed, otherwise the paths leaving that position are highlighted. :meth:`update` redraws
    in place; a result with other layer or token counts (another model) gets a new graph.
    """

    view_type = "flow"

    def __init__(self, result, *, state: LinkedState | None = None, max_edges: int = core.EDGES_DRAWN,
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

    def _figures(self, stretch: bool = True):
        """Live (``stretch``: as wide as the cell) or export (fixed widths) figures."""
        from ..figures import flow_figure, throughput_figure

        fig, nodes, edges, highlight, _ = flow_figure(core.pretty_tokens(self.tokens), self.edge_flow, self.node_flow,
                                                      self.result.attributions, max_edges=self.max_edges,
                                                      sources=getattr(self.result, "sources", []) or [], stretch=stretch)
        tfig, tsource = throughput_figure(np.zeros(self.n_layers + 1), title="throughput per layer",
                                          total=self.result.value, stretch=stretch)
        return fig, nodes, edges, highlight, tfig, tsource

    def header_html(self) -> str:
        r = self.result
        parts = [f"<b>flow ({core.escape(r.info)})</b>", f"value {core.readable(r.value)}"]
        sources = list(getattr(r, "sources", []) or [])
        if len(sources) == 1 and 0 <= sources[0] < len(r.tokens):
            parts.append(f"from <code>{core.token_html(r.tokens[sources[0]])}</code> (position {sources[0]})")
        elif sources:
            parts.append(f"from {len(sources)} positions")
        if not r.value > 0:
            parts.append("<i>no flow reaches the inputs from here (a classifier's target is read at its readout "
                         "token only)</i>")
        target = r.target_label or r.target
        if target not in ("", None):
            parts.append(f"target <code>{core.token_html(target)}</code>")
        if r.prediction:
            parts.append(f"prediction: {prediction_html(r.prediction)}")
        return " &middot; ".join(parts)

    def _build(self):
        import ipywidgets as w

        fig, self._nodes, self._edges, self._highlight, tfig, self._throughput = self._figures()
        self._figure = fig
        fig.on_change("inner_width", lambda attr, old, new: self.fit_width(new))  # BokehJS measured it
        self._on_tap(self._nodes, self._tapped_node)
        self._header = html_widget(self.header_html())
        self._info = html_widget("<i>click an input token (left) for its paths, an output token (right) to re-target</i>",
                           layout=w.Layout(max_width="100%"))
        self._progress = w.Label("")
        # graph and side panel share a row when the cell is wide enough; else the panel goes below
        self._plot = bokeh_widget(fig, layout=w.Layout(flex=f"1 1 {min(fig.max_width, 560)}px", min_width="0"))
        self._tplot = bokeh_widget(tfig, layout=w.Layout(max_width="100%"))
        side = w.VBox([self._tplot, self._info, self._progress],
                      layout=w.Layout(flex="1 1 280px", min_width="0", max_width="100%"))
        row = w.HBox([self._plot, side], layout=w.Layout(flex_flow="row wrap", width="100%"))
        box = w.VBox([self._header, row], layout=w.Layout(max_width="100%"))
        box.add_class("xattr-view")
        box.add_class("xattr-flow")
        return box

    def fit_width(self, inner_width) -> None:
        """Keep the token labels' room in pixels at the graph's measured frame width (px)."""
        if inner_width is None or self._nodes is None:
            return
        from ..sizing import fit_flow

        with self._lock:
            fit_flow(self._figure, float(inner_width))

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
        self._draw_highlight(carried, f"edges through <code>{core.token_html(self.tokens[i])}</code> at layer {layer}")

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
        self._draw_highlight(carried, f"flow into <code>{core.token_html(self.tokens[j])}</code> (position {j}): "
                                      f"{core.readable(total)} = {100 * total / value:.1f}% of {core.readable(self.result.value)}",
                             throughput=self.node_flow[:, j], kind="input", position=j)

    def _show_output(self, i: int) -> None:
        if self.retarget is not None:
            if self._nodes is not None:
                self._progress.value = f"recomputing flow for output position {i}..."
            self.retarget(i)
            return
        carried = core.flow_from_output(self.edge_flow, i)
        self._draw_highlight(carried, f"flow leaving output <code>{core.token_html(self.tokens[i])}</code> (position {i})",
                             throughput=self.node_flow[:, i], kind="output", position=i)

    def _draw_highlight(self, carried: np.ndarray, message: str, throughput=None, kind="node", position=-1) -> None:
        from ..figures import flow_edge_data, throughput_data

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
                self._throughput.data = throughput_data(throughput, self.result.value)
            if kind in ("input", "output"):
                layer = 0 if kind == "input" else self.n_layers
                self._set_selected(self._nodes, [layer * len(self.tokens) + position])

    def fits(self, result) -> bool:
        """Whether ``result`` has this view's layers and tokens, so :meth:`update` redraws in place."""
        return np.shape(result.edge_flow) == self.edge_flow.shape and len(result.tokens) == len(self.tokens)

    def update(self, result) -> None:
        """Show a new FlowResult (e.g. after re-targeting); the graph is rebuilt when its shape changed."""
        from ..figures import flow_edge_data, flow_node_data

        if not self.fits(result):
            with self._lock:
                self.result = result
                if self._widget is not None:  # same widget (where it is shown), new figures inside
                    self._widget.children = self._build().children
            return
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

    def png_figure(self):
        return export.draw_flow(self.tokens, self.edge_flow, self.node_flow, self.result.attributions,
                                selected=self.state.token, max_edges=self.max_edges, header=self.header_html())

    def export_models(self) -> list:
        from bokeh.layouts import row

        from ..figures import div

        fig, nodes, edges, highlight, tfig, tsource = self._figures(stretch=False)
        j = self.state.token
        if 0 <= j < len(self.tokens):
            from ..figures import flow_edge_data, throughput_data

            highlight.data = flow_edge_data(core.flow_to_input(self.edge_flow, j), self.max_edges,
                                            peak=float(self.edge_flow.max()), max_width=9.0)
            tsource.data = throughput_data(self.node_flow[:, j], self.result.value)
        return [div(self.header_html()), row(fig, tfig)]
