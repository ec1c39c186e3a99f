"""Issue #20, the bad-input table: every public entry x {empty, whitespace only, 100k characters, control
characters and lone surrogates, NaN/inf where numbers go, unknown label/target, unknown option, wrong types}
gives a clear error class and message, and leaves nothing changed (model state, loaded explainers, torch's
global state). The table of docs/guides/reliability.md is this one. Issue 27: right-to-left text with bidi marks, embeddings,
overrides and isolates is explained (no longer refused); the views draw each token isolated, the marks as
visible escapes."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import xattr_lab as xa
from xattr_lab import cli, commands, magic
from xattr_lab.errors import InputError, InputTypeError, ModelError, UsageError, XattrError

T = "a fine film"
LONG = "word " * 20_000  # 100k characters
NAN, INF = float("nan"), float("inf")
KINDS = ("empty", "whitespace", "100k characters", "control/bidi", "NaN/inf", "unknown label/target",
         "unknown option", "wrong type")


def _library(ex):
    """(entry, kind) -> (call, error class, message pattern) for the Python entries."""
    def evaluate(texts, **kw):
        return xa.faithfulness.evaluate(ex, texts, methods=kw.pop("methods", ["attention"]), cache=False,
                                        progress=False, **kw)

    pos = ["a good film", "a great film"]
    return {
        ("load", "empty"): (lambda: xa.load("", device="cpu"), ModelError, "not a model name: empty"),
        ("load", "whitespace"): (lambda: xa.load(" \t ", device="cpu"), ModelError, "not a model name: empty"),
        ("load", "100k characters"): (lambda: xa.load(LONG, device="cpu"), ModelError, "too long"),
        ("load", "control/bidi"): (lambda: xa.load("tiny-bert\u202e", device="cpu"), ModelError, "control or invisible"),
        ("load", "NaN/inf"): (lambda: xa.load("tiny-bert", device=NAN), InputError, "unknown device nan"),
        ("load", "unknown label/target"): (lambda: xa.load("tiny-bret", device="cpu"), ModelError, "unknown model 'tiny-bret'"),
        ("load", "unknown option"): (lambda: xa.load("tiny-bert", device="cpu", bogus=1), InputError, r"unexpected options \['bogus'\]"),
        ("load", "wrong type"): (lambda: xa.load(3.5, "tokenizer"), InputTypeError, "not float"),
        ("attribute", "empty"): (lambda: ex.attribute("", method="attention"), InputError, "the text is empty"),
        ("attribute", "whitespace"): (lambda: ex.attribute(" \n\t ", method="ig"), InputError, "the text is empty"),
        ("attribute", "100k characters"): (lambda: ex.attribute(LONG, method="sig"), InputError, "20002 tokens long; tiny-bert takes at most 128"),
        ("attribute", "control/bidi"): (lambda: ex.attribute("a \x00 film", method="attention"), InputError, r"U\+0000 \(control character\) at character 2"),
        ("attribute", "NaN/inf"): (lambda: ex.attribute(T, method="rollout", residual=NAN), InputError, "residual=nan: give a finite number"),
        ("attribute", "unknown label/target"): (lambda: ex.attribute(T, method="attention", target="MAYBE"), InputError, "unknown label 'MAYBE'"),
        ("attribute", "unknown option"): (lambda: ex.attribute(T, method="ig", bogus=1), InputError, "unknown option 'bogus' for ig; its options are: steps"),
        ("attribute", "wrong type"): (lambda: ex.attribute(42, method="attention"), InputTypeError, "the text must be a str, not int"),
        ("flow", "empty"): (lambda: ex.flow(""), InputError, "the text is empty"),
        ("flow", "whitespace"): (lambda: ex.flow("\u3000 "), InputError, "the text is empty"),
        ("flow", "100k characters"): (lambda: ex.flow(LONG), InputError, "tokens long"),
        ("flow", "control/bidi"): (lambda: ex.flow("a \ud800good film"), InputError, r"U\+D800 \(lone surrogate\) at character 2, a lone surrogate"),
        ("flow", "NaN/inf"): (lambda: ex.flow(T, residual=INF), InputError, "residual=inf: give a finite number"),
        ("flow", "unknown label/target"): (lambda: ex.flow(T, target=7), InputError, "class index 7 is out of range"),
        ("flow", "unknown option"): (lambda: ex.flow(T, bogus=1), InputError, r"unknown flow option\(s\) \['bogus'\]"),
        ("flow", "wrong type"): (lambda: ex.flow(T, target=2.5), InputError, "a class or token index is a whole number"),
        ("heads", "empty"): (lambda: ex.heads([]), InputError, "give at least one text"),
        ("heads", "whitespace"): (lambda: ex.heads(["a film", "  "]), InputError, "the text is empty"),
        ("heads", "100k characters"): (lambda: ex.heads(LONG), InputError, "tokens long"),
        ("heads", "control/bidi"): (lambda: ex.heads("a\u0085film"), InputError, r"U\+0085 \(control character\)"),
        ("heads", "NaN/inf"): (lambda: ex.heads(T, max_map_tokens=NAN), InputError, "max_map_tokens=nan"),
        ("heads", "unknown option"): (lambda: ex.heads(T, bogus=1), InputError, "unknown option 'bogus' for heads"),
        ("heads", "wrong type"): (lambda: ex.heads(5), InputTypeError, "heads must be a list of texts, not int"),
        ("circuit", "empty"): (lambda: ex.circuit([], pos), InputError, "positive: give at least one text"),
        ("circuit", "whitespace"): (lambda: ex.circuit([" ", "a film"], pos), InputError, "the text is empty"),
        ("circuit", "100k characters"): (lambda: ex.circuit([LONG, "a film"], pos), InputError, "tokens long"),
        ("circuit", "control/bidi"): (lambda: ex.circuit(["a\x1bfilm", "b"], pos), InputError, r"U\+001B"),
        ("circuit", "NaN/inf"): (lambda: ex.circuit(pos, pos, l1=NAN), InputError, "l1=nan: give a finite number"),
        ("circuit", "unknown label/target"): (lambda: ex.circuit(pos, pos, position="last"), InputError, "position must be 'mean' or a token index"),
        ("circuit", "unknown option"): (lambda: ex.circuit(pos, pos, bogus=1), InputError, "unknown option 'bogus' for circuit"),
        ("circuit", "wrong type"): (lambda: ex.circuit("a good film", pos), InputTypeError, "positive must be a list of texts, not one string"),
        ("evaluate", "empty"): (lambda: evaluate([""]), InputError, "the text is empty"),
        ("evaluate", "whitespace"): (lambda: evaluate(["\n"]), InputError, "the text is empty"),
        ("evaluate", "100k characters"): (lambda: evaluate([LONG]), InputError, "tokens long"),
        ("evaluate", "control/bidi"): (lambda: evaluate(["a \udfff film"]), InputError, r"U\+DFFF \(lone surrogate\)"),
        ("evaluate", "NaN/inf"): (lambda: evaluate(["a film"], k=NAN), InputError, "k must be a fraction"),
        ("evaluate", "unknown label/target"): (lambda: evaluate(["a film"], methods=["nope"]), InputError, "unknown method 'nope'"),
        ("evaluate", "unknown option"): (lambda: evaluate(["a film"], methods=["ig"], method_options={"ig": {"bogus": 1}}), InputError, "unknown option 'bogus' for ig"),
    }


def _state(ex):
    return ([m.training for m in ex.model.modules()], [p.requires_grad for p in ex.model.parameters()],
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in ex.model.modules()),
            torch.is_grad_enabled(), torch.get_num_threads(), sorted(commands.EXPLAINERS.keys()), ex._state)


@pytest.fixture(scope="module")
def ex():
    explainer = xa.load("tiny-bert", device="cpu")
    explainer.capture("warm up")
    return explainer


LIBRARY_CASES = sorted(_library(None))


@pytest.mark.parametrize("entry,kind", LIBRARY_CASES, ids=[f"{e}-{k}" for e, k in LIBRARY_CASES])
def test_library_entries_refuse_bad_input_clearly(ex, entry, kind):
    call, error, pattern = _library(ex)[entry, kind]
    before = _state(ex)
    with pytest.raises(error, match=pattern) as info:
        call()
    assert isinstance(info.value, XattrError)
    assert _state(ex) == before


def test_every_library_entry_has_every_kind_of_bad_input():
    cases = set(LIBRARY_CASES)
    for entry in ("load", "attribute", "flow", "heads", "circuit", "evaluate"):
        missing = [k for k in KINDS if (entry, k) not in cases]
        # heads take no target; evaluate's texts must be a list (its wrong-type row is in the front ends)
        assert missing in ([], ["unknown label/target"], ["wrong type"]), (entry, missing)


# ---------------------------------------------------------------------------- the front ends
FRONT_END_CASES = [  # (kind, argv or (line, cell), message pattern)
    ("empty", ["explain", ""], "explain: give a text"),
    ("whitespace", ["explain", "   "], "the text is empty: give at least one word"),
    ("100k characters", ["explain", LONG], "tokens long; tiny-bert takes at most 128"),
    ("control/bidi", ["explain", "a \x1bgood film"], r"U\+001B \(control character\) at character 2"),
    ("NaN/inf", ["evaluate", "TEXTS", "--k", "nan"], "argument --k: invalid number value: 'nan'"),
    ("NaN/inf", ["circuit", "--positive", "P", "--negative", "N", "--l1", "inf"], "argument --l1: invalid number value"),
    ("unknown label/target", ["explain", T, "--target", "MAYBE"], "unknown label 'MAYBE'"),
    ("unknown option", ["explain", T, "--bogus"], "unrecognized arguments: --bogus"),
    ("wrong type", ["explain", T, "--method", "ig", "--steps", "many"], "--steps takes an integer"),
    ("wrong type", ["circuit", "--positive", "P", "--negative", "N", "--features", "2.5"], "invalid int value"),
]


@pytest.fixture()
def tiny_defaults(ex):
    saved = dict(magic.DEFAULTS)
    magic.DEFAULTS.update(model="tiny-bert", device="cpu")
    commands.EXPLAINERS["tiny-bert", "cpu"] = ex
    yield
    magic.DEFAULTS.clear()
    magic.DEFAULTS.update(saved)


@pytest.mark.parametrize("kind,argv,pattern", FRONT_END_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FRONT_END_CASES)])
def test_the_magic_prints_the_error_not_a_traceback(ip, ex, tiny_defaults, capsys, kind, argv, pattern):
    import shlex

    ip.user_ns.update(TEXTS=["a film"], P=["a good film", "a great film"], N=["a bad film", "a poor film"])
    before = _state(ex)
    with pytest.raises(XattrError, match=pattern):  # the library call: the error class
        magic.run(shlex.join(argv), None, ip.user_ns)
    ip.run_line_magic("xattr", shlex.join(argv))  # the magic as typed: the message, no traceback
    out = capsys.readouterr().out
    assert re.search(pattern, out) and out.startswith("%xattr") and "Traceback" not in out
    assert _state(ex) == before


def test_the_magic_refuses_a_namespace_value_of_the_wrong_type(ip, tiny_defaults, capsys):
    ip.user_ns["NUMBER"] = 5
    with pytest.raises(UsageError, match="'NUMBER' should hold the texts as a list of strings, not int"):
        magic.run("evaluate NUMBER", None, ip.user_ns)


@pytest.mark.parametrize("kind,argv,pattern", FRONT_END_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FRONT_END_CASES)])
def test_the_cli_exits_2_with_the_message(ex, tmp_path, capsys, monkeypatch, kind, argv, pattern):
    monkeypatch.chdir(tmp_path)
    for name, lines in {"TEXTS": ["a film"], "P": ["a good film", "a great film"], "N": ["a bad film", "a poor film"]}.items():
        (tmp_path / name).write_text("\n".join(lines))
    before = _state(ex)
    try:
        code = cli.main(argv + ["--model", "tiny-bert", "--device", "cpu", "--html", ""] if argv[0] != "evaluate"
                        else argv + ["--model", "tiny-bert", "--device", "cpu"])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and "Traceback" not in err
    assert _state(ex) == before and sorted(p.name for p in tmp_path.iterdir()) == ["N", "P", "TEXTS"]


def test_text_checks_are_pure_and_name_the_character():
    from xattr_lab.core.budget import check_text

    assert check_text("tab\tnew\nline\r ok \u2028 é \U0001F600") .startswith("tab")
    for bad, name in [("\x1b[31m", "U+001B"), ("a\ud800", "U+D800"), ("\udc00x", "U+DC00"), ("x\x7f", "U+007F")]:
        with pytest.raises(InputError, match=re.escape(name)):
            check_text(bad)
    with pytest.raises(InputTypeError):
        check_text(None)
    assert math.isnan(NAN)


# ---------------------------------------------------------------------------- right-to-left text (issue 27)
#: texts as copied from web pages: marks, embeddings, overrides and isolates are ordinary there
RTL_TEXTS = {
    "hebrew-rlm": "\u05d4\u05e1\u05e8\u05d8 \u05d4\u05d9\u05d4 \u200f\u05de\u05e6\u05d5\u05d9\u05df film",
    "arabic-alm": "\u0643\u0627\u0646 \u0627\u0644\u0641\u064a\u0644\u0645 \u061c\u0631\u0627\u0626\u0639\u0627 film",
    "english-lrm": "a \u200egood film",
    "embeddings-overrides": "a \u202bgood\u202c and \u202ebad\u202c \u202dfilm\u202c \u202aok\u202c",
    "isolates": "a \u2067good\u2069 \u2066film\u2069 \u2068\u05d8\u05d5\u05d1\u2069",
}


def test_bidi_controls_pass_the_text_check_unchanged():
    from xattr_lab.core.budget import check_text

    for text in RTL_TEXTS.values():
        assert check_text(text) is text


@pytest.mark.parametrize("name", sorted(RTL_TEXTS))
def test_right_to_left_text_is_explained_by_every_entry(ex, name):
    """Old code: every entry refused these texts ("... a bidi control"). Now each explains them and
    changes nothing else."""
    text = RTL_TEXTS[name]
    before = _state(ex)
    a = ex.attribute(text, method="attention")
    assert a.text == text and len(a.tokens) == len(a.scores) >= 3 and np.isfinite(a.scores).all()
    f = ex.flow(text)
    assert f.value > 0 and f.edge_flow.shape[1] == len(f.tokens)
    h = ex.heads(text)
    assert np.isfinite(h.entropy).all()
    assert _state(ex) == before


def test_right_to_left_text_in_circuits_evaluate_and_the_magic(ip, ex, tiny_defaults, capsys):
    texts = list(RTL_TEXTS.values())
    c = ex.circuit(texts[:3], texts[2:], examples=2, score_examples=1, epochs=5, features=8)
    assert np.isfinite(c.node_scores).all()
    table = xa.faithfulness.evaluate(ex, texts[:2], methods=["attention"], cache=False, progress=False)
    assert len(table) >= 1
    ip.user_ns.pop("r_rtl", None)
    ip.run_cell_magic("xattr", "explain --out r_rtl", RTL_TEXTS["embeddings-overrides"])
    out = capsys.readouterr().out
    assert "Traceback" not in out and "U+202E" not in out
    assert ip.user_ns["r_rtl"].text == RTL_TEXTS["embeddings-overrides"]


def test_a_word_holding_a_mark_is_shown_escaped_and_isolated(tiny):
    """GPT-2's words keep U+200F / U+202E (BERT's tokenizer drops them): the live view's labels show
    ⟨RLM⟩ / ⟨RLO⟩, its HTML isolates the token in <bdi>, and no raw control reaches the markup."""
    from xattr_lab import widgets
    from xattr_lab.widgets import core

    gpt2 = tiny("gpt2")
    a = gpt2.attribute(RTL_TEXTS["hebrew-rlm"] + " \u202eevil\u202c end", method="attention", granularity="word")
    marked = [i for i, t in enumerate(a.tokens) if any(c in t for c in "\u200f\u202e")]
    assert marked, a.tokens
    labels = core.pretty_tokens(a.tokens)
    assert any("\u27e8RLM\u27e9" in labels[i] for i in marked) and any("\u27e8RLO\u27e9" in labels[i] for i in marked)
    assert not any(c in "".join(labels) for c in "\u200f\u202e\u202c")
    v = widgets.view(a, display=False)
    v.widget
    for i in marked:
        v.select_token(i)
        html = v._info.value
        assert '<bdi class="xattr-token">' in html and not any(c in html for c in "\u200f\u202e\u202c")
        assert "\u27e8" in html
    assert not any(c in "".join(v._source.data["token"]) for c in "\u200f\u202e\u202c")


def test_exported_pages_and_pngs_show_the_marks_escaped(tmp_path):
    """The Bokeh page of a live view (widgets/export.py) and its PNG: no raw bidi control anywhere in the
    page, the header's token isolated in <bdi>, the labels drawn with the escapes."""
    from xattr_lab import widgets
    from xattr_lab.results import Attribution, FlowResult
    from xattr_lab.widgets import export

    tokens = ["[CLS]", RTL_TEXTS["hebrew-rlm"].split()[2], "\u202eevil", "\u061c\u0631\u0627\u0626\u0639\u0627", "[SEP]"]
    a = Attribution(tokens=tokens, scores=np.linspace(-1, 1, 5), target_label="\u202eevil", model="m")
    E = np.random.default_rng(0).random((2, 5, 5))
    f = FlowResult(tokens=tokens, attributions=E[0].sum(0), edge_flow=E, value=1.0, sources=[0])
    controls = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    for result in (a, f):
        page = (tmp_path / f"{result.kind}.html")
        widgets.view(result, display=False).to_html(page)
        text = page.read_text(encoding="utf-8")
        assert not controls & set(text)
        assert "\\u27e8RLO\\u27e9evil" in text or "\u27e8RLO\u27e9evil" in text
    assert 'class=\\"xattr-token\\"' in (tmp_path / "attribution.html").read_text(encoding="utf-8")
    fig = export.draw_strip(tokens, a.scores)
    drawn = [t.get_text() for t in fig.axes[0].texts]
    assert drawn[1:4] == ["\u27e8RLM\u27e9\u05de\u05e6\u05d5\u05d9\u05df", "\u27e8RLO\u27e9evil", "\u27e8ALM\u27e9\u0631\u0627\u0626\u0639\u0627"]
