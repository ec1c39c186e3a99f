"""Explorer: model, method, target and text controls plus linked views of one text.

Changing a control recomputes on a worker thread (the comm thread stays free), with a progress
bar; a job counter drops results that a newer request has made stale, and results are cached per
(model, text, kind, method, target, options), so going back to an earlier setting is instant.
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from typing import Any, Callable

from xattr_lab.constants import DEFAULT_MODEL, SCHEMA

#: Where ``load(name)`` comes from when the Explorer is given a model name and no loader.
COMPUTE_PACKAGE = "xattr_lab"
from xattr_lab.methods.registry import ATTRIBUTION_METHODS  # pure data, no torch
from xattr_lab.target_spec import parse_target, target_text  # pure strings, no torch

from . import bundle, core, export
from .views import FlowView, HeadGrid, LinkedState, TokenStrip
from .views.base import _html

__all__ = ["Explorer", "METHODS", "target_text"]

#: Methods offered in the method picker: the registry's token-attribution methods.
METHODS = ATTRIBUTION_METHODS


class Explorer:
    """Controls + linked token strip, flow view and head grid for one text.

    ex: an Explainer or a model name (``xattr_lab.load`` runs on first use); text: the text.
    views: which linked views to show, from ("strip", "flow", "heads").
    background: compute on a worker thread (True in notebooks; False runs inline, for scripts/tests).
    options: extra keyword options for ``ex.attribute`` (e.g. {"steps": 16}).
    """

    view_type = "explorer"

    def __init__(self, ex: Any = None, text: str = "", *, method: str = "attention", target: Any = None,
                 views: tuple[str, ...] = ("strip", "flow", "heads"), background: bool = True,
                 options: dict | None = None, models: tuple[str, ...] | None = None,
                 loader: Callable[[str], Any] | None = None):
        self.explainers: dict[str, Any] = {}
        self._loader = loader
        if ex is None or isinstance(ex, str):
            self.model_name = ex or DEFAULT_MODEL
        else:
            self.model_name = getattr(ex, "name", "model")
            self.explainers[self.model_name] = ex
        self.text = text
        self.method = method
        self.target = target
        self.options = dict(options or {})
        self.views = tuple(views)
        self.background = background
        self.models = tuple(models) if models else (self.model_name,)
        self.state = LinkedState()
        self.cache: dict[tuple, Any] = {}
        self.strip: TokenStrip | None = None
        self.flow: FlowView | None = None
        self.heads: HeadGrid | None = None
        self.errors: list[str] = []
        self.timings: list[dict] = []
        self._job = 0  # overall request counter (progress/status)
        self._generation: dict[str, int] = {"attribution": 0, "flow": 0, "heads": 0}  # per view kind
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._widget = None
        self._shown_at: Any = None

    # ------------------------------------------------------------------ model
    @property
    def explainer(self):
        if self.model_name not in self.explainers:
            if self._loader is not None:
                self.explainers[self.model_name] = self._loader(self.model_name)
            else:  # the compute package, bound at run time: the front end never imports it (nor torch)
                load = importlib.import_module(COMPUTE_PACKAGE).load
                self.explainers[self.model_name] = load(self.model_name)
        return self.explainers[self.model_name]

    def _key(self, kind: str, method: str | None = None, extra: dict | None = None) -> tuple:
        return (self.model_name, self.text, kind, method or "", repr(self.target), core.freeze(self.options),
                core.freeze(extra or {}))

    # ------------------------------------------------------------------ compute
    def _compute(self, kind: str, method: str | None = None, extra: dict | None = None,
                 generation: int | None = None):
        """One result, from the cache or computed (this may take long: call it off the comm thread).

        With a ``generation`` (worker thread), SIG streams: partial token scores reach the strip as
        positions finish, and a newer request or ``cancel()`` stops the computation itself.
        """
        key = self._key(kind, method, extra)
        if key in self.cache:
            return self.cache[key]
        ex = self.explainer
        if kind == "attribution":
            options = dict(self.options)
            if method == "sig" and generation is not None:
                options["callback"] = lambda partial: self._stream(generation, partial)
            result = ex.attribute(self.text, method=method, target=self.target, **options)
        elif kind == "flow":
            result = ex.flow(self.text, target=self.target, **(extra or {}))
        elif kind == "heads":
            result = ex.heads(self.text)
        else:  # pragma: no cover
            raise ValueError(kind)
        self.cache[key] = result
        return result

    def _plan(self) -> list[tuple[str, str | None, dict | None]]:
        plan: list[tuple[str, str | None, dict | None]] = []
        if "strip" in self.views:
            plan.append(("attribution", self.method, None))
        if "flow" in self.views:
            extra = {"sources": [self.state.output]} if self.state.output >= 0 else None
            plan.append(("flow", None, extra))
        if "heads" in self.views:
            plan.append(("heads", None, None))
        return plan

    def refresh(self, reason: str = "refresh") -> int:
        """Recompute every view for the current controls; returns the job number.

        Cached results are applied at once on the calling thread; the rest runs on a worker
        thread (``background=True``) and is applied only if no newer job started meanwhile.
        """
        return self._run(self._plan(), reason)

    def _run(self, plan, reason: str) -> int:
        with self._lock:
            self._job += 1
            job = self._job
            plan = [(kind, method, extra, self._bump(kind)) for kind, method, extra in plan]
        started = time.perf_counter()
        self.errors = []
        if all(self._key(kind, method, extra) in self.cache for kind, method, extra, _ in plan):
            for kind, method, extra, generation in plan:
                self._apply(generation, kind, self.cache[self._key(kind, method, extra)])
            self._finish(job, reason, started, cached=True)
            return job
        self._set_progress(0, len(plan), f"computing ({reason})...")
        if self.background:
            self._thread = threading.Thread(target=self._work, args=(job, plan, reason, started), daemon=True,
                                            name=f"xattr-explorer-{job}")
            self._thread.start()
        else:
            self._work(job, plan, reason, started)
        return job

    def _stream(self, generation: int, partial) -> bool:
        """SIG callback: show the partial strip; False (stop) once the request is stale."""
        if generation != self._generation["attribution"]:
            return False
        self._apply(generation, "attribution", partial)
        done, total = len(partial.options["positions_done"]), partial.options["positions_total"]
        self._set_progress(done, total, f"sig: {done} of {total} tokens...")
        return True

    def _bump(self, kind: str) -> int:
        self._generation[kind] += 1
        return self._generation[kind]

    def _work(self, job: int, plan, reason: str, started: float) -> None:
        for done, (kind, method, extra, generation) in enumerate(plan):
            if generation != self._generation[kind]:
                continue  # stale: a newer request for this view took over
            self._set_progress(done, len(plan), f"computing {method or kind}...")
            try:
                result = self._compute(kind, method, extra, generation)
            except Exception as error:  # shown to the user, never raised on the worker thread
                if generation == self._generation[kind]:
                    self.errors.append(f"{kind}: {error}")
                continue
            self._apply(generation, kind, result)
        self._finish(job, reason, started, cached=False)

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

    def _apply(self, generation: int, kind: str, result) -> None:
        with self._lock:
            if generation != self._generation[kind]:
                return
            if kind == "attribution":
                if self.strip is None:
                    self.strip = TokenStrip(result, state=self.state)
                    self._mount("strip", self.strip)
                else:
                    self.strip.update(result)
            elif kind == "flow":
                if self.flow is None or len(self.flow.tokens) != len(result.tokens):
                    if self.flow is not None:
                        self.flow.close()
                    self.flow = FlowView(result, state=self.state, retarget=self.retarget)
                    self._mount("flow", self.flow)
                else:
                    self.flow.update(result)
            elif kind == "heads":
                if self.heads is not None:
                    self.heads.close()
                self.heads = HeadGrid(result, state=self.state)
                self._mount("heads", self.heads)

    def cancel(self) -> None:
        """Drop every running request: its results are discarded when they arrive.

        A streaming SIG computation stops at its next group of tokens; other methods finish on
        their worker thread and are discarded.
        """
        with self._lock:
            for kind in self._generation:
                self._bump(kind)
            self._job += 1
        self._set_progress(1, 1, "")
        self._set_status("cancelled")

    def wait(self, timeout: float | None = 60) -> None:
        """Block until the current worker (if any) is done."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ user actions
    def set(self, *, text: str | None = None, method: str | None = None, target: Any = "__keep__",
            model: str | None = None, options: dict | None = None) -> int:
        """Change controls (as the widgets do) and recompute. Returns the job number."""
        if text is not None:
            if text != self.text:
                self.state.token = -1
                self.state.output = -1
            self.text = text
        if method is not None:
            self.method = method
        if target != "__keep__":
            self.target = parse_target(target) if isinstance(target, str) else target
        if model is not None:
            self.model_name = model
        if options is not None:
            self.options = dict(options)
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
                                    layout=w.Layout(width="900px", height="60px"))
        self._progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="", bar_style="info",
                                         layout=w.Layout(width="300px", visibility="hidden"))
        self._status = _html("")
        self._cancel = w.Button(description="cancel", layout=w.Layout(width="70px", visibility="hidden"),
                                tooltip="drop the running computation")
        self._cancel.on_click(lambda _: self.cancel())
        self._containers = {name: w.Box([], layout=w.Layout(display="block")) for name in ("strip", "flow", "heads")}
        self._method_box.observe(lambda ch: self._control("method", ch["new"]), names="value")
        self._model_box.observe(lambda ch: self._control("model", ch["new"]), names="value")
        self._target_box.observe(lambda ch: self._control("target", ch["new"]), names="value")
        self._text_box.observe(lambda ch: self._control("text", ch["new"]), names="value")
        controls = w.VBox([w.HBox([self._model_box, self._method_box, self._target_box]), self._text_box,
                           w.HBox([self._progress, self._cancel, self._status])])
        box = w.VBox([controls] + [self._containers[name] for name in ("strip", "flow", "heads") if name in self.views])
        box.add_class("xattr-explorer")
        for name, view in (("strip", self.strip), ("flow", self.flow), ("heads", self.heads)):
            if view is not None:
                self._containers[name].children = [view.widget]
        return box

    def _control(self, name: str, value: Any) -> None:
        if getattr(self, "_syncing_controls", False):
            return
        if name == "method" and value != self.method:
            self.set(method=value)
        elif name == "model" and value and value != self.model_name:
            self.set(model=value)
        elif name == "target":
            self.set(target=value)
        elif name == "text" and value != self.text:
            self.set(text=value)

    def _sync_controls(self) -> None:
        if self._widget is None:
            return
        self._syncing_controls = True
        try:
            self._method_box.value = self.method
            self._model_box.value = self.model_name
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

    # ------------------------------------------------------------------ display / export
    def show(self):
        """Build the widget and start the first computation; returns self."""
        self.widget
        if self.strip is None and self.text:
            self.refresh("start")
        return self

    def _repr_mimebundle_(self, include=None, exclude=None):
        self.show()
        out: dict = {"text/plain": repr(self)}
        model_id = None
        if bundle.in_kernel():
            entry = bundle.widget_entry(self.widget)
            model_id = entry["model_id"]
            out[bundle.WIDGET_MIME] = entry
        if self.strip is not None:
            payload = self.strip.result.to_dict()
            payload["model_id"] = model_id
            out[bundle.MIME_TYPE] = payload
        return out

    def _ipython_display_(self):
        from IPython import get_ipython
        from IPython.display import display

        count = getattr(get_ipython(), "execution_count", None)
        if count is not None and self._shown_at == count:
            return
        self._shown_at = count
        display(self._repr_mimebundle_(), raw=True)

    def _active_views(self):
        return [v for v in (self.strip, self.flow, self.heads) if v is not None]

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "kind": "explorer", "model": self.model_name, "text": self.text,
                "method": self.method, "target": self.target if not isinstance(self.target, tuple) else list(self.target),
                "views": {v.view_type: v.to_dict() for v in self._active_views()}}

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def export_models(self) -> list:
        models = []
        for view in self._active_views():
            models.extend(view.export_models())
        return models

    def png_figure(self):
        """The token strip's PNG figure (what ``to_png`` writes)."""
        if self.strip is None:
            raise ValueError("nothing computed yet: call refresh() (and wait()) first")
        return self.strip.png_figure()

    def to_html(self, path) -> str:
        return export.write_html(self.export_models(), path)

    def to_png(self, path) -> str:
        return export.write_png(self.png_figure(), path)

    def __repr__(self) -> str:
        return f"Explorer(model={self.model_name!r}, method={self.method!r}, text={self.text[:40]!r})"
