"""Pure helpers behind the views: token labels, colours, layout, flow decomposition, rollout.

numpy only (no Bokeh, no ipywidgets, never torch), so every function here is cheap to test.
"""
from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

#: The display rules shared with the TypeScript renderer (labextension/src/rules.ts reads the same file):
#: palettes, the text colour rule, flow caps, token labels. xattr_lab's package data (kernel_ext/data/).
DISPLAY_RULES_PATH = resources.files("xattr_lab") / "data" / "display-rules.json"
RULES = json.loads(DISPLAY_RULES_PATH.read_text(encoding="utf-8"))
_PALETTES = RULES["palettes"]

#: Diverging palette (blue = negative, white = 0, red = positive); ColorBrewer RdBu, 11 classes.
DIVERGING = tuple(_PALETTES["diverging"][_PALETTES["default_diverging"]])
#: Sequential palette for non-negative quantities (flows, scores), ColorBrewer Reds 9 (light -> dark).
SEQUENTIAL = tuple(_PALETTES["sequential"])
#: Categorical colours for head patterns (Tableau 10).
CATEGORICAL = tuple(_PALETTES["categorical"])
NAN_COLOUR = _PALETTES["missing"]
#: The strongest flow edges a view draws, and the fraction of the largest below which none is drawn.
EDGES_DRAWN, EDGE_FLOOR = int(RULES["flow"]["edges_drawn"]), float(RULES["flow"]["edge_floor"])

_SPACE_MARKS = tuple(RULES["tokens"]["word_start_marks"])  # GPT-2/RoBERTa "Ġ", SentencePiece "▁"


#: the escape table shared with the TypeScript renderer (labextension/src/bidi.ts mirrors it): xattr_lab's
#: package data (kernel_ext/data/), read without importing more than the lazy ``xattr_lab/__init__``
BIDI_ESCAPES_PATH = resources.files("xattr_lab") / "data" / "bidi-escapes.json"


@lru_cache(maxsize=1)
def bidi_escapes() -> dict[int, str]:
    """{code point of a bidi formatting character: its visible escape}, e.g. 0x200F -> "⟨RLM⟩"
    (``data/bidi-escapes.json``; a ``str.translate`` table)."""
    table = json.loads(BIDI_ESCAPES_PATH.read_text(encoding="utf-8"))["escapes"]
    return {int(row["code"][2:], 16): row["label"] for row in table}


def visible_controls(text) -> str:
    """``text`` with every bidi mark, embedding, override and isolate (U+200E, U+200F, U+061C,
    U+202A-E, U+2066-9) replaced by its visible escape ("⟨RLM⟩", "⟨RLO⟩", ...): what a token holds
    is shown, and no character in it can reorder the text around it. Everything else is kept."""
    return str(text).translate(bidi_escapes())


def pretty_token(token: str) -> str:
    """A display label for a model token, by the token rules of ``data/display-rules.json`` (the
    TypeScript renderer's ``tokenLabel`` reads them too): word-start markers and "##" dropped, whitespace
    made visible, bidi controls as visible escapes (:func:`visible_controls`).

    The result is plain text (not escaped): in HTML, use :func:`token_html` (escaped and isolated).
    """
    rules = RULES["tokens"]
    label = str(token)
    for mark in _SPACE_MARKS:
        if label.startswith(mark) and len(label) > 1:
            label = label[len(mark):]
        label = label.replace(mark, " ")
    prefix = rules["subword_prefix"]
    if label.startswith(prefix) and len(label) > len(prefix):
        label = label[len(prefix):]
    for old, new in rules["escapes"]:
        label = label.replace(old, new)
    if label.strip() == "":
        label = rules["blank"] * max(1, len(label))  # visible space
    return visible_controls(label)


def token_html(token) -> str:
    """A model token (as the model holds it) in HTML: escaped, bidi controls visible, and isolated in a
    ``<bdi>`` element, so a right-to-left token cannot reorder the text around it."""
    return f'<bdi class="xattr-token">{escape(token)}</bdi>'


def pretty_tokens(tokens: Sequence[str]) -> list[str]:
    return [pretty_token(t) for t in tokens]


def shorten(label: str, width: int | None = None) -> str:
    """Cut a label to ``width`` characters with an ellipsis (hover tooltips keep the full text); default
    ``tokens.short_label`` of ``data/display-rules.json``, as the TypeScript renderer's ``shorten``."""
    width = int(RULES["tokens"]["short_label"]) if width is None else width
    return label if len(label) <= width else label[: width - 1] + "\u2026"


def readable(value: float) -> str:
    """A number for people, as the TypeScript renderer's ``fmt`` writes it: 4 decimals, small values
    as plain decimals with 3 significant digits ("0.000123"), exponents only below 1e-7 or from 1e5."""
    v = float(value)
    if not np.isfinite(v):
        return "n/a"
    a = abs(v)
    if a != 0 and (a < 1e-7 or a >= 1e5):
        return f"{v:.2e}"
    if a != 0 and a < 1e-3:
        return f"{v:.{2 - int(np.floor(np.log10(a)))}f}"
    return f"{v:.4f}"


def escape(text) -> str:
    """HTML-escape any value (quotes too), bidi controls shown as visible escapes
    (:func:`visible_controls`): the only way data reaches markup in this package."""
    return html.escape(visible_controls(text), quote=True)


def symmetric_scale(values: np.ndarray) -> float:
    """max |value| over finite entries (1.0 when there are none or all are zero)."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    peak = float(finite.max()) if finite.size else 0.0
    return peak if peak > 0 else 1.0


def set_diverging(name: str) -> tuple[str, ...]:
    """Use another 11-class diverging ColorBrewer palette of ``data/display-rules.json`` for signed scores
    ("RdBu", "PiYG", "PuOr", "BrBG", "PRGn", "RdGy", "RdYlBu"; a "_r" suffix reverses it). Returns the palette."""
    global DIVERGING
    base, reverse = (name[:-2], True) if name.endswith("_r") else (name, False)
    table = _PALETTES["diverging"].get(base)
    if table is None:
        raise ValueError(f"unknown diverging palette {name!r}; try {', '.join(_PALETTES['diverging'])}")
    colours = tuple(table)  # index 0 = colour of the most negative value (RdBu: dark blue)
    DIVERGING = colours[::-1] if reverse else colours
    return DIVERGING


def colour_for(value: float, low: float, high: float, palette: Sequence[str] | None = None) -> str:
    """The palette colour of ``value`` on the linear scale [low, high] (NaN -> grey; default palette:
    the current DIVERGING)."""
    palette = DIVERGING if palette is None else palette
    if value is None or not np.isfinite(value):
        return NAN_COLOUR
    if high <= low:
        return palette[len(palette) // 2]
    t = (float(value) - low) / (high - low)
    index = int(np.clip(np.floor(t * len(palette)), 0, len(palette) - 1))
    return palette[index]


def diverging_colours(values: np.ndarray, scale: float | None = None) -> list[str]:
    """Colour per value on [-scale, scale] (default: max |value|)."""
    scale = symmetric_scale(values) if scale is None else scale
    return [colour_for(v, -scale, scale, DIVERGING) for v in np.asarray(values, dtype=np.float64)]


def text_colour_for(background: str) -> str:
    """Text colour on a ``#rrggbb`` background: ``on_dark`` (white) when its luminance
    0.2126 R + 0.7152 G + 0.0722 B (channels / 255) is below ``dark_below``, else ``on_light`` (black);
    the rule of ``data/display-rules.json``, as the TypeScript renderer's ``textColourFor``."""
    rules = RULES["text"]
    text = str(background)
    if len(text) != 7 or text[0] != "#":
        return rules["on_light"]
    try:
        channels = [int(text[k:k + 2], 16) / 255 for k in (1, 3, 5)]
    except ValueError:
        return rules["on_light"]
    luminance = sum(w * c for w, c in zip(rules["luminance_weights"], channels))
    return rules["on_dark"] if luminance < rules["dark_below"] else rules["on_light"]


def text_colours(values: np.ndarray, scale: float | None = None) -> list[str]:
    """Text colour per value on its :func:`diverging_colours` cell (:func:`text_colour_for`)."""
    return [text_colour_for(c) for c in diverging_colours(values, scale)]


def wrap_layout(labels: Sequence[str], width_px: int = 900, char_px: float = 7.5, pad_px: float = 10.0,
                gap_px: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place token boxes left to right, wrapping into rows of at most ``width_px``.

    Returns (x_centre, row, width), each (n,), in pixels / row numbers (row 0 on top).
    """
    n = len(labels)
    x = np.zeros(n)
    rows = np.zeros(n, dtype=np.int64)
    widths = np.zeros(n)
    cursor, row = 0.0, 0
    for i, label in enumerate(labels):
        w = min(max(len(label), 1) * char_px + pad_px, width_px)
        if cursor > 0 and cursor + w > width_px:
            row += 1
            cursor = 0.0
        x[i] = cursor + w / 2
        rows[i] = row
        widths[i] = w
        cursor += w + gap_px
    return x, rows, widths


def pages(n: int, page_size: int) -> list[range]:
    """Split n items into consecutive pages of at most page_size (at least one page)."""
    page_size = max(1, int(page_size))
    return [range(s, min(s + page_size, n)) for s in range(0, max(n, 1), page_size)] or [range(0)]


# ---------------------------------------------------------------------------- flows
def node_throughput(edge_flow: np.ndarray) -> np.ndarray:
    """(L, n, n) edge flows -> (L+1, n) flow through each node: :func:`xattr_lab.payload.node_throughput`,
    the one definition (inflow from the layer above; the top layer's outflow)."""
    from xattr_lab.payload import node_throughput as throughput  # numpy only

    return throughput(edge_flow)


def flow_to_input(edge_flow: np.ndarray, j: int) -> np.ndarray:
    """(L, n, n) the part of each edge's flow that ends at input token ``j``.

    Flow is split proportionally at every node (a flow decomposition under proportional mixing):
    share_0 = e_j; edge (l, i) -> (l-1, k) carries E[l-1][i, k] * share_{l-1}[k], and node (l, i)'s
    share is its carried outflow over its total outflow.
    """
    E = np.asarray(edge_flow, dtype=np.float64)
    L, n, _ = E.shape
    share = np.zeros(n)
    share[j] = 1.0
    carried = np.zeros_like(E)
    for layer in range(L):
        carried[layer] = E[layer] * share[None, :]
        total = E[layer].sum(axis=1)
        share = np.divide(carried[layer].sum(axis=1), total, out=np.zeros(n), where=total > 0)
    return carried


def flow_from_output(edge_flow: np.ndarray, i: int) -> np.ndarray:
    """(L, n, n) the part of each edge's flow that leaves top-layer node ``i`` (proportional split)."""
    E = np.asarray(edge_flow, dtype=np.float64)
    L, n, _ = E.shape
    share = np.zeros(n)
    share[i] = 1.0
    carried = np.zeros_like(E)
    for layer in range(L - 1, -1, -1):
        carried[layer] = E[layer] * share[:, None]
        inflow = E[layer].sum(axis=0)
        share = np.divide(carried[layer].sum(axis=0), inflow, out=np.zeros(n), where=inflow > 0)
    return carried


def top_edges(edge_flow: np.ndarray, max_edges: int = EDGES_DRAWN, rel_floor: float = EDGE_FLOOR) -> np.ndarray:
    """Indices (k, 3) = (layer-1, i, j) of the largest edges, largest first.

    Edges below ``rel_floor`` x the largest are dropped; at most ``max_edges`` are kept (defaults: the
    ``flow`` rules of ``data/display-rules.json``, which the TypeScript renderer draws by too).
    """
    E = np.asarray(edge_flow, dtype=np.float64)
    flat = np.nan_to_num(E.ravel(), nan=0.0)
    peak = flat.max() if flat.size else 0.0
    if peak <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    keep = np.flatnonzero(flat > rel_floor * peak)
    if keep.size > max_edges:
        keep = keep[np.argpartition(-flat[keep], max_edges - 1)[:max_edges]]
    keep = keep[np.argsort(-flat[keep], kind="stable")]
    return np.stack(np.unravel_index(keep, E.shape), axis=1).astype(np.int64)


# ---------------------------------------------------------------------------- attention
def rollout(attentions: np.ndarray, upto: int | None = None, residual: float = 0.5) -> np.ndarray:
    """Attention rollout through layers 0..upto (inclusive) -> (n, n). attentions: (L, H, n, n).

    The head-averaged maps through :func:`xattr_lab.graphs.rollout.rollout` (numpy only).
    """
    from xattr_lab.graphs.rollout import rollout as rolled_out

    A = np.asarray(attentions, dtype=np.float64).mean(axis=1)
    upto = A.shape[0] - 1 if upto is None else upto
    return rolled_out(A[: upto + 1], residual)[-1]


def head_label(flat: int, n_heads: int) -> str:
    return f"{flat // n_heads}.{flat % n_heads}"


def top_pairs(matrix: np.ndarray, k: int = 10) -> list[tuple[int, int, float]]:
    """The k largest entries above the diagonal of a symmetric matrix: (row, col, value)."""
    M = np.asarray(matrix, dtype=np.float64)
    rows, cols = np.triu_indices(M.shape[0], k=1)
    values = np.nan_to_num(M[rows, cols], nan=-np.inf)
    order = np.argsort(-values, kind="stable")[:k]
    return [(int(rows[o]), int(cols[o]), float(M[rows[o], cols[o]])) for o in order if values[o] > 0]


def freeze(value):
    """A hashable copy of nested dicts, lists and tuples (cache keys of the Explorer)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value
