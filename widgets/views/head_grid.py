"""Head grid: the L x H heads of a HeadStats (or circuit) result coloured by a statistic.

What only SAE circuits have (their class-mean difference, the code table of a head) is in
:mod:`.circuit_view`; node scores and the ground truth stay here, since the patching-circuit graph
shows its node scores in a plain grid."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import core, export
from .base import LinkedState, View, bokeh_widget, html_widget

__all__ = ["HeadGrid", "numeric_statistic"]


def numeric_statistic(values, fmt: str = "{:.2f}") -> dict:
    """A per-head statistic as the grid draws it: {"values": (L, H) float, "labels": L x H strings
    (``fmt`` of each value, "" where it is not finite), "categorical": False}."""
    values = np.asarray(values, dtype=np.float64)
    return {"values": values, "categorical": False,
            "labels": [[("" if not np.isfinite(v) else fmt.format(v)) for v in row] for row in values]}


class HeadGrid(View):
    """L x H grid of heads coloured by a chosen statistic.

    Statistics come from the result (HeadStats: entropy, pattern; CircuitResult: circuit node
    score, ablation effect when present) plus ``extra`` ({name: (L, H) array}). Click a cell for
    that head's attention matrix (needs ``attentions``; :class:`~.circuit_view.CircuitView` adds an
    SAE circuit's codes in positives vs negatives); click a layer label for the layer's rollout and cone index. HeadStats also get a
    plot of the normalised cone index by layer with its random-direction floor 1/√n (dashed).
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
            stats[name] = numeric_statistic(values, fmt)

        if getattr(r, "node_scores", None) is not None:
            numeric("circuit node score", r.node_scores, "{:.3f}" if getattr(r, "kind", "") == "patching-circuit" else "{:.0f}")
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

    def _grid_figure(self, stretch: bool = True):
        """Live (``stretch``: as wide as the cell) or export (fixed width) grid figure."""
        from ..figures import head_grid_figure

        name = self.state.statistic
        colours, palette, low, high = self._colours(name)
        stat = self.statistics[name]
        return head_grid_figure(stat["values"], colours, stat["labels"], title=name, palette=palette, low=low,
                                high=high, stretch=stretch)

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
        fit = w.Layout(max_width="100%")
        self._legend = html_widget(self._legend_html(), layout=fit)
        self._header = html_widget(self.header_html(), layout=fit)
        # grid and detail share a row when the cell is wide enough; else the detail goes below
        self._plot = bokeh_widget(fig, layout=w.Layout(flex=f"0 1 {fig.max_width}px", min_width="0"))
        self._fig = fig
        self._detail_title = html_widget("<i>click a head for its attention matrix, a layer label for its rollout</i>",
                                   layout=w.Layout(max_width="100%"))
        self._matrix_box = w.Box([], layout=w.Layout(display="block", max_width="100%"))
        self._matrix = None  # (figure, source, BokehModel) reused while n is the same
        self._extra_detail = html_widget("", layout=w.Layout(max_width="100%", overflow="auto hidden"))
        detail = w.VBox([self._detail_title, self._matrix_box, self._extra_detail],
                        layout=w.Layout(flex="1 1 300px", min_width="0", max_width="100%"))
        rows = [self._header, w.HBox([self._stat_picker], layout=w.Layout(flex_flow="row wrap")), self._legend,
                w.HBox([self._plot, detail], layout=w.Layout(flex_flow="row wrap", width="100%"))]
        cone = self._cone_figure(stretch=True)
        if cone is not None:
            rows.append(bokeh_widget(cone, layout=fit))
        box = w.VBox(rows, layout=fit)
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
        from ..figures import grid_data, plain

        colours, palette, low, high = self._colours(change["new"])
        stat = self.statistics[change["new"]]
        with self._lock:
            self._cells.data = grid_data(stat["values"], colours, stat["labels"])
            self._fig.title.text = plain(change["new"])
            bar = self._fig.select_one({"type": _bokeh_type("ColorBar")})
            if bar is not None and palette is not None:  # the colour bar follows the statistic
                from ..sizing import readable_ticks

                top = high if high > low else low + 1
                bar.color_mapper.update(palette=list(palette), low=low, high=top)
                bar.formatter = readable_ticks(low, top)
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
        """A head's SAE codes (:class:`~.circuit_view.CircuitView` has them); None: a grid of heads has none."""
        return None

    def head_detail_html(self, layer: int, head: int) -> str:
        """HTML shown under a clicked head's matrix (a circuit's code table); "" here."""
        return ""

    def _show_matrix(self, matrix: np.ndarray, title: str) -> None:
        from ..figures import matrix_figure, plain

        labels = core.pretty_tokens(self.tokens) if len(self.tokens) == matrix.shape[0] else [str(i) for i in range(matrix.shape[0])]
        if self._matrix is not None and self._matrix[3] == matrix.shape[0]:
            fig, source, _, _ = self._matrix
            if "image" in source.data:
                source.data = dict(source.data, image=[matrix])
                fig.select_one({"type": _bokeh_type("LinearColorMapper")}).high = max(float(matrix.max()), 1e-12)
            else:
                peak = max(float(np.nanmax(matrix)), 1e-12)
                flat = matrix.ravel()
                source.data = dict(source.data, value=flat.tolist(),
                                   colour=[core.colour_for(v, 0.0, peak, core.SEQUENTIAL) for v in flat])
            fig.title.text = plain(title)
            return
        fig, source = matrix_figure(matrix, labels, title=title, stretch=True)
        model = bokeh_widget(fig, layout={"max_width": "100%"})
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
            self._extra_detail.value = self.head_detail_html(layer, head)
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
            floor = self.cone_floor()
            if floor is not None:
                out["cone_index_floor"] = floor
        return out

    def cone_floor(self) -> float | None:
        """The normalised cone index of random directions, 1/√n: from the result (mean over its
        texts) or from its tokens; None when neither is known."""
        floor = (getattr(self.result, "options", None) or {}).get("cone_index_floor")
        if floor is None and self.tokens:
            floor = 1.0 / np.sqrt(len(self.tokens))
        return None if floor is None else float(floor)

    def _cone_figure(self, stretch: bool = False):
        """Normalised cone index per layer with its floor (``figures.cone_figure``); None for results
        without cone indices."""
        values = getattr(self.result, "cone_index_normalised", None)
        if values is None or not len(values):
            return None
        from ..figures import cone_figure

        return cone_figure(np.asarray(values, dtype=np.float64), self.cone_floor(), stretch=stretch)

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
            if "cone_index_floor" in summary:
                message += f", random-direction floor 1/√n {summary['cone_index_floor']:.3f}"
            message += ")"
        with self._lock:
            self._detail_title.value = message
            if A is not None:
                self._show_matrix(core.rollout(A, layer), f"rollout through layer {layer} (residual 0.5)")
            self._extra_detail.value = ""
            self._set_selected(self._layers, [layer])

    def _png_edges(self) -> list[tuple[str, str, float]]:
        return []  # circuits list their top edges beside the grid

    def png_figure(self):
        name = self.state.statistic
        colours, _, _, _ = self._colours(name)
        l, h = self.state.head
        cone = getattr(self.result, "cone_index_normalised", None)  # HeadStats: the panel with its floor, as live
        return export.draw_grid(name, colours, self.statistics[name]["labels"], head=(l, h), edges=self._png_edges(),
                                codes=self.head_codes(l, h) if l >= 0 else None, header=self.header_html(),
                                cone=None if cone is None or not len(cone) else (list(cone), self.cone_floor()))

    def export_models(self) -> list:
        from bokeh.layouts import row
        from ..figures import div, matrix_figure

        fig, cells, layers, _, _ = self._grid_figure(stretch=False)
        models = [div(self.header_html()), div(self._legend_html())]
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
        cone = self._cone_figure()
        if cone is not None:
            models.append(cone)
        if l >= 0 and self.head_detail_html(l, h):
            models.append(div(self.head_detail_html(l, h)))
        return models


def _bokeh_type(name: str):
    import bokeh.models

    return getattr(bokeh.models, name)
