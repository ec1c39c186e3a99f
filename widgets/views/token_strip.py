"""Token strip: the tokens of an Attribution coloured by signed score."""
from __future__ import annotations

import numpy as np

from .. import core, export
from .base import LinkedState, View, bokeh_widget, html_widget, prediction_html, badge_html, convergence_badge

__all__ = ["TokenStrip", "granularity_option"]


def granularity_option(options: dict) -> dict:
    """``{"granularity": ...}`` when ``options`` choose one (the Explorer passes it to ``ex.flow`` too)."""
    return {"granularity": options["granularity"]} if "granularity" in options else {}


class TokenStrip(View):
    """Tokens coloured by signed score (diverging palette, colour bar, hover with the exact value).

    Click a token to select it (``state.token``). Long inputs wrap into rows and are paged
    (``page_size`` tokens per page). With an ``explorer`` (anything with ``options`` and
    ``set(options=...)``), a token/word toggle asks it to recompute at the other granularity.
    """

    view_type = "token_strip"

    def __init__(self, result, *, state: LinkedState | None = None, page_size: int = 300, width: int = 900,
                 explorer=None):
        super().__init__(result, state=state)
        self.explorer, self._toggle = explorer, None
        self.page_size = page_size
        self.width = width  # the widest the strip is wrapped to (px)
        self.wrap = width  # what it is wrapped to now: the measured width of its cell, at most ``width``
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
        from ..figures import strip_data

        rows = self.page_rows()
        labels = core.pretty_tokens([self.tokens[i] for i in rows])
        return strip_data(labels, self.scores[rows.start:rows.stop], self.raw[rows.start:rows.stop], list(rows),
                          core.symmetric_scale(self.scores), self.wrap)

    def _figure(self):
        from ..figures import token_strip_figure

        rows = self.page_rows()
        labels = core.pretty_tokens([self.tokens[i] for i in rows])
        return token_strip_figure(labels, self.scores[rows.start:rows.stop], self.raw[rows.start:rows.stop],
                                  list(rows), scale=core.symmetric_scale(self.scores), width=self.wrap, stretch=True)

    def header_html(self, badge: bool = True) -> str:
        """Method, target, model, prediction and (``badge``) the "not converged" badge, as HTML."""
        r = self.result
        target = getattr(r, "target_label", "") or getattr(r, "target", "")
        parts = [f"<b>{core.escape(getattr(r, 'method', '') or 'scores')}</b>"]
        if target not in ("", None):
            parts.append(f"target <code>{core.token_html(target)}</code>")
        if getattr(r, "model", ""):
            parts.append(f"model <code>{core.escape(r.model)}</code>")
        if getattr(r, "prediction", None):
            parts.append(f"prediction: {prediction_html(r.prediction)}")
        shown = badge_html(r) if badge else ""
        return " &middot; ".join(parts) + (f" {shown}" if shown else "")

    def _build(self):
        import ipywidgets as w

        fig, self._source, _ = self._figure()
        self._fig = fig
        fig.max_width = self.width + 20  # stretches up to the widest wrap
        fig.on_change("inner_width", lambda attr, old, new: self.fit_width(new))  # BokehJS measured it
        self._on_tap(self._source, lambda row: self.select_token(self._source.data["index"][row]))
        self._header = html_widget(self.header_html())
        self._info = html_widget(self._info_html())
        self._pager_label = w.Label(self._pager_text())
        prev_button = w.Button(description="\u25c0", layout=w.Layout(width="40px"), tooltip="previous page")
        next_button = w.Button(description="\u25b6", layout=w.Layout(width="40px"), tooltip="next page")
        prev_button.on_click(lambda _: self.set_page(self.page - 1))
        next_button.on_click(lambda _: self.set_page(self.page + 1))
        self._pager = w.HBox([prev_button, self._pager_label, next_button],
                             layout=w.Layout(display="flex" if self.n_pages > 1 else "none"))
        self._plot = bokeh_widget(fig)
        if self.explorer is not None:
            self._toggle = w.ToggleButtons(options=["token", "word"], value=self.granularity, tooltips=[
                "subword tokens", "words: tokens merged by the tokenizer's offsets"], style={"button_width": "56px"})
            self._toggle.observe(lambda ch: self.set_granularity(ch["new"]), names="value")
        box = w.VBox([self._header] + ([self._toggle] if self._toggle else []) + [self._pager, self._plot, self._info],
                     layout=w.Layout(max_width="100%"))
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
        return (f"token {i} <code>{core.token_html(self.tokens[i])}</code>: score {self.scores[i]:+.6g}"
                f" (raw {self.raw[i]:+.6g})")

    def fit_width(self, inner_width) -> None:
        """Re-wrap the tokens to the strip's measured frame width (px; BokehJS reports it when the
        cell is drawn or resized): a narrow cell gets more rows, the boxes keep their size."""
        if inner_width is None or self._source is None:
            return
        from ..sizing import fit_strip

        with self._lock:
            wrap = fit_strip(self._fig, self._source, float(inner_width), self.width)
            if wrap is not None:
                self.wrap = wrap

    def _set_data(self, data: dict) -> None:
        """New boxes (page, result): the figure's height follows their number of rows."""
        from ..sizing import strip_height, strip_rows

        self._source.data = data
        nrows = strip_rows(data)
        self._fig.y_range.start = -nrows + 0.45
        self._fig.height = strip_height(nrows)

    @property
    def granularity(self) -> str:
        return (getattr(self.result, "options", None) or {}).get("granularity", "token")

    # actions -----------------------------------------------------------------
    def set_granularity(self, granularity: str) -> None:
        """Ask the explorer to recompute with ``granularity`` ("token" or "word")."""
        if self.explorer is not None and granularity != self.explorer.options.get("granularity", "token"):
            self.explorer.set(options={**self.explorer.options, "granularity": granularity})

    def set_page(self, page: int) -> None:
        page = int(np.clip(page, 0, self.n_pages - 1))
        if page == self.page and self._source is not None and self._source.data.get("index"):
            return
        self.page = page
        if self._source is not None:
            self._set_data(self._page_data())
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
            self._set_data(self._page_data())
            self._header.value = self.header_html()
            self._info.value = self._info_html()
            self._pager_label.value = self._pager_text()
            self._pager.layout.display = "flex" if self.n_pages > 1 else "none"
            if self._toggle is not None and self.explorer is not None:
                self._toggle.value = self.explorer.options.get("granularity", "token")
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

    def png_figure(self):
        return export.draw_strip(self.tokens, self.scores, selected=self.state.token, header=self.header_html(badge=False),
                                 badge=convergence_badge(self.result))

    def export_models(self) -> list:
        from ..figures import div, token_strip_figure

        labels = core.pretty_tokens(self.tokens)
        fig, source, _ = token_strip_figure(labels, self.scores, self.raw, scale=core.symmetric_scale(self.scores),
                                            width=self.width)
        if 0 <= self.state.token < len(self.tokens):
            source.selected.indices = [self.state.token]
        return [div(self.header_html()), fig]
