"""Notebook front end for xattr-lab: linked ipywidgets + Bokeh views. Never imports torch.

The import package ``xattr_widgets`` (folder ``widgets/``), which users import under its public name
(``alias``: one module object under both names)::

    from xattr_lab import widgets
    v = widgets.view(result)          # the right view for any result; displays itself in a notebook
    v.to_html("out.html"); v.to_png("out.png"); v.to_json()
    widgets.Explorer(ex, "A gripping film.")   # controls + linked token strip, flow view, head grid

Views: TokenStrip (Attribution), FlowView (FlowResult), HeadGrid (HeadStats), CircuitView
(CircuitResult), CircuitGraphView (PatchingCircuitResult), GenerationView, ImageView, Explorer.
``mime_bundle(result)`` is what results display as.

Layers, bottom to top (each imports only those below it; docs/ARCHITECTURE.md, section "Front end"):
``alias`` (the public name), ``core`` (pure helpers; the display rules of
``xattr_lab/data/display-rules.json``), ``player`` (the offline player), ``sizing``, ``figures``
(data -> Bokeh models), ``export`` (models / data -> HTML, PNG), ``bundle`` (result + its view -> MIME
dict), ``views``, ``select`` (the view for a result), ``explorer``, ``notebook_html``; this
``__init__`` imports them lazily.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["view", "view_for", "mime_bundle", "TokenStrip", "FlowView", "HeadGrid", "CircuitView", "CircuitGraphView", "GenerationView", "ImageView",
           "Explorer",
           "LinkedState", "WIDGET_MIME", "XATTR_MIME"]

_LAZY = {
    "TokenStrip": "views", "FlowView": "views", "HeadGrid": "views", "CircuitView": "views", "CircuitGraphView": "views", "GenerationView": "views",
    "ImageView": "views", "View": "views",
    "LinkedState": "views", "Explorer": "explorer", "view_for": "select", "WIDGET_MIME": "bundle",
    "XATTR_MIME": "bundle", "MIME_TYPE": "bundle", "in_kernel": "bundle",
}


def view(result, *, display: bool = True, **kwargs):
    """The right view for ``result``; shown right away when running under IPython (``display=False`` not)."""
    from .select import view_for

    v = view_for(result, **kwargs)
    if display:
        try:
            from IPython import get_ipython
            from IPython.display import display as show
        except ImportError:  # pragma: no cover
            return v
        if get_ipython() is not None:
            show(v)
    return v


def mime_bundle(result, view=None, **kwargs) -> dict:
    """The display bundle of a result (docs/ARCHITECTURE.md, section "Front end").

    view: an existing view of the result (default: ``view_for(result)``); other keyword arguments
    go to :func:`xattr_lab.widgets.bundle.mime_bundle` (``widget``, ``png``).
    """
    from .bundle import mime_bundle as _bundle

    if view is None:
        from .select import view_for

        view = view_for(result)
    if getattr(view, "payload_v2", True) is False:  # a view whose kind has no v2 payload draws its own bundle
        return view._repr_mimebundle_()
    return _bundle(result, view, **kwargs)


_SUBMODULES = {"core", "figures", "export", "bundle", "views", "select", "explorer"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'xattr_lab.widgets' has no attribute {name!r}")
