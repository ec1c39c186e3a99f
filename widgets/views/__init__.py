"""Linked notebook views of xattr results (ipywidgets layout + Bokeh figures via jupyter_bokeh).

One module per view, over :mod:`.base` (``View``, ``LinkedState``, shared helpers):
:class:`TokenStrip` (Attribution), :class:`FlowView` (FlowResult), :class:`HeadGrid` (HeadStats),
:class:`CircuitView` (CircuitResult), :class:`CircuitGraphView` (PatchingCircuitResult: AtP, EAP,
EAP-IG), :class:`GenerationView` (GenerationResult), :class:`ImageView` (image attributions). Views sit above ``core``, ``figures``, ``export`` and ``bundle`` and below ``select`` and ``explorer`` (docs/ARCHITECTURE.md, section "Front end").
"""
from __future__ import annotations

from .base import LinkedState, View
from .circuit_graph import CircuitGraphView
from .circuit_view import CircuitView
from .flow_view import FlowView
from .generation_view import GenerationView
from .head_grid import HeadGrid
from .image_view import ImageView
from .token_strip import TokenStrip

__all__ = ["LinkedState", "View", "TokenStrip", "FlowView", "HeadGrid", "CircuitView", "CircuitGraphView",
           "GenerationView", "ImageView"]
