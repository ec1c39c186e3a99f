"""The "not converged" badge in every place an attribution is shown: widget header, HTML export,
PNG, and (labextension/test/render.test.ts) the JupyterLab renderer of the saved JSON.

Results here are built by hand (no model), as a gradient method records them
(docs/ARCHITECTURE.md, section "Gradients").
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from xattr_lab import widgets
from xattr_lab.results import Attribution
from xattr_lab.widgets.views.base import convergence_badge

TOKENS = ["When", "\u0120Mary", "<img src=x onerror=alert(1)>", "\u0120to"]
BADGE_RGB = np.array([0xB2, 0x18, 0x2B]) / 255


def attribution(converged: bool | None, error: float = 0.5412, scores=(0.0, 0.0, 0.0, 0.0)) -> Attribution:
    options = {} if converged is None else {
        "converged": converged, "relative_completeness_error": error, "convergence_tol": 0.05}
    return Attribution(tokens=TOKENS, scores=np.array(scores, float), method="ig", target=5, target_label=" Mary",
                       options=options, model="fake")


def test_badge_text():
    assert convergence_badge(attribution(False)) == "not converged: completeness error 54%"
    assert convergence_badge(attribution(False, 1012.7)) == "not converged: completeness error 101,270%"
    assert convergence_badge(attribution(False, 0.003)) == "not converged: completeness error 0.3%"
    assert convergence_badge(attribution(False, float("nan"))) == "not converged"
    assert convergence_badge(attribution(True)) == ""
    assert convergence_badge(attribution(None)) == ""


def test_widget_header_shows_the_badge_and_updates(tmp_path):
    view = widgets.view(attribution(False), display=False)
    header = view.widget.children[0].value
    assert "not converged: completeness error 54%" in header and "xattr-not-converged" in header
    assert "<img" not in header  # data stays escaped next to the badge
    view.update(attribution(True))
    assert "not converged" not in view.widget.children[0].value
    view.update(attribution(False, 2.0))
    assert "completeness error 200%" in view.widget.children[0].value


def test_html_export_shows_the_badge(tmp_path):
    page = open(widgets.view(attribution(False), display=False).to_html(tmp_path / "a.html"), encoding="utf-8").read()
    assert "not converged: completeness error 54%" in page
    clean = open(widgets.view(attribution(True), display=False).to_html(tmp_path / "b.html"), encoding="utf-8").read()
    assert "not converged" not in clean


def _badge_pixels(view) -> int:
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(view.png_bytes()), format="png")[..., :3]
    top_right = image[: image.shape[0] // 5, image.shape[1] // 2:]
    return int(np.sum(np.all(np.abs(top_right - BADGE_RGB) < 0.02, axis=-1)))


@pytest.mark.parametrize("scores", [(0.0, 0.0, 0.0, 0.0), (1.0, -1.0, 0.5, 2.0)])
def test_png_draws_the_badge_only_when_not_converged(scores):
    assert _badge_pixels(widgets.view(attribution(False, scores=scores), display=False)) > 200
    assert _badge_pixels(widgets.view(attribution(True, scores=scores), display=False)) == 0
    assert _badge_pixels(widgets.view(attribution(None, scores=scores), display=False)) == 0


def test_saved_json_carries_what_the_renderer_reads():
    payload = widgets.mime_bundle(attribution(False))["application/vnd.xattr.v2+json"]
    again = json.loads(json.dumps(payload, allow_nan=False))
    assert again["options"]["converged"] is False
    assert again["options"]["relative_completeness_error"] == pytest.approx(0.5412)


def test_text_repr_says_not_converged():
    """The text/plain part of a result's bundle carries the badge too."""
    import numpy as np

    from xattr_lab.results import Attribution

    base = dict(tokens=["a", "b"], scores=np.array([0.5, -0.5]), raw=np.array([1.0, -1.0]), target=0, method="ig")
    bad = Attribution(**base, options={"converged": False, "relative_completeness_error": 0.54})
    good = Attribution(**base, options={"converged": True, "relative_completeness_error": 0.01})
    assert "NOT CONVERGED: completeness error 54%" in repr(bad)
    assert "CONVERGED" not in repr(good)
