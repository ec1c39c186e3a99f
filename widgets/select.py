"""Which view shows which result."""
from __future__ import annotations

from .views import CircuitGraphView, CircuitView, FlowView, HeadGrid, TokenStrip, View
from .views.generation_view import GenerationView
from .views.image_view import ImageView, has_image

__all__ = ["view_for", "VIEWS"]

#: Result ``kind`` -> the view class that shows it.
VIEWS = {"attribution": TokenStrip, "flow": FlowView, "heads": HeadGrid, "circuit": CircuitView,
         "patching-circuit": CircuitGraphView,
         "generation": GenerationView}


def view_for(result, **kwargs):
    """The right view for any xattr result (Attribution, FlowResult, HeadStats, CircuitResult, PatchingCircuitResult,
    GenerationResult)."""
    if isinstance(result, View):
        return result
    cls = VIEWS.get(getattr(result, "kind", None))
    if cls is TokenStrip and has_image(result):  # a vision transformer's patches: the image with an overlay
        cls = ImageView
    if cls is None:
        raise TypeError(f"no view for {type(result).__name__}; expected an xattr result (Attribution, FlowResult, "
                        "HeadStats, CircuitResult, PatchingCircuitResult or GenerationResult)")
    return cls(result, **kwargs)
