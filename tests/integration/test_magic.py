"""%load_ext xattr_lab, %xattr and %%xattr in a real IPython shell (no kernel: text/PNG display)."""
from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from xattr_lab import magic
from xattr_lab.results import Attribution, HeadStats


@pytest.fixture(scope="module")
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "xattr_lab")
    shell.run_line_magic("load_ext", "xattr_lab")  # loading twice is harmless
    return shell


@pytest.fixture(autouse=True)
def tiny_defaults(tiny):
    tiny("bert")  # build once through the shared fixture
    saved = dict(magic.DEFAULTS)
    magic.DEFAULTS.update(model="tiny-bert", device="cpu")
    yield
    magic.DEFAULTS.clear()
    magic.DEFAULTS.update(saved)


def run(ip, source):
    result = ip.run_cell(source)
    assert result.error_in_exec is None and result.error_before_exec is None, result
    return result.result


def test_load_twice_registers_one_magic(ip):
    assert "xattr" in ip.magics_manager.magics["line"] and "xattr" in ip.magics_manager.magics["cell"]
    ip.run_line_magic("reload_ext", "xattr_lab")
    assert "xattr" in ip.magics_manager.magics["line"]


def test_line_magic_explain_stores_out(ip):
    value = run(ip, '%xattr explain "a <b>bold</b> film" --model tiny-bert --method attention --out r')
    r = ip.user_ns["r"]
    assert isinstance(r, Attribution) and value is r
    assert r.tokens[0] == "[CLS]" and r.model == "tiny-bert" and r.method == "attention"
    assert r.text == "a <b>bold</b> film"


def test_cell_magic_takes_the_body_as_text(ip):
    run(ip, "%%xattr explain --target 1 --out r2\nthe cell body\nover two lines\n")
    r2 = ip.user_ns["r2"]
    assert r2.text == "the cell body\nover two lines" and r2.target == 1


def test_subcommand_defaults_to_explain_and_expands_variables(ip):
    ip.user_ns["sentence"] = "a fine film"
    run(ip, "%xattr $sentence --out r3")
    assert ip.user_ns["r3"].text == "a fine film" and ip.user_ns["r3"].method == magic.DEFAULTS["method"]


def test_explainers_are_cached_per_kernel(ip):
    run(ip, '%xattr explain "one" --out a1')
    first = magic.EXPLAINERS[("tiny-bert", "cpu")]
    run(ip, '%xattr explain "two" --out a2')
    assert magic.EXPLAINERS[("tiny-bert", "cpu")] is first


def test_heads_magic(ip):
    run(ip, '%xattr heads "a fine film" --out h')
    assert isinstance(ip.user_ns["h"], HeadStats) and ip.user_ns["h"].entropy.shape == (2, 4)


@pytest.mark.parametrize("line, expected", [
    ('%xattr explain "x" --bogus 1', "unrecognized arguments: --bogus"),
    ("%xattr", "usage: %xattr"),
    ("%xattr -h", "explain"),
    ("%xattr explain -h", "--method"),
    ('%xattr explain "x" --steps many', "--steps takes an integer"),
    ('%xattr explain ""', "give a text"),
    ('%xattr explain "x" --method nope', "unknown method 'nope'"),
    ('%xattr explain "unclosed', "cannot parse"),
    ("%xattr circuit", "--positive NAME --negative NAME"),
    ("%xattr circuit --positive P", "give both"),
    ("%xattr evaluate", "name a list of texts"),
    ("%xattr evaluate MISSING", "no variable 'MISSING'"),
    ('%xattr explain "x" --out 1bad', "--out needs a Python name"),
])
def test_bad_input_prints_usage_not_a_traceback(ip, capsys, line, expected):
    result = ip.run_cell(line)
    out = capsys.readouterr()
    assert result.error_in_exec is None, out
    assert expected in out.out
    assert "Traceback" not in out.out + out.err


def test_display_without_a_front_end_is_text(ip):
    r = run(ip, '%xattr explain "plain shell" --out r4')
    data, _ = ip.display_formatter.format(r)
    assert "text/plain" in data and "Attribution(" in data["text/plain"]
    assert "application/vnd.jupyter.widget-view+json" not in r._repr_mimebundle_()


def test_defaults_and_colour_map_are_honoured(ip):
    from xattr_lab.widgets import core

    magic.DEFAULTS.update(method="attention", colour_map="PiYG")
    try:
        r = run(ip, '%xattr explain "defaults"')
        assert r.method == "attention" and r.model == "tiny-bert"
        assert core.DIVERGING[0] != "#053061"
    finally:
        core.set_diverging("RdBu")


def test_circuit_cell_magic_reads_prompts_from_the_body(ip):
    body = "a good film\na great film\n---\na bad film\na poor film\n"
    try:
        result = ip.run_cell("%%xattr circuit --epochs 5 --features 8 --examples 2 --out c\n" + body)
    except Exception as error:  # pragma: no cover - surfaced as a failure below
        pytest.fail(str(error))
    assert result.error_in_exec is None
    c = ip.user_ns["c"]
    assert c.node_scores.shape == (2, 4) and c.codes_positive.shape[0] == 2
    # the reading position, per-head centring and L1 reach the SAE
    body = "a good film\na great film\n---\na bad film\na poor film\n"
    result = ip.run_cell("%%xattr circuit --recipe xattr --epochs 5 --features 8 --examples 2 --position -1 --center-heads "
                         "--l1 0.1 --out c2\n" + body)
    assert result.error_in_exec is None
    options = ip.user_ns["c2"].options
    assert (options["position"], options["center_heads"], options["l1"]) == (-1, True, 0.1)


def test_flow_magic(ip):
    from xattr_lab.results import FlowResult

    run(ip, '%xattr flow "a fine film" --out fl')
    fl = ip.user_ns["fl"]
    assert isinstance(fl, FlowResult) and fl.edge_flow.shape[0] == 2 and fl.info == "agf"


def test_evaluate_cell_magic_returns_the_faithfulness_table(ip):
    run(ip, "%%xattr evaluate --methods attention --k 0.2 --no-cache --out table\na good film\na bad film\n")
    table = ip.user_ns["table"]
    assert set(table["metric"]) == {"log_odds", "comprehensiveness", "sufficiency"}
    assert set(table["method"]) == {"attention"} and (table["n"] == 2).all()


def test_token_targets_keep_their_leading_space():
    from xattr_lab.magic import parse_target

    assert parse_target(" Mary, John") == (" Mary", " John")
    assert parse_target("POSITIVE,NEGATIVE") == ("POSITIVE", "NEGATIVE")
    assert parse_target(" 3 ") == 3 and parse_target("  ") is None


def test_magic_logit_difference_on_a_causal_lm(tiny):
    from xattr_lab import magic

    magic.EXPLAINERS[("tiny-gpt2", "auto")] = tiny("gpt2")
    result = magic.run('explain "When Mary and John went to the store, John gave a drink to" '
                       '--model tiny-gpt2 --method attention --target " Mary, John"')
    mary = tiny("gpt2").tokenizer.encode(" Mary", add_special_tokens=False)[0]
    assert result.target[0] == mary


def test_review_fixes_for_bad_options(tiny):
    """--steps on a non-gradient method, a comma token target, and a keyword --out are handled cleanly."""
    from xattr_lab import magic
    from xattr_lab.magic import UsageError, parse_target

    magic.EXPLAINERS[("tiny-bert", "auto")] = tiny("bert")
    with pytest.raises(UsageError, match="--steps applies to the ig and sig"):
        magic.run('explain "a good movie" --model tiny-bert --method attention --steps 8')
    assert parse_target(",") == "," and parse_target("x,") == "x,"
    namespace = {}
    with pytest.raises(UsageError, match="Python name"):
        magic.run('explain "a good movie" --model tiny-bert --method attention --out class', namespace=namespace)
    assert namespace == {}


def test_magic_writes_the_files_the_cli_writes(ip, tmp_path, capsys):
    """--html/--png/--json (evaluate: --csv/--json) are the CLI's options, from the one parser."""
    import json

    path = tmp_path / "h.json"
    run(ip, f'%xattr heads "a fine film" --json {path} --out h2')
    assert json.loads(path.read_text())["kind"] == "heads" and f"wrote {path}" in capsys.readouterr().out
    csv = tmp_path / "t.csv"
    run(ip, f"%%xattr evaluate --methods attention --no-cache --csv {csv}\na good film\na bad film\n")
    assert csv.read_text().startswith("method,metric,mean")


# ---------------------------------------------------------------------------- a mistyped verb (issue 27, item 6)
def _no_model(monkeypatch):
    from xattr_lab import commands

    calls = []

    def explainer(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(commands, "explainer", explainer)
    return calls


@pytest.mark.parametrize("source, verb", [
    ("%xattr evalute TEXTS --html x.html", "evaluate"),
    ('%xattr explian "a fine film" --out typo', "explain"),
    ("%%xattr evalute --out typo\na good film\na bad film\n", "evaluate"),
    ('%xattr Flow "a fine film" --json f.json', "flow"),
])
def test_a_mistyped_verb_is_an_error_that_names_the_verb(ip, capsys, tmp_path, monkeypatch, source, verb):
    monkeypatch.chdir(tmp_path)
    calls = _no_model(monkeypatch)
    ip.user_ns["TEXTS"] = ["a good film", "a bad film"]
    ip.user_ns.pop("typo", None)
    result = ip.run_cell(source)
    out = capsys.readouterr()
    assert result.error_in_exec is None and "Traceback" not in out.out + out.err
    word = source.split()[1]
    assert f"%xattr: error: {word!r} is not a verb; did you mean {verb!r}?" in out.out
    assert "explain, flow" in out.out and f"%xattr explain {word}" in out.out
    assert calls == [] and list(tmp_path.iterdir()) == [] and "typo" not in ip.user_ns
    with pytest.raises(magic.UsageError, match=f"did you mean {verb!r}"):  # magic.run raises it
        magic.run(source.split("\n", 1)[0].split(" ", 1)[1], namespace={})


def test_a_variable_first_is_a_text_even_when_it_reads_like_a_verb(ip):
    for word in ("heads", "evalute"):
        ip.user_ns["word"] = word
        run(ip, "%xattr $word --out said")
        assert isinstance(ip.user_ns["said"], Attribution) and ip.user_ns["said"].text == word
    assert "within 1 edit of a verb" in " ".join(magic.usage().split())


# ---------------------------------------------------------------------------- evaluate --out-dir DIR (issue 27, item 4)
def test_evaluate_out_dir_writes_the_run_and_resumes(ip, tmp_path, monkeypatch):
    import json

    from xattr_lab.evaluation import faithfulness_harness
    from xattr_lab.evaluation.distributed import shards as sharded

    calls, real = [], faithfulness_harness.text_record

    def counted(ex, text, spec, k):
        calls.append(text)
        return real(ex, text, spec, k)

    monkeypatch.setattr(faithfulness_harness, "text_record", counted)
    folder = tmp_path / "faith"
    run(ip, f"%%xattr evaluate --methods attention --out-dir {folder} --out table\na good film\na bad film\n")
    assert calls == ["a good film", "a bad film"] and (ip.user_ns["table"]["n"] == 2).all()
    assert json.loads((folder / "_provenance.json").read_text())["model_name"] == "tiny-bert"
    assert (folder / "table.csv").read_text().startswith("method,metric,mean") and len(sharded.read_store(folder)) == 2
    ip.user_ns["TEXTS"] = ["a good film", "a bad film", "a dull film"]
    run(ip, f"%xattr evaluate TEXTS --methods attention --out-dir {folder} --out table")
    assert calls[2:] == ["a dull film"] and (ip.user_ns["table"]["n"] == 3).all()
    assert "--out-dir DIR" in " ".join(magic.build_parser().verbs["evaluate"].format_help().split())
