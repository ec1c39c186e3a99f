"""Explorer: model, method, target and text controls plus linked views of one text.

Changing a control recomputes on a worker thread (the comm thread stays free), with a progress
bar. Each request is a snapshot of the controls taken when it starts (:class:`_Request`), so a
text changed while a model loads never lands in another text's result. A generation counter
drops results a newer request made stale; results are cached (LRU, ``cache_bytes``) by code
version, model fingerprint, text, method, target and options, so going back is instant. In a
kernel, views change on the main thread only (Bokeh documents are not thread-safe): the worker
hands results over (``bundle.main_loop_scheduler``); the output then shows them (``_update_display``).
"""
from __future__ import annotations

import collections
import importlib
import threading
import time
from typing import Any, Callable, NamedTuple

from xattr_lab.constants import DEFAULT_MODEL, SCHEMA
from xattr_lab.methods.registry import ATTRIBUTION_METHODS  # pure data, no torch
from xattr_lab.target_spec import parse_target, target_text  # pure strings, no torch

from . import bundle, core
from .views import FlowView, HeadGrid, LinkedState, TokenStrip, token_strip
from .views.base import html_widget

#: Where ``load(name)`` comes from when the Explorer is given a model name and no loader.
COMPUTE_PACKAGE = "xattr_lab"

__all__ = ["Explorer", "METHODS", "target_text"]

#: Methods offered in the method picker: the registry's token-attribution methods.
METHODS = ATTRIBUTION_METHODS


class _Request(NamedTuple):
    """The controls when a request started: what it computes, whatever changes meanwhile."""

    model: str
    text: str
    target: Any
    options: dict


def _code_version() -> str:
    return str(getattr(importlib.import_module(COMPUTE_PACKAGE), "__version__", "?"))


class Explorer(bundle.MainThreadViews, bundle.LinkedViews):
    """Controls + linked token strip, flow view and head grid for one text.

    ex: an Explainer or a model name (``xattr_lab.load`` runs on first use); text: the text.
    views: which linked views to show, from ("strip", "flow", "heads").
    background: compute on a worker thread (True in notebooks; False runs inline, for scripts/tests).
    options: extra keyword options for ``ex.attribute`` (e.g. {"steps": 16}).
    cache_bytes: the result cache's budget. schedule: runs a callable on the thread that owns the
    views (default: the kernel's main loop in a kernel, else the calling thread).
    """

    view_type = "explorer"

    def __init__(self, ex: Any = None, text: str = "", *, method: str = "attention", target: Any = None,
                 views: tuple[str, ...] = ("strip", "flow", "heads"), background: bool = True,
                 options: dict | None = None, models: tuple[str, ...] | None = None,
                 loader: Callable[[str], Any] | None = None, cache_bytes: int = 256 << 20,
                 schedule: Callable[[Callable[[], None]], Any] | None = None):
        self.explainers: dict[str, Any] = {}
        self._loader = loader
        if ex is None or isinstance(ex, str):
            self.model_name = ex or DEFAULT_MODEL
        else:
            self.model_name = getattr(ex, "name", "model")
            self.explainers[self.model_name] = ex
        self.text, self.method, self.target = text, method, target
        self.options, self.views, self.background = dict(options or {}), tuple(views), background
        self.models = tuple(models) if models else (self.model_name,)
        self.state = LinkedState()
        self.cache = bundle.ResultCache(cache_bytes)
        self.strip: TokenStrip | None = None
        self.flow: FlowView | None = None
        self.heads: HeadGrid | None = None
        self.errors, self.timings, self._job = [], [], 0  # _job: overall request counter (progress/status)
        self._generation: dict[str, int] = {"attribution": 0, "flow": 0, "heads": 0}  # per view kind
        self._thread, self._threads = None, []  # the latest worker; every worker still running
        self._lock, self._load_lock = threading.RLock(), threading.Lock()
        self._schedule, self._pending = schedule, collections.deque()
        self._widget, self._shown_at = None, None

    # ------------------------------------------------------------------ model
    @property
    def explainer(self):
        return self._load(self.model_name)

    def _load(self, model: str):
        with self._load_lock:  # two requests for one model load it once
            if model not in self.explainers:
                if self._loader is not None:
                    self.explainers[model] = self._loader(model)
                else:  # the compute package, bound at run time: the front end never imports it (nor torch)
                    self.explainers[model] = importlib.import_module(COMPUTE_PACKAGE).load(model)
            return self.explainers[model]

    def _request(self) -> _Request:
        return _Request(self.model_name, self.text, self.target, dict(self.options))

    def _key(self, request: _Request, kind: str, method: str | None = None, extra: dict | None = None):
        """The cache key, or None while the request's model is not loaded (nothing cached for it yet)."""
        ex = self.explainers.get(request.model)
        if ex is None:
            return None
        fingerprint = getattr(ex, "fingerprint", None)
        model = fingerprint() if callable(fingerprint) else f"{type(ex).__name__}:{id(ex):x}"
        return (_code_version(), model, request.model, request.text, kind, method or "", repr(request.target),
                core.freeze(request.options), core.freeze(extra or {}))

    # ------------------------------------------------------------------ compute
    def _compute(self, request: _Request, kind: str, method: str | None = None, extra: dict | None = None,
                 generation: int | None = None):
        """One result of ``request``, cached or computed (may take long: off the comm thread). With a
        ``generation``, SIG streams partial scores to the strip; a newer request or ``cancel()`` stops it."""
        ex = self._load(request.model)
        key = self._key(request, kind, method, extra)
        if key in self.cache:
            return self.cache[key]
        if kind == "attribution":
            options = dict(request.options)
            if method == "sig" and generation is not None:
                options["callback"] = lambda partial: self._stream(generation, partial)
            result = ex.attribute(request.text, method=method, target=request.target, **options)
        elif kind == "flow":
            result = ex.flow(request.text, target=request.target, **token_strip.granularity_option(request.options), **(extra or {}))
        elif kind == "heads":
            result = ex.heads(request.text)
        else:  # pragma: no cover
            raise ValueError(kind)
        self.cache[key] = result
        return result

    def _plan(self) -> list[tuple[str, str | None, dict | None]]:
        flow = {"sources": [self.state.output]} if self.state.output >= 0 else None
        plan = {"strip": ("attribution", self.method, None), "flow": ("flow", None, flow),
                "heads": ("heads", None, None)}
        return [plan[name] for name in ("strip", "flow", "heads") if name in self.views]

    def refresh(self, reason: str = "refresh") -> int:
        """Recompute every view for the current controls; returns the job number. Cached results are
        applied at once; the rest runs on a worker thread (``background=True``), applied only if no
        newer job started meanwhile."""
        return self._run(self._plan(), reason)

    def _run(self, plan, reason: str) -> int:
        with self._lock:
            self._job += 1
            job, request = self._job, self._request()
            plan = [(kind, method, extra, self._bump(kind)) for kind, method, extra in plan]
        started = time.perf_counter()
        self.errors = []
        keys = [self._key(request, kind, method, extra) for kind, method, extra, _ in plan]
        if all(key is not None and key in self.cache for key in keys):
            for (kind, _, _, generation), key in zip(plan, keys):
                self._apply(generation, kind, self.cache[key])
            self._finish(job, reason, started, cached=True)
            return job
        self._set_progress(0, len(plan), f"computing ({reason})...")
        if self.background:
            self._thread = threading.Thread(target=self._work, args=(job, request, plan, reason, started),
                                            daemon=True, name=f"xattr-explorer-{job}")
            self._threads = [t for t in self._threads if t.is_alive()] + [self._thread]
            self._thread.start()
        else:
            self._work(job, request, plan, reason, started)
        return job

    def _stream(self, generation: int, partial) -> bool:
        """SIG callback: show the partial strip; False (stop) once the request is stale."""
        if generation != self._generation["attribution"]:
            return False
        done, total = len(partial.options["positions_done"]), partial.options["positions_total"]
        self._on_main(lambda: (self._apply(generation, "attribution", partial),
                               self._set_progress(done, total, f"sig: {done} of {total} tokens...")))
        return True

    def _bump(self, kind: str) -> int:
        self._generation[kind] += 1
        return self._generation[kind]

    def _work(self, job: int, request: _Request, plan, reason: str, started: float) -> None:
        """Compute ``plan`` for ``request``; whatever happens, the job is finished (progress hidden)."""
        try:
            for done, (kind, method, extra, generation) in enumerate(plan):
                if generation != self._generation[kind]:
                    continue  # stale: a newer request for this view took over
                self._on_main(lambda d=done, m=method or kind: self._set_progress(d, len(plan), f"computing {m}..."))
                try:
                    result = self._compute(request, kind, method, extra, generation)
                except Exception as error:  # shown to the user, never raised on the worker thread
                    if generation == self._generation[kind]:
                        self.errors.append(f"{kind}: {error}")
                    continue
                self._on_main(lambda g=generation, k=kind, r=result: self._apply(g, k, r))
        except BaseException:  # an interrupt (inline): shown, then raised
            self.errors.append("interrupted")
            raise
        finally:
            self._on_main(lambda: self._finish(job, reason, started, cached=False))

    def _finish(self, job: int, reason: str, started: float, cached: bool) -> None:
        if job != self._job:
            return
        elapsed = time.perf_counter() - started
        self.timings.append({"job": job, "reason": reason, "seconds": elapsed, "cached": cached})
        self._set_progress(1, 1, "")
        if self.errors:
            self._set_status("<span style='color:#b2182b'>" + "<br>".join(core.escape(e) for e in self.errors)
                             + "</span>")
        else:
            self._set_status(f"{'cached' if cached else 'computed'} in {1000 * elapsed:.0f} ms")
        self._update_display()  # the saved output keeps the linked views (bundle.LinkedViews)

    def _apply(self, generation: int, kind: str, result) -> None:
        """Show ``result`` unless a newer request made it stale; a view that fails says so in ``errors``."""
        with self._lock:
            if generation != self._generation[kind]:
                return
            try:
                self._show(kind, result)
            except Exception as error:  # noqa: BLE001 - reported like a failed computation
                self.errors.append(f"{kind}: {error}")

    def _show(self, kind: str, result) -> None:
        if kind == "attribution" and self.strip is not None:
            self.strip.update(result)
        elif kind == "attribution":
            self.strip = TokenStrip(result, state=self.state, explorer=self)
            self._mount("strip", self.strip)
        elif kind == "flow" and self.flow is not None and self.flow.fits(result):
            self.flow.update(result)
        elif kind == "flow":  # first, or other layers or tokens (another model): a new graph
            if self.flow is not None:
                self.flow.close()
            self.flow = FlowView(result, state=self.state, retarget=self.retarget)
            self._mount("flow", self.flow)
        elif kind == "heads":
            if self.heads is not None:
                self.heads.close()
            self.heads = HeadGrid(result, state=self.state)
            self._mount("heads", self.heads)

    def cancel(self) -> None:
        """Drop every running request: a streaming SIG computation stops at its next group of tokens;
        other methods finish on their worker thread and their results are discarded."""
        with self._lock:
            for kind in self._generation:
                self._bump(kind)
            self._job += 1
        self._set_progress(1, 1, "")
        self._set_status("cancelled")

    def wait(self, timeout: float | None = 60) -> None:
        """Block until the workers are done, then show what they handed over (views and output)."""
        for thread in list(self._threads):
            thread.join(timeout)
        if threading.current_thread() is threading.main_thread():
            self._drain()
            self._update_display()

    # ------------------------------------------------------------------ user actions
    def set(self, *, text: str | None = None, method: str | None = None, target: Any = "__keep__",
            model: str | None = None, options: dict | None = None) -> int:
        """Change controls (as the widgets do) and recompute. Returns the job number."""
        if text is not None:
            if text != self.text:
                self.state.token = self.state.output = -1
            self.text = text
        self.method = self.method if method is None else method
        self.model_name = self.model_name if model is None else model
        self.options = self.options if options is None else dict(options)
        if target != "__keep__":
            self.target = parse_target(target) if isinstance(target, str) else target
        self._sync_controls()
        return self.refresh("controls")

    def retarget(self, position: int) -> None:
        """Flow view: an output token was clicked; recompute the flow from that position."""
        self._run([("flow", None, {"sources": [int(position)]})], "retarget")

    # ------------------------------------------------------------------ widget
    @property
    def widget(self):
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self):
        import ipywidgets as w

        self._model_box = w.Combobox(value=self.model_name, options=list(self.models), description="model",
                                     ensure_option=False, continuous_update=False)
        self._method_box = w.Dropdown(options=list(METHODS), value=self.method, description="method")
        self._target_box = w.Text(value=target_text(self.target), description="target", placeholder="predicted", continuous_update=False)
        self._text_box = w.Textarea(value=self.text, description="text", continuous_update=False,
                                    layout=w.Layout(width="auto", max_width="900px", height="60px"))
        self._progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="", bar_style="info",
                                         layout=w.Layout(width="300px", max_width="100%", visibility="hidden"))
        self._status = html_widget("", layout=w.Layout(max_width="100%"))
        self._cancel = w.Button(description="cancel", layout=w.Layout(width="70px", visibility="hidden"),
                                tooltip="drop the running computation")
        self._cancel.on_click(lambda _: self.cancel())
        self._containers = {name: w.Box([], layout=w.Layout(display="block", max_width="100%"))
                            for name in ("strip", "flow", "heads")}
        self._method_box.observe(lambda ch: self._control("method", ch["new"]), names="value")
        self._model_box.observe(lambda ch: self._control("model", ch["new"]), names="value")
        self._target_box.observe(lambda ch: self._control("target", ch["new"]), names="value")
        self._text_box.observe(lambda ch: self._control("text", ch["new"]), names="value")
        wrap = w.Layout(flex_flow="row wrap", max_width="100%")  # controls wrap in a narrow cell
        for control in (self._model_box, self._method_box, self._target_box):
            control.layout.max_width = "100%"
        controls = w.VBox([w.HBox([self._model_box, self._method_box, self._target_box], layout=wrap), self._text_box,
                           w.HBox([self._progress, self._cancel, self._status], layout=w.Layout(flex_flow="row wrap"))],
                          layout=w.Layout(max_width="100%"))
        box = w.VBox([controls] + [self._containers[name] for name in ("strip", "flow", "heads") if name in self.views],
                     layout=w.Layout(max_width="100%"))
        box.add_class("xattr-explorer")
        for name, view in (("strip", self.strip), ("flow", self.flow), ("heads", self.heads)):
            if view is not None:
                self._containers[name].children = [view.widget]
        return box

    def _control(self, name: str, value: Any) -> None:
        if getattr(self, "_syncing_controls", False):
            return
        current = {"method": self.method, "model": self.model_name, "text": self.text}.get(name)
        if name == "target" or (value != current and (value or name == "text")):
            self.set(**{name: value})

    def _sync_controls(self) -> None:
        if self._widget is None:
            return
        self._syncing_controls = True
        try:
            self._method_box.value, self._model_box.value = self.method, self.model_name
            self._text_box.value = self.text
        finally:
            self._syncing_controls = False

    def _mount(self, name: str, view) -> None:
        if self._widget is not None:
            self._containers[name].children = [view.widget]

    def _set_progress(self, done: int, total: int, message: str) -> None:
        if self._widget is None:
            return
        self._progress.value = done / max(total, 1)
        self._progress.layout.visibility = "visible" if message else "hidden"
        self._cancel.layout.visibility = "visible" if message else "hidden"
        if message:
            self._status.value = core.escape(message)

    def _set_status(self, message_html: str) -> None:
        if self._widget is not None:
            self._status.value = message_html

    # ------------------------------------------------------------------ display / export (bundle.LinkedViews)
    def show(self):
        """Build the widget and start the first computation; returns self."""
        self.widget
        if self.strip is None and self.text:
            self.refresh("start")
        return self

    def _active_views(self):
        return [v for v in (self.strip, self.flow, self.heads) if v is not None]

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "kind": "explorer", "model": self.model_name, "text": self.text,
                "method": self.method, "target": self.target if not isinstance(self.target, tuple) else list(self.target),
                "views": {v.view_type: v.to_dict() for v in self._active_views()}}

    def view_results(self) -> dict:
        """{"strip" | "flow" | "heads": the result each linked view shows} (what the v2 payload keeps)."""
        return {k: v.result for k, v in (("strip", self.strip), ("flow", self.flow), ("heads", self.heads)) if v}

    def png_figure(self):
        """The token strip's PNG figure (what ``to_png`` writes)."""
        if self.strip is None:
            raise ValueError("nothing computed yet: call refresh() (and wait()) first")
        return self.strip.png_figure()

    def __repr__(self) -> str:
        return f"Explorer(model={self.model_name!r}, method={self.method!r}, text={self.text[:40]!r})"
