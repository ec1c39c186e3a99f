"""The `xattr` command line."""
from __future__ import annotations

import json
import re

import pytest

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
    assert set(cli_verbs) - set(magic_verbs) == {"lab", "export"}  # the CLI's own verbs
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
