"""The package evaluation/robustness/: its names, the experiment's record cache and code version, its default model."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

from xattr_lab import constants
from xattr_lab import robustness as R
from xattr_lab.evaluation import robustness as package
from xattr_lab.evaluation.robustness import chance, experiment, metrics, perturbations, search, text_edits


def test_the_package_offers_exactly_the_public_modules_names():
    """xa.robustness and the package's __init__ list the same names, bound to the same objects."""
    assert sorted(package.__all__) == sorted(R.__all__) and len(set(R.__all__)) == len(R.__all__)
    for name in R.__all__:
        assert getattr(package, name) is getattr(R, name), name


def test_the_package_init_holds_only_imports_and_all():
    body = ast.parse(Path(package.__file__).read_text()).body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)  # the docstring
    other = [ast.dump(node)[:80] for node in body[1:]
             if not isinstance(node, ast.ImportFrom)
             and not (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"])]
    assert not other
    assert all(node.level == 1 for node in body[1:] if isinstance(node, ast.ImportFrom))


@pytest.mark.parametrize("module", [metrics, chance, perturbations, search, text_edits, experiment],
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_editing_a_module_the_records_depend_on_changes_the_code_version(module, monkeypatch):
    """The cached records are keyed by the source of every module that computes them: the text edits (predictions,
    word vocabulary, surrogate gradient) too, which the perturbations and searches run."""
    before = experiment.code_version()
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("\n# edited\n" if obj is module else ""))
    assert experiment.code_version() != before
    monkeypatch.setattr(inspect, "getsource", real)
    assert experiment.code_version() == before


def test_the_experiments_default_model_is_the_packages_default(monkeypatch):
    """ExperimentConfig.model defaults to constants.DEFAULT_MODEL: loading the module with another default gives
    that one (a copy under another name, so the real module and its class stay as they are)."""
    default = constants.DEFAULT_MODEL
    assert experiment.ExperimentConfig().model == default
    monkeypatch.setattr(constants, "DEFAULT_MODEL", "another-model")
    name = "xattr_lab.evaluation.robustness.experiment_probe"
    spec = importlib.util.spec_from_file_location(name, experiment.__file__)
    probe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, probe)
    spec.loader.exec_module(probe)
    assert probe.ExperimentConfig().model == "another-model"
    assert experiment.ExperimentConfig().model == default


def test_the_record_cache_folder_and_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("XATTR_LAB_CACHE", str(tmp_path / "cache"))
    config = experiment.ExperimentConfig(methods=("attention",))
    assert experiment.cache_folder(config, "abc", False) is None
    assert experiment.cache_folder(config, "abc", tmp_path / "mine") == tmp_path / "mine"
    assert experiment.cache_folder(config, "abc", str(tmp_path / "mine")) == tmp_path / "mine"
    keyed = experiment.cache_folder(config, "abc", True)
    assert keyed == tmp_path / "cache" / "robustness" / config.key("abc") and keyed != experiment.cache_folder(
        config, "other weights", True)
    assert experiment.record_path(None, "ig", "a text") is None
    path = experiment.record_path(tmp_path, "ig", "a text")
    assert path.parent == tmp_path / "ig" and path.suffix == ".json" and len(path.stem) == 24
    assert path != experiment.record_path(tmp_path, "ig", "another text")
    assert path.name == experiment.record_path(tmp_path, "sig", "a text").name


def test_store_record_writes_the_whole_record_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "ig" / "record.json"
    record = {"text": "a film", "original": [0.5, -1.25], "arms": {"any": {}}}
    experiment.store_record(path, record)
    assert json.loads(path.read_text()) == record
    experiment.store_record(path, {"text": "replaced"})
    assert json.loads(path.read_text()) == {"text": "replaced"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]


def test_sampled_fingerprint_follows_the_weights_and_the_name():
    torch = pytest.importorskip("torch")

    class Fake:
        def __init__(self, name, model):
            self.name, self.model = name, model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    first = experiment.sampled_fingerprint(Fake("m", model))
    assert len(first) == 16 and first == experiment.sampled_fingerprint(Fake("m", model))
    assert first != experiment.sampled_fingerprint(Fake("other", model))
    with torch.no_grad():
        model[-1].bias[0] += 1.0
    assert first != experiment.sampled_fingerprint(Fake("m", model))
