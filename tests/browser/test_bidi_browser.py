"""Issue 27 (item 2) in Chromium: right-to-left tokens are drawn honestly.

Saved results whose tokens are Hebrew and Arabic words with their marks (U+200F, U+061C), a hostile
unterminated RIGHT-TO-LEFT OVERRIDE (U+202E) and an HTML-looking token, drawn by the JupyterLab renderer
(v1 and v2 payloads) and by the offline player (``xattr export`` of the same notebook). In both:
the drawn labels show the escapes (⟨RLM⟩, ⟨ALM⟩, ⟨RLO⟩), every token element is isolated (computed
``unicode-bidi: isolate`` or a ``<bdi>``), no raw bidi control is left in the drawn text, the words
and numbers around an isolated token keep their order on screen, and no script runs.

Uses the harness of tests/browser/conftest.py. JupyterLab draws with the extension installed where it
looks (``pip install -e .`` after changing labextension/src).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

pytestmark = pytest.mark.browser

HEBREW = "\u200f\u05de\u05e6\u05d5\u05d9\u05df"  # RLM + "excellent"
HEBREW_2 = "\u05d4\u05e1\u05e8\u05d8"  # "the film"
ARABIC = "\u061c\u0631\u0627\u0626\u0639\u0627"  # ALM + "wonderful"
HOSTILE = "\u202eevil"  # an override never closed: it would reverse everything after it on the line
TOKENS = ["[CLS]", HEBREW, "film", ARABIC, HOSTILE, "<img src=x onerror=alert(1)>", HEBREW_2, "[SEP]"]
SHOWN = {HEBREW: "\u27e8RLM\u27e9\u05de\u05e6\u05d5\u05d9\u05df", ARABIC: "\u27e8ALM\u27e9\u0631\u0627\u0626\u0639\u0627",
         HOSTILE: "\u27e8RLO\u27e9evil"}
#: bidi controls that must never reach the drawn text (FSI/PDI are the renderer's own tooltip isolates)
RAW = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067"

#: what the page shows, read in the page: token elements, drawn text, and the order on screen of the
#: pieces of the header's prediction line and of the readout after hovering the hostile token
PROBE = r"""(selector) => {
  const views = [...document.querySelectorAll(selector)].filter(v => v.dataset.kind);
  const tokens = views.flatMap(v => [...v.querySelectorAll('.xattr-lab-token, text.xattr-lab-node-label, bdi')]);
  const box = n => { if (n.nodeType === 3) { const r = document.createRange(); r.selectNodeContents(n); return r.getBoundingClientRect(); }
                     return n.getBoundingClientRect(); };
  const order = line => [...line.childNodes].filter(n => (n.textContent || '').trim())
    .map(n => ({ text: n.textContent, left: box(n).left, right: box(n).right }));
  const strip = views.find(v => v.dataset.kind === 'attribution');
  const hostile = [...strip.querySelectorAll('.xattr-lab-token')].find(t => t.textContent.includes('RLO'));
  hostile.dispatchEvent(new MouseEvent('mouseenter'));
  return {
    kinds: views.map(v => v.dataset.kind),
    tokens: tokens.map(t => ({ tag: t.localName, cls: t.getAttribute('class') || '', text: (t.firstChild || {}).textContent || '',
                               bidi: getComputedStyle(t).unicodeBidi, dir: t.getAttribute('dir') })),
    strip: [...strip.querySelectorAll('.xattr-lab-token')].map(t => t.textContent),
    drawn: views.map(v => v.innerText).join('\n'),
    prediction: order(strip.querySelector('.xattr-lab-prediction')),
    readout: order(strip.querySelector('.xattr-lab-readout')),
    scripts: views.reduce((k, v) => k + v.querySelectorAll('script, iframe, object, embed, img, a').length, 0),
  };
}"""


def _results():
    from xattr_lab.results import Attribution, FlowResult

    n = len(TOKENS)
    rng = np.random.default_rng(27)
    E = rng.random((2, n, n))
    attribution = Attribution(tokens=TOKENS, scores=np.linspace(-1, 1, n), method="ig", target_label=HOSTILE,
                              prediction={HEBREW: 0.6, HEBREW_2: 0.4}, model="synthetic")
    flow = FlowResult(tokens=TOKENS, attributions=E[0].sum(0), edge_flow=E, value=float(E[0].sum()), sources=[0])
    return attribution, flow


@pytest.fixture(scope="module")
def bidi_notebook(jupyterlab) -> Path:
    """A notebook of saved outputs only: v2 bundles (what notebooks save) and the v1 JSON of old ones."""
    import nbformat

    from xattr_lab.constants import MIME_TYPE
    from xattr_lab.widgets import mime_bundle

    attribution, flow = _results()
    outputs = [mime_bundle(r, widget=False) for r in (attribution, flow)]
    outputs.append({MIME_TYPE: attribution.to_dict(), "text/plain": "an old saved output"})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "results", outputs=[nbformat.v4.new_output("display_data", data=d) for d in outputs])])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path = jupyterlab.root_dir / "bidi.ipynb"
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(path)], env=jupyterlab.env, capture_output=True,
                   check=False)
    return path


def _check(seen: dict, kinds: list[str]) -> None:
    assert seen["kinds"] == kinds
    assert seen["strip"][1:5] == [SHOWN[HEBREW], "film", SHOWN[ARABIC], SHOWN[HOSTILE]]
    assert seen["strip"][5] == TOKENS[5]  # HTML stays text
    assert not set(RAW) & set(seen["drawn"]), [hex(ord(c)) for c in set(RAW) & set(seen["drawn"])]
    for shown in SHOWN.values():
        assert shown in seen["drawn"]
    # every token element isolated: a <bdi> or computed unicode-bidi: isolate
    kinds_seen = {t["cls"].split()[0] if t["cls"] else t["tag"] for t in seen["tokens"]}
    assert {"xattr-lab-token", "xattr-lab-node-label", "xattr-lab-tok"} <= kinds_seen, kinds_seen
    for token in seen["tokens"]:
        assert token["tag"] == "bdi" or token["bidi"] == "isolate", token
        assert token["bidi"] == "isolate", token  # Chromium's computed style, <bdi> included
        if token["tag"] != "text":
            assert token["dir"] == "auto", token
    # on screen: "prediction:", the first Hebrew name, its number, the second name, its number, left to right
    pieces = [p for p in seen["prediction"] if p["text"].strip(" ,")]
    assert [p["text"].strip(" ,") for p in pieces] == ["prediction:", SHOWN[HEBREW], "0.600", HEBREW_2, "0.400"], pieces
    assert all(a["right"] <= b["left"] + 0.5 for a, b in zip(pieces, pieces[1:])), pieces
    # the readout after hovering the override: "#4", the token, then its score, not reversed by it
    readout = seen["readout"]
    assert readout[0]["text"].strip() == "#4" and readout[1]["text"] == SHOWN[HOSTILE], readout
    assert readout[2]["text"].strip().startswith("score") and readout[1]["right"] <= readout[2]["left"] + 0.5, readout
    assert seen["scripts"] == 0  # no element made from a token


def test_jupyterlab_draws_rtl_tokens_isolated_with_visible_marks(jupyterlab, page, bidi_notebook, artifacts):
    jupyterlab.open_notebook(page, bidi_notebook.name)
    page.wait_for_function("() => document.querySelectorAll('.xattr-lab-renderer .xattr-lab-view[data-kind]').length === 3",
                           timeout=60_000)
    seen = page.evaluate(PROBE, ".xattr-lab-renderer .xattr-lab-view")
    page.screenshot(path=str(artifacts / "bidi-jupyterlab.png"), full_page=True)
    _check(seen, ["attribution", "flow", "attribution"])
    # the v1 output (an old saved notebook) draws the same labels as the v2 one
    v1 = page.eval_on_selector_all(".xattr-lab-renderer .xattr-lab-view[data-kind='attribution']",
                                   "vs => vs.map(v => [...v.querySelectorAll('.xattr-lab-token')].map(t => t.textContent))")
    assert v1[0] == v1[1]
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert not [m for m in page.console_messages if "alert" in m]  # type: ignore[attr-defined]


def test_the_player_draws_rtl_tokens_isolated_with_visible_marks(page, bidi_notebook, tmp_path, artifacts):
    from xattr_lab.widgets.notebook_html import export_notebook

    target = Path(export_notebook(bidi_notebook, tmp_path / "bidi.html"))
    blocked: list[str] = []

    def route(r):  # offline: the page may load nothing but itself
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")) or urlparse(url).hostname == "127.0.0.1":
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    page.context.route("**/*", route)
    page.goto(target.as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.xattr-lab-player-view[data-kind]').length === 3",
                           timeout=30_000)
    seen = page.evaluate(PROBE, ".xattr-lab-player-view")
    page.screenshot(path=str(artifacts / "bidi-player.png"), full_page=True)
    _check(seen, ["attribution", "flow", "attribution"])
    written = target.read_text(encoding="utf-8").count("<script")  # payloads, the player, the mount calls
    assert page.evaluate("() => document.querySelectorAll('script, iframe, object, embed, img').length") == written
    assert blocked == [] and page.dialogs == []  # type: ignore[attr-defined]
