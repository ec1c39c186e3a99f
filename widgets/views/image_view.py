"""Image view: a vision transformer's Attribution drawn as a patch-score overlay on the image.

The result carries the image the model saw and its patch grid in ``options["image"]``
(``{"grid": [rows, cols], "patch": [height, width], "special": [0], "pixels": (H, W, 3) uint8}``,
written by ``xattr_lab.methods.vision_input``). Token ``1 + r*cols + c`` is ``patch(r,c)``; the
[CLS] token has no place on the image and its score is shown in the header. Click a patch to
select its token (``state.token``), as in the token strip. No torch: arrays only.
"""
from __future__ import annotations

import numpy as np

from .. import core, export
from .base import LinkedState, View, bokeh_widget, html_widget, prediction_html, badge_html, convergence_badge

__all__ = ["ImageView", "has_image", "patch_grid"]


def has_image(result) -> bool:
    """Whether ``result`` is over image patches (its options carry the image)."""
    info = (getattr(result, "options", None) or {}).get("image")
    return isinstance(info, dict) and "grid" in info and "pixels" in info


def patch_grid(scores, grid) -> np.ndarray:
    """Patch scores (rows, cols) from token scores (1 + rows*cols,): the patch tokens, row-major."""
    rows, cols = int(grid[0]), int(grid[1])
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (1 + rows * cols,):
        raise ValueError(f"{scores.shape[0]} scores for a {rows}x{cols} patch grid and [CLS]")
    return scores[1:].reshape(rows, cols)


def _rgba(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32 RGBA, rows flipped (Bokeh's image origin is bottom left)."""
    height, width = pixels.shape[:2]
    out = np.empty((height, width), dtype=np.uint32)
    view = out.view(np.uint8).reshape(height, width, 4)
    view[..., :3] = pixels[::-1]
    view[..., 3] = 255
    return out


class ImageView(View):
    """The image, each patch tinted by its signed score (diverging palette, ``alpha`` opacity);
    hover for the exact score, click to select."""

    view_type = "image"

    def __init__(self, result, *, state: LinkedState | None = None, width: int = 420, alpha: float = 0.6):
        if not has_image(result):
            raise ValueError("ImageView shows Attributions over image patches (options['image'])")
        super().__init__(result, state=state)
        self.width = width
        self.alpha = alpha
        self._source = None
        self._observe(self._on_state_token, "token")

    # data -----------------------------------------------------------------
    @property
    def info(self) -> dict:
        return self.result.options["image"]

    @property
    def pixels(self) -> np.ndarray:
        return np.asarray(self.info["pixels"], dtype=np.uint8)

    @property
    def grid_scores(self) -> np.ndarray:
        return patch_grid(self.result.scores, self.info["grid"])

    def patch_data(self) -> dict:
        """One row per patch: centre (x, y) in pixels (y up), size, colour, label, score, token index."""
        rows, cols = (int(v) for v in self.info["grid"])
        ph, pw = (int(v) for v in self.info["patch"])
        height = rows * ph
        values = self.grid_scores.ravel()
        r, c = np.divmod(np.arange(rows * cols), cols)
        return {"x": (c + 0.5) * pw, "y": height - (r + 0.5) * ph, "w": np.full(rows * cols, float(pw)),
                "h": np.full(rows * cols, float(ph)),
                "colour": core.diverging_colours(values, core.symmetric_scale(values)),
                "label": [f"patch({a},{b})" for a, b in zip(r.tolist(), c.tolist())], "score": values,
                "index": (1 + np.arange(rows * cols)).tolist()}

    def header_html(self, badge: bool = True) -> str:
        r = self.result
        parts = [f"<b>{core.escape(r.method or 'scores')}</b>"]
        target = r.target_label or r.target
        if target not in ("", None):
            parts.append(f"target <code>{core.token_html(target)}</code>")
        if r.model:
            parts.append(f"model <code>{core.escape(r.model)}</code>")
        parts.append(f"[CLS] {float(r.scores[0]):+.4g}")
        if r.prediction:
            parts.append(f"prediction: {prediction_html(r.prediction)}")
        shown = badge_html(r) if badge else ""
        return " &middot; ".join(parts) + (f" {shown}" if shown else "")

    def _figure(self):
        from bokeh.models import ColumnDataSource, HoverTool, TapTool
        from bokeh.plotting import figure

        pixels = self.pixels
        height, width = pixels.shape[:2]
        scale = self.width / max(width, 1)
        fig = figure(width=self.width, height=max(int(height * scale), 60), x_range=(0, width), y_range=(0, height),
                     tools="", toolbar_location=None, match_aspect=True)
        fig.axis.visible = False
        fig.grid.visible = False
        fig.image_rgba(image=[_rgba(pixels)], x=0, y=0, dw=width, dh=height)
        source = ColumnDataSource(self.patch_data())
        patches = fig.rect("x", "y", "w", "h", source=source, fill_color="colour", fill_alpha=self.alpha,
                           line_color="#444444", line_alpha=0.3, selection_line_color="#000000",
                           selection_line_width=3, selection_fill_alpha=self.alpha,
                           nonselection_fill_alpha=self.alpha, nonselection_line_alpha=0.3)
        fig.add_tools(HoverTool(renderers=[patches], tooltips=[("patch", "@label"), ("score", "@score{+0.0000}")]),
                      TapTool(renderers=[patches]))
        return fig, source

    def _build(self):
        import ipywidgets as w

        fig, self._source = self._figure()
        self._on_tap(self._source, lambda row: self.select_token(self._source.data["index"][row]))
        self._header = html_widget(self.header_html())
        self._info = html_widget(self._info_html())
        box = w.VBox([self._header, bokeh_widget(fig), self._info])
        box.add_class("xattr-view")
        box.add_class("xattr-image-view")
        return box

    def _info_html(self) -> str:
        i = self.state.token
        tokens = self.result.tokens
        if not 0 <= i < len(tokens):
            return "<i>click a patch for its exact score</i>"
        return (f"token {i} <code>{core.token_html(tokens[i])}</code>: score {self.result.scores[i]:+.6g}"
                f" (raw {self.result.raw[i]:+.6g})")

    # actions -----------------------------------------------------------------
    def select_token(self, index: int) -> None:
        """Select token ``index`` (0 = [CLS], 1 + r*cols + c = patch(r,c)); updates the linked state."""
        index = int(index)
        if not 0 <= index < len(self.result.tokens):
            raise IndexError(f"token {index} out of range 0..{len(self.result.tokens) - 1}")
        self.state.token = index

    def select_patch(self, row: int, col: int) -> None:
        """Select patch (row, col) of the grid."""
        rows, cols = (int(v) for v in self.info["grid"])
        if not (0 <= row < rows and 0 <= col < cols):
            raise IndexError(f"patch ({row}, {col}) is outside the {rows}x{cols} grid")
        self.select_token(1 + row * cols + col)

    def update(self, result) -> None:
        """Show a new result over the same kind of image."""
        with self._lock:
            self.result = result
            if self._source is not None:
                self._source.data = self.patch_data()
                self._header.value = self.header_html()
                self._info.value = self._info_html()
                self._sync_selection()

    def _on_state_token(self, change) -> None:
        if self._source is None:
            return
        self._sync_selection()
        self._info.value = self._info_html()

    def _sync_selection(self) -> None:
        i = self.state.token
        self._set_selected(self._source, [i - 1] if 1 <= i < len(self.result.tokens) else [])

    # exports -----------------------------------------------------------------
    def png_figure(self):
        """The image with the patch scores drawn over it (matplotlib)."""
        from matplotlib.colors import LinearSegmentedColormap

        pixels = self.pixels
        height, width = pixels.shape[:2]
        fig = export.new_figure(5.0, 5.0 * height / max(width, 1) + 0.6)
        ax = fig.add_axes((0.02, 0.1, 0.96, 0.85))
        ax.imshow(pixels, extent=(0, width, height, 0))
        values = self.grid_scores
        scale = core.symmetric_scale(values)
        cmap = LinearSegmentedColormap.from_list("xattr", list(core.DIVERGING))
        ax.imshow(values, cmap=cmap, vmin=-scale, vmax=scale, alpha=self.alpha, extent=(0, width, height, 0),
                  interpolation="nearest")
        i = self.state.token
        if 1 <= i < len(self.result.tokens):
            rows, cols = (int(v) for v in self.info["grid"])
            ph, pw = (int(v) for v in self.info["patch"])
            r, c = divmod(i - 1, cols)
            from matplotlib.patches import Rectangle

            ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, edgecolor="#000000", linewidth=2))
        ax.axis("off")
        fig.text(0.01, 0.02, export.plain_text(self.header_html(badge=False)), fontsize=7, parse_math=False)
        badge = convergence_badge(self.result)
        if badge:
            fig.text(0.99, 0.99, badge[:80], fontsize=8, ha="right", va="top", color="#ffffff", weight="bold",
                     parse_math=False, bbox={"facecolor": export.BADGE_COLOUR, "edgecolor": "none", "pad": 3})
        return fig

    def export_models(self) -> list:
        from bokeh.models import Div

        fig, source = self._figure()
        if 1 <= self.state.token < len(self.result.tokens):
            source.selected.indices = [self.state.token - 1]
        return [Div(text=self.header_html()), fig]
