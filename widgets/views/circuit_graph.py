"""Circuit graph view of a patching circuit (``PatchingCircuitResult``, kind "patching-circuit").

Heads as nodes by layer plus a logits node, edges by score (eap, eap-ig), a slider for the circuit
size that reads out its faithfulness (the result's ``faithfulness`` curve, CPR and CMD), and a click
on a head or an edge for its patching effect on each prompt pair. A :class:`HeadGrid` of the node
scores sits beside the graph on the same :class:`LinkedState`: selecting a head in one selects it
in the other (and in any other view given the same ``state``).
"""
from __future__ import annotations

import numpy as np

from .. import core
from . import circuit_figures as cf
from .base import LinkedState, View, bokeh_widget, html_widget
from .head_grid import HeadGrid

__all__ = ["CircuitGraphView", "faithfulness_at", "prompt_effects_html"]


def faithfulness_at(faithfulness: dict | None, k: int) -> tuple[int, float] | None:
    """(size, faithfulness) of the largest computed size <= ``k`` (the smallest size when ``k`` is
    below them all); None when nothing was computed."""
    f = faithfulness or {}
    sizes, values = list(f.get("sizes") or []), list(f.get("faithfulness") or [])
    if not sizes or len(sizes) != len(values):
        return None
    below = [i for i, s in enumerate(sizes) if s <= k]
    i = max(below, key=lambda j: sizes[j]) if below else int(np.argmin(sizes))
    return int(sizes[i]), float(values[i])


def prompt_effects_html(title: str, effects, positive, negative, unit: str = "") -> str:
    """An escaped table: one row per prompt pair (clean, corrupted, effect, a bar by |effect|)."""
    effects = np.asarray(effects, dtype=np.float64).ravel()
    peak = core.symmetric_scale(effects)
    rows = []
    for i, v in enumerate(effects):
        clean = positive[i] if i < len(positive) else ""
        corrupt = negative[i] if i < len(negative) else ""
        width = 0 if not np.isfinite(v) else int(round(80 * abs(v) / peak))
        colour = core.colour_for(float(v), -peak, peak) if np.isfinite(v) else "#cccccc"
        rows.append(f"<tr class='xattr-prompt-row'><td>{i}</td>"
                    f"<td title=\"{core.escape(clean)}\">{core.escape(core.shorten(clean, 48))}</td>"
                    f"<td title=\"{core.escape(corrupt)}\">{core.escape(core.shorten(corrupt, 48))}</td>"
                    f"<td class='xattr-effect'>{core.readable(v)}</td><td><div style='width:{width}px;height:10px;"
                    f"background:{colour}'></div></td></tr>")
    mean = core.readable(float(np.nanmean(effects))) if effects.size and np.isfinite(effects).any() else "n/a"
    return (f"<div class='xattr-prompt-effects'><b>{core.escape(title)}</b> &middot; mean {mean}"
            f"{' ' + core.escape(unit) if unit else ''}<table><tr><th>#</th><th>clean prompt</th>"
            f"<th>corrupted prompt</th><th>effect</th><th></th></tr>{''.join(rows)}</table></div>")


class CircuitGraphView(View):
    """Patching-circuit result: graph + size slider + faithfulness readout + per-prompt effects,
    linked with a head grid of the node scores.

    Actions (what the taps call; tests and users can call them): ``select_head(l, h)``,
    ``select_edge(sender, receiver)`` (flat indices, receiver ``L * H`` = logits), ``set_size(k)``.
    """

    view_type = "patching-circuit"

    def __init__(self, result, *, state: LinkedState | None = None, size: int | None = None):
        super().__init__(result, state=state)
        r = result
        self.n_layers, self.n_heads = (int(s) for s in np.shape(r.node_scores))
        self.senders, self.receivers, self.scores = cf.ranked_edges(r.edge_scores)
        unit = (r.faithfulness or {}).get("unit")
        self.unit = unit if unit in ("nodes", "edges") else ("edges" if len(self.scores) else "nodes")
        self.max_size = max(1, min(cf.MAX_DRAWN, len(self.scores) if self.unit == "edges" else
                                   self.n_layers * self.n_heads))
        sizes = [int(s) for s in (r.faithfulness or {}).get("sizes") or [] if 1 <= int(s) <= self.max_size]
        self.sizes = sorted(set(sizes))
        default = self.sizes[len(self.sizes) // 2] if self.sizes else min(10, self.max_size)
        self.size = int(default if size is None else size)
        self.edge: tuple[int, int] | None = None
        self.detail: dict = {}
        self.grid = HeadGrid(r, state=self.state)
        self._nodes = self._edges = None
        self._observe(self._on_state_head, "head")

    # ------------------------------------------------------------------ data
    def circuit(self) -> set[int]:
        """Flat node indices (``L * H`` = logits) in the circuit of the current size."""
        return cf.circuit_nodes(self.size, self.unit, self.result.node_scores, self.senders, self.receivers)

    def _edge_columns(self) -> dict:
        members = self.circuit() | {self.n_layers * self.n_heads}
        ranks = cf.circuit_edges(self.size, self.unit, self.senders, self.receivers, members)
        peak = float(np.abs(self.scores).max()) if len(self.scores) else 1.0
        return cf.edge_data(self.senders[ranks], self.receivers[ranks], self.scores[ranks], self.n_layers,
                            self.n_heads, peak=peak)

    def faithfulness_text(self) -> str:
        """The readout under the slider (plain text)."""
        f = self.result.faithfulness or {}
        head = f"circuit: top {self.size} {self.unit}"
        at = faithfulness_at(f, self.size)
        if at is None:
            return f"{head} · faithfulness: not computed"
        size, value = at
        where = "" if size == self.size else f" (at {size} {self.unit}, the nearest computed size below)"
        extra = "".join(f" · {name.upper()} {core.readable(f[name])}" for name in ("cpr", "cmd")
                        if isinstance(f.get(name), (int, float)))
        return f"{head} · faithfulness {core.readable(value)}{where}{extra}"

    def head_effects(self, layer: int, head: int) -> np.ndarray:
        """(P,) patching effect of head (layer, head) on each prompt pair (metric units)."""
        return np.asarray(self.result.prompt_node_scores, dtype=np.float64)[:, layer, head]

    def edge_effects(self, sender: int, receiver: int) -> np.ndarray | None:
        """(P,) per-prompt effect of an edge, or None when it is not among the stored (top) edges."""
        values = (self.result.prompt_edge_scores or {}).get(f"{int(sender)}->{int(receiver)}")
        return None if values is None else np.asarray(values, dtype=np.float64)

    def header_html(self) -> str:
        r = self.result
        parts = [f"<b>{core.escape(r.method or 'patching')} circuit</b> {self.n_layers} layers &times; "
                 f"{self.n_heads} heads", f"{len(r.positive)} prompt pairs"]
        if getattr(r, "metric", ""):
            parts.append(f"metric <code>{core.escape(r.metric)}</code>")
        if r.model:
            parts.append(f"model <code>{core.escape(r.model)}</code>")
        if len(self.scores) > cf.MAX_DRAWN:
            parts.append(f"{len(self.scores) - cf.MAX_DRAWN:,} more edges not drawn")
        return " &middot; ".join(parts)

    # ------------------------------------------------------------------ widget
    def _figure(self, stretch: bool):
        nodes = cf.node_data(self.result.node_scores, self.circuit())
        return cf.graph_figure(nodes, self._edge_columns(), self.n_layers, self.n_heads,
                               title=f"circuit graph ({self.unit})", stretch=stretch)

    def _build(self):
        import ipywidgets as w

        fig, self._nodes, self._edges, _, _ = self._figure(stretch=True)
        self._fig = fig
        self._on_tap(self._nodes, self._tap_node)
        self._on_tap(self._edges, self._tap_edge)
        fit = w.Layout(max_width="100%")
        if self.sizes:
            self._slider = w.SelectionSlider(options=self.sizes, value=self._snap(self.size),
                                             description=f"top {self.unit}", layout=w.Layout(width="100%",
                                                                                              max_width="600px"))
        else:
            self._slider = w.IntSlider(value=self.size, min=1, max=self.max_size, description=f"top {self.unit}",
                                       layout=w.Layout(width="100%", max_width="600px"))
        self._slider.observe(lambda ch: self.set_size(int(ch["new"])), names="value")
        self._readout = html_widget(core.escape(self.faithfulness_text()), layout=fit)
        self._readout.add_class("xattr-faithfulness")
        self._effects = html_widget("<i>click a head or an edge for its patching effect on each prompt pair</i>",
                              layout=w.Layout(max_width="100%", overflow="auto hidden"))
        self._effects.add_class("xattr-effects")
        graph = bokeh_widget(fig, layout=w.Layout(max_width="100%"))
        box = w.VBox([html_widget(self.header_html(), layout=fit), self._slider, self._readout, graph, self._effects,
                      self.grid.widget], layout=fit)
        box.add_class("xattr-view")
        box.add_class("xattr-circuit-graph")
        if self.state.head[0] >= 0:
            self._show_head(*self.state.head)
        return box

    def _snap(self, k: int) -> int:
        return min(self.sizes, key=lambda s: (abs(s - k), s)) if self.sizes else k

    # ------------------------------------------------------------------ actions
    def set_size(self, k: int) -> None:
        """Circuit size: the top ``k`` edges (or nodes, for atp)."""
        k = int(k)
        if not 1 <= k <= self.max_size:
            raise ValueError(f"circuit size {k} out of range 1..{self.max_size}")
        self.size = k
        if self._nodes is None:
            return
        with self._lock:
            self._readout.value = core.escape(self.faithfulness_text())
            self._edges.data = self._edge_columns()
            self._nodes.data = cf.node_data(self.result.node_scores, self.circuit())
            if self._slider.value != k and (not self.sizes or k in self.sizes):
                self._slider.value = k

    def select_head(self, layer: int, head: int) -> None:
        """Select head (layer, head) here, in the head grid and in every view on the same state."""
        if not (0 <= int(layer) < self.n_layers and 0 <= int(head) < self.n_heads):
            raise IndexError(f"head {layer}.{head} out of range for {self.n_layers} x {self.n_heads}")
        if tuple(self.state.head) == (int(layer), int(head)):
            self._show_head(int(layer), int(head))
        self.state.head = (int(layer), int(head))

    def select_edge(self, sender: int, receiver: int) -> None:
        """Show the per-prompt effect of edge sender -> receiver (flat indices; ``L * H`` = logits)."""
        self.edge = (int(sender), int(receiver))
        L, H = self.n_layers, self.n_heads
        name = f"edge {cf.head_name(sender, L, H)} -> {cf.head_name(receiver, L, H)}"
        effects = self.edge_effects(sender, receiver)
        self.detail = {"kind": "edge", "sender": int(sender), "receiver": int(receiver),
                       "effects": None if effects is None else effects.tolist()}
        if effects is None:
            html = (f"<b>{name}</b> &middot; per-prompt effects are stored for the top "
                    f"{len(self.result.prompt_edge_scores or {})} edges only")
        else:
            html = prompt_effects_html(name, effects, self.result.positive, self.result.negative,
                                       getattr(self.result, "metric", ""))
        if self._nodes is not None:
            with self._lock:
                self._effects.value = html

    def _tap_node(self, row: int) -> None:
        layer, head = self._nodes.data["layer"][row], self._nodes.data["head"][row]
        if layer >= 0:
            self.select_head(layer, head)

    def _tap_edge(self, row: int) -> None:
        if self._nodes.selected.indices:  # the same tap hit a node: the node wins
            return
        self.select_edge(self._edges.data["sender"][row], self._edges.data["receiver"][row])

    def _on_state_head(self, change) -> None:
        layer, head = change["new"]
        if layer >= 0:
            self._show_head(layer, head)

    def _show_head(self, layer: int, head: int) -> None:
        effects = self.head_effects(layer, head)
        self.edge = None
        self.detail = {"kind": "head", "layer": layer, "head": head, "effects": effects.tolist()}
        if self._nodes is None:
            return
        with self._lock:
            self._effects.value = prompt_effects_html(f"head {layer}.{head}", effects, self.result.positive,
                                                      self.result.negative, getattr(self.result, "metric", ""))
            self._set_selected(self._nodes, [layer * self.n_heads + head])

    # ------------------------------------------------------------------ exports
    def export_models(self) -> list:
        from ..figures import div

        fig, nodes, _, _, _ = self._figure(stretch=False)
        l, h = self.state.head
        models = [div(self.header_html()), div(core.escape(self.faithfulness_text())), fig]
        if l >= 0:
            nodes.selected.indices = [l * self.n_heads + h]
            models.append(div(prompt_effects_html(f"head {l}.{h}", self.head_effects(l, h), self.result.positive,
                                                  self.result.negative)))
        return models + self.grid.export_models()

    def png_figure(self):
        nodes = cf.node_data(self.result.node_scores, self.circuit())
        return cf.draw_graph(nodes, self._edge_columns(), self.n_layers, self.n_heads,
                             title=f"{self.result.method or 'patching'} circuit",
                             caption=self.faithfulness_text())
