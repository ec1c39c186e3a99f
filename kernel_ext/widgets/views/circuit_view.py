"""Circuit view: a head grid of SAE circuit node scores, the top edges and the code table."""
from __future__ import annotations

import numpy as np

from .. import core, export
from .base import LinkedState, _html
from .head_grid import HeadGrid

__all__ = ["CircuitView"]


class CircuitView(HeadGrid):
    """SAE circuit result: head grid of node scores, the top edges, the code table of a head."""

    view_type = "circuit"

    def __init__(self, result, *, state: LinkedState | None = None, top: int = 10, **kwargs):
        super().__init__(result, state=state, **kwargs)
        self.top = top

    def _statistics(self) -> dict:
        """The head grid's statistics, the SAE node scores written with 2 significant digits (scores in
        [0, 1] as "0.87", never rounded to "0" / "1")."""
        stats = super()._statistics()
        node = stats.get("circuit node score")
        if node is not None:
            places = export.significant_decimals(node["values"])
            node["labels"] = [["" if not np.isfinite(v) else f"{v:.{places}f}" for v in row] for row in node["values"]]
        return stats

    def top_edges(self) -> list[tuple[str, str, float]]:
        H = self.shape[1]
        return [(core.head_label(a, H), core.head_label(b, H), v)
                for a, b, v in core.top_pairs(self.result.edge_scores, self.top)]

    def _png_edges(self) -> list[tuple[str, str, float]]:
        return self.top_edges()

    def edges_html(self) -> str:
        edges = self.top_edges()
        places = export.significant_decimals([v for _, _, v in edges])
        rows = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{v:.{places}f}</td></tr>" for a, b, v in edges)
        metrics = ", ".join(f"{core.escape(k)} {v:.2f}" for k, v in (self.result.metrics or {}).items()
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
        box = super()._build()
        self._edges_panel = _html(self.edges_html(), layout={"max_width": "100%", "overflow": "auto hidden"})
        box.children = tuple(box.children) + (self._edges_panel,)
        box.add_class("xattr-circuit")
        return box

    def export_models(self) -> list:
        from ..figures import div

        return super().export_models() + [div(self.edges_html())]
