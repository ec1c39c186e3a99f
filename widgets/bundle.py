"""The MIME bundle every result displays as (docs/ARCHITECTURE.md, section "Front end").

    application/vnd.jupyter.widget-view+json   the live view (only in a kernel with a front end)
    application/vnd.xattr.v2+json              xattr_lab.payload.to_payload(result), "model_id": str | None
    text/html                                  the same data drawn by the player (``player.html_item``):
                                               no kernel, no network; clicks answered from the data
    image/png                                  base64 PNG (matplotlib), for pages that strip scripts
    text/plain                                 repr(result)

A result + the view that shows it -> the bundle. This module imports no view and does not choose
one: the caller passes the view (``xattr_lab.widgets.mime_bundle`` picks it with ``select``).
"""
from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any, Callable

from xattr_lab.constants import MIME_TYPE, MIME_TYPE_V2, WIDGET_MIME
from xattr_lab.payload import to_payload  # numpy only: no torch
from xattr_lab.core.cache import LRUCache  # stdlib only: no torch

from . import export, player

#: The xattr result MIME type (an alias of ``xattr_lab.constants.MIME_TYPE``).
XATTR_MIME = MIME_TYPE

__all__ = ["mime_bundle", "add_html_item", "widget_entry", "in_kernel", "ensure_bokeh_loaded", "main_loop_scheduler",
           "bokeh_loader", "publish_bokeh_loader", "BOKEH_LOADER_MIME", "LOADER_SENT",
           "LinkedViews",
           "ResultCache", "WIDGET_MIME", "XATTR_MIME", "MIME_TYPE"]

#: the MIME type of BokehJS loader outputs (jupyter_bokeh's renderer in JupyterLab and Notebook 7)
BOKEH_LOADER_MIME = "application/vnd.bokehjs_load.v0+json"
#: what a sent loader output is replaced by (:func:`publish_bokeh_loader`): an empty text, which every reader of
#: a saved notebook shows as nothing (JupyterLab, nbconvert, MyST-NB; an output with no data at all makes
#: nbconvert and MyST-NB warn that nothing can represent it)
LOADER_SENT: dict = {"text/plain": ""}

_loaded_sessions: set[str] = set()
_bokeh_lock = threading.Lock()


def in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets have a comm); False in plain IPython / scripts.

    ``XATTR_LAB_WIDGETS=0`` turns live widgets off (text/PNG/JSON only).
    """
    if os.environ.get("XATTR_LAB_WIDGETS", "1") == "0":
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _client_session() -> str:
    """The id of the front-end connection that sent the request being handled ("" if unknown).

    Every browser page (and every reload) opens its own kernel connection with its own session id.
    """
    try:
        from IPython import get_ipython

        parent = get_ipython().kernel.get_parent()
        return str((parent or {}).get("header", {}).get("session", ""))
    except Exception:  # pragma: no cover - not in a kernel / older kernels
        return ""


def bokeh_loader() -> dict:
    """The display data that loads BokehJS from INLINE resources (no CDN), as ``bokeh.io.output_notebook``
    builds it: ``application/javascript`` for classic front ends and ``application/vnd.bokehjs_load.v0+json``
    for JupyterLab and Notebook 7 (jupyter_bokeh's renderer). Each is the whole of BokehJS (~4 MB, str);
    a front end runs one of them."""
    from bokeh.core.templates import AUTOLOAD_NB_JS
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    scripts = bundle_for_objs_and_resources(None, INLINE)

    def loader(register_mime: bool) -> str:
        return AUTOLOAD_NB_JS.render(bundle=scripts, elementid=None, force=True, timeout=5000,
                                     register_mime=register_mime)

    return {"application/javascript": loader(True), BOKEH_LOADER_MIME: loader(False)}


def publish_bokeh_loader() -> str:
    """Send BokehJS to the front end as a display-only output: published under a display id, then at once
    replaced (same id) by :data:`LOADER_SENT`, an empty text. The page runs the script when the first
    message arrives (outputs are rendered in message order, a script when it is attached); what a notebook
    saves (JupyterLab, Notebook 7, nbclient) is the replacement, so no saved notebook carries BokehJS.
    Returns the display id."""
    import uuid

    from IPython.display import publish_display_data, update_display

    display_id = f"xattr-bokehjs-{uuid.uuid4().hex}"
    publish_display_data(bokeh_loader(), transient={"display_id": display_id})
    update_display(LOADER_SENT, raw=True, display_id=display_id)
    return display_id


def ensure_bokeh_loaded() -> bool:
    """Load BokehJS (INLINE resources, no CDN) once per kernel and front-end connection, without saving it
    (:func:`publish_bokeh_loader`).

    A page that connects later (a reload, a second tab) has no BokehJS yet: it is recognised by its
    new session id and gets the loader with its first view. Returns True if it published it now.
    """
    with _bokeh_lock:
        if not in_kernel():
            return False
        session = _client_session()
        if session in _loaded_sessions:
            return False
        publish_bokeh_loader()
        _loaded_sessions.add(session)
        return True


def widget_entry(widget: Any) -> dict:
    """The widget-view MIME entry of an ipywidget (loads BokehJS for this front end first)."""
    ensure_bokeh_loaded()
    return {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}


def add_html_item(bundle: dict) -> dict:
    """Add ``text/html`` (the player drawing the bundle's xattr payload, without its session-bound
    ``model_id``) to ``bundle`` in place; a failure is noted in ``text/plain``, nothing else is lost."""
    payload = next((value for key, value in bundle.items() if key.startswith("application/vnd.xattr.")
                    and isinstance(value, dict)), None)
    if payload is None:
        return bundle
    try:
        data = {key: value for key, value in payload.items() if key != "model_id"}
        bundle["text/html"] = player.html_item(data, str(bundle.get("text/plain", "")))
    except Exception as error:  # never lose the other representations to a missing player
        bundle["text/plain"] = f"{bundle.get('text/plain', '')}\n(HTML rendering failed: {error})"
    return bundle


def mime_bundle(result, view, *, widget: bool | None = None, png: bytes | None = None) -> dict:
    """The display bundle of ``result`` (see module docstring).

    view: the view showing the result (anything with ``.widget`` and ``.png_bytes()``; see
    ``xattr_lab.widgets.select.view_for``).
    widget: force the live widget on/off (default: on inside a kernel).
    png: the PNG to use (default: ``view.png_bytes()``).
    """
    if view is None:
        raise TypeError("mime_bundle needs the view of the result; use xattr_lab.widgets.mime_bundle(result), "
                        "which picks it")
    widget = in_kernel() if widget is None else widget
    model_id = None
    bundle: dict = {"text/plain": repr(result)}
    if widget:
        entry = widget_entry(view.widget)
        model_id = entry["model_id"]
        bundle[WIDGET_MIME] = entry
    try:
        bundle[MIME_TYPE_V2] = to_payload(result, model_id=model_id)  # what the views draw (xattr_lab.payload)
    except TypeError:  # a kind v2 does not define yet: its v1 JSON
        bundle[MIME_TYPE] = {**result.to_dict(), "model_id": model_id}
    try:
        bundle["image/png"] = base64.b64encode(view.png_bytes() if png is None else png).decode("ascii")
    except Exception as error:  # never lose the other representations to a drawing problem
        bundle["text/plain"] += f"\n(PNG rendering failed: {error})"
    return add_html_item(bundle)


def main_loop_scheduler() -> Callable[[Callable[[], Any]], Any] | None:
    """In a kernel, a thread-safe way to run a callable on its main thread (the shell's event loop,
    where comm messages change the views too); None outside a kernel. Bokeh documents and widget
    trees are changed only there, never from worker threads."""
    if not in_kernel():
        return None
    from IPython import get_ipython

    loop = getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    return None if loop is None else loop.add_callback


class MainThreadViews:
    """View changes handed from worker threads to the kernel's main thread, run in order.

    Users set ``self._schedule`` (a scheduler, or None for :func:`main_loop_scheduler`) and
    ``self._pending`` (a ``collections.deque``) in ``__init__``.
    """

    _schedule: Callable[[Callable[[], Any]], Any] | None = None
    _pending: Any

    def _on_main(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` (a change to the views) on the thread that owns them: now when called from the
        main thread or outside a kernel, else handed to the kernel's main loop."""
        schedule = self._schedule or main_loop_scheduler()
        if schedule is None or threading.current_thread() is threading.main_thread():
            self._drain()
            fn()
            return
        self._pending.append(fn)
        schedule(self._drain)

    def _drain(self) -> None:
        """Run the view changes handed over by workers (main thread), in order."""
        while self._pending:  # only the main thread drains: no other consumer
            self._pending.popleft()()


class LinkedViews:
    """Display and export of a group of linked views (the Explorer): the bundle is the live widget
    plus every view's result (v2 "explorer" payload, ``text/html``, PNG of ``png_figure()``). Shown
    with a display id; ``_update_display()`` rewrites the output once results land (the views are
    computed after the output is first shown), so a saved notebook keeps them.

    Subclasses give ``widget``, ``show()``, ``_active_views()``, ``to_dict()``, ``png_figure()``
    and a ``_shown_at`` attribute.
    """

    _display_id: str | None = None  # the id every output of these views is shown under
    _displayed = False

    def _repr_mimebundle_(self, include=None, exclude=None):
        self.show()
        return self._bundle()

    def _bundle(self) -> dict:
        """The live widget (in a kernel), every linked view's result (v2 payload, kind "explorer"; no
        view before anything is computed), the player's ``text/html`` and the PNG of ``png_figure()``."""
        out: dict = {"text/plain": repr(self)}
        model_id = None
        if in_kernel():
            entry = widget_entry(self.widget)
            model_id = entry["model_id"]
            out[WIDGET_MIME] = entry
        # every linked view's result (xattr_lab.payload, kind "explorer"); there from the first display,
        # even with no view yet, so a front end keeps one renderer (and the live widget) across updates
        out[MIME_TYPE_V2] = to_payload(self, model_id=model_id)
        if self._active_views():
            try:
                out["image/png"] = base64.b64encode(export.png_bytes(self.png_figure())).decode("ascii")
            except Exception as error:  # no strip (or a drawing problem): the other items stay
                out["text/plain"] += f"\n(PNG rendering failed: {error})"
        return add_html_item(out)

    def _ipython_display_(self):
        from IPython import get_ipython
        from IPython.display import display

        count = getattr(get_ipython(), "execution_count", None)
        if count is not None and self._shown_at == count:
            return
        self._shown_at = count
        if self._display_id is None:
            import uuid

            self._display_id = uuid.uuid4().hex
        bundle = self._repr_mimebundle_()
        display(bundle, raw=True, display_id=self._display_id)
        self._displayed = True

    def _update_display(self) -> None:
        """Rewrite every displayed output of these views with the current bundle (main thread only:
        called when a computation is finished), so a saved notebook keeps the linked views' data."""
        if not self._displayed:
            return
        from IPython.display import update_display

        try:
            update_display(self._bundle(), raw=True, display_id=self._display_id)
        except Exception as error:  # noqa: BLE001 - the live widget keeps working; the saved copy lags
            self.errors = [*getattr(self, "errors", []), f"display update: {error}"]  # kept with the errors

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def export_models(self) -> list:
        return [model for view in self._active_views() for model in view.export_models()]

    def to_html(self, path) -> str:
        return export.write_html(self.export_models(), path)

    def to_png(self, path) -> str:
        return export.write_png(self.png_figure(), path)


def result_bytes(result: Any) -> int:
    """What a result holds: its arrays' bytes plus its text fields (an estimate)."""
    fields = vars(result) if hasattr(result, "__dict__") else {}
    total = 256
    for value in fields.values():
        nbytes = getattr(value, "nbytes", None)
        total += nbytes if isinstance(nbytes, int) else len(value) if isinstance(value, str) else \
            64 * len(value) if isinstance(value, (list, tuple, dict)) else 16
    return total


class ResultCache(LRUCache):
    """Results by key, bounded by a byte budget (sized by :func:`result_bytes`); the least
    recently used go first. The compute side's :class:`xattr_lab.core.cache.LRUCache` (stdlib only)."""

    def __init__(self, max_bytes: int, sizeof: Callable[[Any], int] = result_bytes):
        super().__init__(int(max_bytes), sizeof)
