"""Issue #20, the front ends: the Explorer under concurrency, the flow view across models, the magic's
text, line breaks and bidi controls, and `xattr lab`'s token and signals. Bounded waits only."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from xattr_lab import cli, command_inputs, commands, magic, widgets
from xattr_lab.results import Attribution, FlowResult, HeadStats


class Fake:
    """An Explainer stand-in with ``layers`` layers; ``gate`` (an Event) blocks its first use."""

    def __init__(self, name="fake", layers=2, gate=None):
        self.name, self.layers, self.gate, self.calls = name, layers, gate, []

    def _tokens(self, text):
        if self.gate is not None:
            self.gate.wait(30)
        return ["[CLS]"] + text.split() + ["[SEP]"]

    def attribute(self, text, method="attention", target=None, **options):
        self.calls.append(("attribute", text))
        tokens = self._tokens(text)
        return Attribution(tokens=tokens, scores=np.linspace(0, 1, len(tokens)), method=method, text=text)

    def flow(self, text, target=None, sources=None, **options):
        tokens = self._tokens(text)
        n = len(tokens)
        E = np.full((self.layers, n, n), 1.0 / n)
        return FlowResult(tokens=tokens, attributions=E[0].sum(0), edge_flow=E, value=float(E[-1].sum()),
                          sources=list(sources or [0]), text=text)

    def heads(self, text):
        tokens = self._tokens(text)
        n = len(tokens)
        return HeadStats(tokens=tokens, entropy=np.ones((self.layers, 2)), cone_index=np.ones(self.layers + 1),
                         attentions=np.full((self.layers, 2, n, n), 1.0 / n))


# ---------------------------------------------------------------------------- Explorer
def test_a_text_changed_while_the_model_loads_is_not_cached_under_the_old_text():
    """Old code: the first request computed the new text and cached it under the old one."""
    gate = threading.Event()
    loaded = []
    e = widgets.Explorer("fake-model", "the first text", views=("strip",), background=True,
                         loader=lambda name: loaded.append(name) or Fake(name, gate=gate))
    e.refresh()  # the worker waits in the model's load
    e.set(text="a second text")
    gate.set()
    e.wait(60)
    assert loaded == ["fake-model"]  # loaded once for both requests
    for key, result in e.cache.items():
        assert result.tokens[1:-1] == key[3].split(), (key[3], result.tokens)
    assert e.strip.result.tokens[1:-1] == ["a", "second", "text"]
    e.set(text="the first text")  # cached under its own text: shows the first text's tokens
    assert e.timings[-1]["cached"] and e.strip.result.tokens[1] == "the"


def test_an_exception_while_showing_a_result_stops_the_progress_bar(monkeypatch):
    """Old code: the worker died in _apply, the bar kept spinning and the cancel button stayed."""
    e = widgets.Explorer(Fake(), "a film", views=("strip", "heads"), background=True)
    e.widget

    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw <this>")

    monkeypatch.setattr(widgets.explorer, "HeadGrid", broken)
    e.refresh()
    e.wait(30)
    assert e._progress.layout.visibility == "hidden" and e._cancel.layout.visibility == "hidden"
    assert e.errors == ["heads: cannot draw <this>"] and "&lt;this&gt;" in e._status.value
    assert e.strip is not None  # the other view is shown


def test_views_are_changed_on_the_main_thread_only(monkeypatch):
    """Confirms the suspicion: old code changed Bokeh models (and widgets) from the worker thread."""
    from bokeh.core.has_props import HasProps

    threads = set()
    real = HasProps.__setattr__

    def spy(self, name, value):
        threads.add(threading.get_ident())
        return real(self, name, value)

    handed_over = []
    e = widgets.Explorer(Fake(), "a fine film", views=("strip", "flow"), background=True,
                         schedule=handed_over.append)
    e.widget
    monkeypatch.setattr(HasProps, "__setattr__", spy)
    e.refresh()
    e.wait(30)
    e.set(text="another fine film")
    e.wait(30)
    assert handed_over and e.strip.result.tokens[1] == "another"
    assert threads == {threading.main_thread().ident}


def test_the_flow_view_is_rebuilt_when_the_layer_count_changes():
    """Old code: a model with more layers drew its flow into the old model's layer axis."""
    fakes = {"two": Fake("two", layers=2), "three": Fake("three", layers=3)}
    e = widgets.Explorer("two", "a fine film", views=("flow",), background=False, models=tuple(fakes),
                         loader=fakes.__getitem__)
    e.widget
    e.refresh()
    first = e.flow

    def layer_axis_ends_after(figure, layers):  # the last column, then room for its labels (< 1.5 columns)
        return layers < figure.x_range.end < layers + 1.5

    assert layer_axis_ends_after(first._figure, 2)
    e.set(model="three")
    assert e.flow.n_layers == 3 and layer_axis_ends_after(e.flow._figure, 3)
    assert e._containers["flow"].children == (e.flow.widget,)
    view = widgets.FlowView(fakes["two"].flow("a b c"))  # update() alone rebuilds too
    view.widget
    view.update(fakes["three"].flow("a b c"))
    assert layer_axis_ends_after(view._figure, 3) and len(view._nodes.data["x"]) == 4 * 5


# ---------------------------------------------------------------------------- the magic
@pytest.fixture()
def tiny_defaults(tiny):
    tiny("bert")
    saved = dict(magic.DEFAULTS)
    magic.DEFAULTS.update(model="tiny-bert", device="cpu")
    yield
    magic.DEFAULTS.clear()
    magic.DEFAULTS.update(saved)


def test_the_magic_line_is_not_expanded_by_ipython(ip, tiny_defaults):
    """Old code: IPython turned {1+1} into 2 and $price into the variable's value."""
    ip.user_ns["price"] = 5
    ip.user_ns["sentence"] = "a fine film"
    ip.run_cell('%xattr explain "a {1+1} film for $price" --out r')
    assert ip.user_ns["r"].text == "a {1+1} film for $price"
    ip.run_cell('%xattr explain "{price} or {oops" --out r')
    assert ip.user_ns["r"].text == "{price} or {oops"
    ip.run_cell("%xattr explain $sentence --out r")  # a whole argument $name reads the variable
    assert ip.user_ns["r"].text == "a fine film"


def test_line_breaks_and_bidi_controls_in_explained_text(ip, tiny_defaults, capsys):
    """Old code: U+0085 glued the words around it (BERT drops it) and split evaluate/circuit lines at
    \\v, \\f and U+001C-U+001E. A bidi override is explained (issue 27); the views show it escaped."""
    ip.run_cell_magic("xattr", "explain --out r", "a fine\u0085film\u2028indeed")
    assert ip.user_ns["r"].text == "a fine\nfilm\nindeed" and "film" in ip.user_ns["r"].tokens
    assert command_inputs._lines("one\u0085two\u2029three\r\nfour\x0cstill four") == ["one", "two", "three",
                                                                                "four\x0cstill four"]
    ip.user_ns.pop("r_bidi", None)  # the shell is shared by the test session
    ip.run_cell_magic("xattr", "explain --out r_bidi", "a \u202egood\u202c film")  # issue 27: explained, not refused
    out = capsys.readouterr().out
    assert "Traceback" not in out and ip.user_ns["r_bidi"].text == "a \u202egood\u202c film"


# ---------------------------------------------------------------------------- xattr lab
_FAKE_SERVER = textwrap.dedent("""
    import sys
    from xattr_lab import cli
    pid_file = sys.argv[1]

    def fake_server(*args, **kwargs):  # what JupyterLab would be: it records what it sees
        code = ("import json, os, sys, time; "
                f"open({pid_file!r}, 'w').write(json.dumps([os.getpid(), sys.argv, os.environ.get('JUPYTER_TOKEN')])); "
                "time.sleep(600)")
        return [sys.executable, "-c", code, "--", *cli_args(*args, **kwargs)]

    cli_args = cli.lab_command
    cli.lab_command = fake_server
    sys.exit(cli.main(["lab", "--no-browser", "--notebook", sys.argv[2]]))
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is gone too
        return handle.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_xattr_lab_keeps_the_token_off_the_command_line_and_stops_the_server_on_sigterm(tmp_path):
    """Old code: the token was in the server's argv (world-readable), and SIGTERM left the server running."""
    import json

    notebook = tmp_path / "01_quickstart.ipynb"
    notebook.write_text("{}")
    pid_file = tmp_path / "server.json"
    script = tmp_path / "lab.py"
    script.write_text(_FAKE_SERVER)
    lab = subprocess.Popen([sys.executable, str(script), str(pid_file), str(notebook)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    server = None
    try:
        url = lab.stdout.readline()
        for _ in range(1500):  # bounded wait for the server to start (at most ~30 s)
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.02)
        server, argv, token = json.loads(pid_file.read_text())
        assert token and f"token={token}" in url
        assert not any(token in arg for arg in argv)
        lab.send_signal(signal.SIGTERM)
        assert lab.wait(60) == 128 + signal.SIGTERM
        for _ in range(500):
            if not _alive(server):
                break
            time.sleep(0.02)
        assert not _alive(server), "the server outlived `xattr lab`"
    finally:
        if lab.poll() is None:
            lab.kill()
        if server is not None and _alive(server):
            os.kill(server, signal.SIGKILL)
