"""The base of every view: :class:`LinkedState`, :class:`View` and the small widget helpers.

Each view holds a result, a :class:`LinkedState` (shared between views that should move together)
and builds its ipywidgets tree lazily (``view.widget``). Bokeh taps call the same Python methods a
test or a user can call directly: ``select_token``, ``select_input``, ``select_output``,
``select_head``, ``select_layer``, ``set_statistic``.

Exports: a view hands its Bokeh models (``export_models``) and its matplotlib figure
(``png_figure``) to :mod:`..export`, and itself to :mod:`..bundle` for the MIME bundle; neither
of those modules imports a view.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Callable, Sequence

import traitlets

from .. import bundle, core, export

__all__ = ["LinkedState", "View", "convergence_badge", "badge_html"]


class LinkedState(traitlets.HasTraits):
    """What is selected, shared by linked views. -1 / (-1, -1) means nothing."""

    token = traitlets.Int(-1)  # input token position
    output = traitlets.Int(-1)  # top-layer (readout) position chosen in a flow view
    head = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(-1, -1))
    layer = traitlets.Int(-1)
    statistic = traitlets.Unicode("")


def html_widget(parts: str, **kwargs) -> Any:
    """An HTML widget; ``kwargs`` (e.g. ``layout``) go to ``ipywidgets.HTML``."""
    import ipywidgets as w

    return w.HTML(value=parts, **kwargs)


def bokeh_widget(model, **kwargs) -> Any:
    """A Bokeh model as an ipywidget; ``kwargs`` (e.g. ``layout``) go to ``jupyter_bokeh.BokehModel``."""
    from jupyter_bokeh import BokehModel

    return BokehModel(model, **kwargs)


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

    def png_figure(self):
        """A matplotlib figure of the view (one of :mod:`..export`'s ``draw_*``), for PNG export."""
        raise NotImplementedError(f"no PNG rendering for {type(self).__name__}")

    def to_html(self, path) -> str:
        """Write a self-contained HTML page (BokehJS inlined, no CDN, escaped data); returns the path."""
        return export.write_html(self.export_models(), path)

    def to_png(self, path) -> str:
        """Write a PNG rendering (matplotlib, no browser); returns the path."""
        return export.write_png(self.png_figure(), path)

    def png_bytes(self) -> bytes:
        return export.png_bytes(self.png_figure())

    # -------------------------------------------------------------- display
    def _repr_mimebundle_(self, include=None, exclude=None):
        return bundle.mime_bundle(self.result, view=self)

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


def prediction_html(prediction: dict) -> str:
    """The five most probable labels with their probabilities, escaped HTML ("POSITIVE 0.912, NEGATIVE 0.088")."""
    items = sorted(prediction.items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{core.escape(k)} {v:.3f}" for k, v in items)


#: How the "not converged" badge looks in HTML (widget header, HTML export).
BADGE_STYLE = ("background:#b2182b;color:#ffffff;font-weight:bold;padding:1px 6px;border-radius:3px;"
               "white-space:nowrap")


def convergence_badge(result) -> str:
    """"not converged: completeness error 54%" for a gradient result whose
    ``options["converged"]`` is False (see ``xattr_lab.methods.integration``); "" otherwise."""
    options = getattr(result, "options", None) or {}
    if options.get("converged") is not False:
        return ""
    error = options.get("relative_completeness_error")
    try:
        error = float(error)
    except (TypeError, ValueError):
        return "not converged"
    if error != error or error in (float("inf"), float("-inf")):
        return "not converged"
    shown = f"{100 * error:,.0f}%" if error >= 0.01 else f"{100 * error:.2g}%"
    return f"not converged: completeness error {shown}"


def badge_html(result) -> str:
    """The badge as an escaped HTML span ("" when the result converged or says nothing)."""
    text = convergence_badge(result)
    if not text:
        return ""
    tol = (getattr(result, "options", None) or {}).get("convergence_tol")
    tip = "scores do not add up to the output change"
    if isinstance(tol, (int, float)):
        tip += f" within convergence_tol={tol:g}"
    tip += "; rerun with steps='auto' or more steps (SIG: steps='exact')"
    return (f'<span class="xattr-badge xattr-not-converged" style="{BADGE_STYLE}" title="{core.escape(tip)}">'
            f"{core.escape(text)}</span>")
