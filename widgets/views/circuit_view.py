"""Circuit view: a head grid of SAE circuit node scores (and class-mean differences), the top edges, and
the code table of a clicked head (its codes in positives vs negatives)."""
from __future__ import annotations

import numpy as np

from .. import core, export
from .base import LinkedState, html_widget
from .head_grid import HeadGrid, numeric_statistic

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
        difference = getattr(self.result, "difference_scores", None)  # circuits.mean_difference_scores
        if difference is None:
            return stats
        first = dict(list(stats.items())[:1]) if node is not None else {}
        return {**first, "class-mean difference": numeric_statistic(difference, "{:.2g}"), **stats}

    def head_codes(self, layer: int, head: int) -> dict | None:
        """The head's codes in positives and negatives, and which are positive-only."""
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

    def head_detail_html(self, layer: int, head: int) -> str:
        """The code table of head ``layer.head``: each prompt's code, positive-only codes in bold (escaped)."""
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
        self._edges_panel = html_widget(self.edges_html(), layout={"max_width": "100%", "overflow": "auto hidden"})
        box.children = tuple(box.children) + (self._edges_panel,)
        box.add_class("xattr-circuit")
        return box

    def export_models(self) -> list:
        from ..figures import div

        return super().export_models() + [div(self.edges_html())]
