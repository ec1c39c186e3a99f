"""The ``text/html`` item of a display bundle: the saved result drawn by the xattr-lab player.

The player is the JupyterLab extension's renderer (labextension/src/render.ts) bundled by esbuild
from labextension/src/player.ts into one IIFE, ``static/xattr-player.js`` (~20 KB), shipped in the
wheel. An item is self-contained (no network, no CDN, no kernel): the payload as JSON in a
``<script type="application/json">`` (``<``, ``>``, ``&``, U+2028/9 written as ``\\u003c``...), a text
fallback for pages that strip scripts, and the player behind a guard, so a page sets it up once
however many outputs carry it. Stdlib only (docs/ARCHITECTURE.md, section "Front end").
"""
from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from importlib import resources

from xattr_lab.errors import XattrError

__all__ = ["PLAYER_VERSION", "player_script", "payload_script", "html_item", "player_tag", "MOUNT_SCRIPT", "PLAYER_TAG_RE"]

#: the version of the markup contract; equal to PLAYER_VERSION in labextension/src/player.ts
PLAYER_VERSION = 1
#: what every item runs after its markup: draw the payload blocks not drawn yet
MOUNT_SCRIPT = "window.xattrLabPlayer&&window.xattrLabPlayer.mountAll(document);"
#: the player's own <script> element in an item (``xattr export`` keeps one per page)
PLAYER_TAG_RE = re.compile(r'<script data-xattr-player="(\d+)">.*?</script>', re.S)
#: classes that make MathJax 2 and 3 (a page's own, e.g. nbconvert's) skip a subtree: tokens stay text
NO_MATH_CLASSES = "tex2jax_ignore mathjax_ignore"
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@lru_cache(maxsize=1)
def player_script() -> str:
    """The player's JavaScript (the built ``static/xattr-player.js``).

    Raises XattrError when the file is missing (rebuild it: ``npm run build:player`` in labextension/)
    or could end the ``<script>`` element that inlines it.
    """
    try:
        text = (resources.files(__package__) / "static" / "xattr-player.js").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as error:
        raise XattrError("the xattr-lab player (xattr_widgets/static/xattr-player.js) is missing; run "
                         "`npm run build:player` in labextension/ or reinstall xattr-lab") from error
    if re.search(r"</script|<!--", text, re.I):
        raise XattrError("the built xattr-lab player contains '</script' or '<!--' and cannot be inlined in HTML")
    return text


def payload_script(payload: dict) -> str:
    """``payload`` as a JSON data block that no string in it can close or break out of.

    JSON has ``<``, ``>`` and ``&`` only inside strings, where ``\\u003c`` etc. read back the same.
    """
    text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    text = re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)
    return f'<script type="application/json" class="xattr-lab-payload">{text}</script>'


def player_tag() -> str:
    """The guarded player: sets ``window.xattrLabPlayer`` up unless this version (or newer) is there."""
    version = PLAYER_VERSION
    return (f'<script data-xattr-player="{version}">if(!(window.xattrLabPlayer&&window.xattrLabPlayer.version>='
            f"{version})){{{player_script()}\n}}</script>")


def html_item(payload: dict, fallback: str = "", *, player: bool = True) -> str:
    """The ``text/html`` of one result: its payload block, an escaped text ``fallback`` (shown where
    scripts do not run), the player (unless ``player=False``) and the mount call."""
    note = html.escape(fallback or "xattr-lab result", quote=True)
    return (f'<div class="xattr-lab-player {NO_MATH_CLASSES}">{payload_script(payload)}'
            f'<pre class="xattr-lab-fallback" style="white-space:pre-wrap">{note}</pre></div>'
            f"{player_tag() if player else ''}<script>{MOUNT_SCRIPT}</script>")
