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
                     "--position", "-1", "--center-heads", "--l1", "0.1", "--seed", "3", "--html", "",
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
