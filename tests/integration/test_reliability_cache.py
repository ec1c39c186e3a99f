"""Issue #20: caches are bounded and keyed right; zoo builds are atomic across processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xattr_lab import commands, widgets
from xattr_lab.core import cache

# Two processes build the same cached name. A builds first and waits (bounded) for B to return;
# with the lock B cannot return before A is done, so A's wait runs out and B loads A's build.
_BUILDER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from xattr_lab.core import cache
    role, shared = sys.argv[1], Path(sys.argv[2])

    def build(out):
        with open(shared / "log", "a") as log:
            log.write(role + "\\n")
        (shared / (role + "-building")).touch()
        if role == "A":
            for _ in range(150):  # bounded: at most ~3 s
                if (shared / "B-returned").exists():
                    break
                time.sleep(0.02)
        (out / "weights.txt").write_text(role)
        return {"built_by": role}

    if role == "B":
        for _ in range(3000):  # wait (bounded) until A is building
            if (shared / "A-building").exists():
                break
            time.sleep(0.02)
    value = cache.cached("thing", build, lambda folder: (folder / "weights.txt").read_text())
    (shared / (role + "-returned")).touch()
    print(value)
""")


def test_two_processes_building_one_model_build_it_once(tmp_path):
    """Old code: both built it (the log said A, B) and B's folder was replaced under it."""
    env = dict(os.environ, XATTR_LAB_CACHE=str(tmp_path / "cache"))
    script = tmp_path / "builder.py"
    script.write_text(_BUILDER)
    procs = [subprocess.Popen([sys.executable, str(script), role, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for role in ("A", "B")]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert (tmp_path / "log").read_text().split() == ["A"]
    assert [out.strip() for out, _ in outputs] == ["A", "A"]
    manifest = json.loads((tmp_path / "cache" / "thing" / "manifest.json").read_text())
    assert manifest == {"built_by": "A"}


def test_leftovers_of_killed_builds_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("XATTR_LAB_CACHE", str(tmp_path))
    leftover = tmp_path / "thing.building-abc123"
    (leftover / "half").mkdir(parents=True)
    assert cache.cached("thing", lambda out: (out / "w").write_text("1") and {}, lambda f: (f / "w").read_text()) == "1"
    assert not leftover.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["thing", "thing.lock"]


def test_lru_cache_is_bounded_by_bytes():
    lru = cache.LRUCache(100, sizeof=len)
    lru["a"], lru["b"] = "x" * 40, "y" * 40
    assert lru["a"] == "x" * 40  # a is now the most recent
    lru["c"] = "z" * 40  # over 100 bytes: b, the least recently used, goes
    assert "b" not in lru and "a" in lru and "c" in lru and lru.total_bytes == 80
    lru["huge"] = "h" * 101  # bigger than the budget: not kept, nothing else dropped
    assert "huge" not in lru and len(lru) == 2
    assert cache.nbytes(np.zeros(1000)) >= 8000 and cache.nbytes({"k": np.zeros(10)}) >= 80


def test_the_explainers_of_the_front_ends_are_bounded_by_their_weights(monkeypatch):
    """Old code: a plain dict kept every model ever named in the kernel."""
    first = commands.explainer("tiny-bert", "cpu")
    size = sum(t.numel() * t.element_size() for t in first.model.state_dict().values())
    assert isinstance(commands.EXPLAINERS, cache.LRUCache)
    monkeypatch.setattr(commands, "EXPLAINERS", cache.LRUCache(int(1.5 * size), sizeof=commands.EXPLAINERS.sizeof))
    commands.explainer("tiny-bert", "cpu")
    commands.explainer("tiny-distilbert", "cpu")  # as big again: the least recently used goes
    assert ("tiny-bert", "cpu") not in commands.EXPLAINERS and ("tiny-distilbert", "cpu") in commands.EXPLAINERS
    assert commands.EXPLAINERS.total_bytes <= 1.5 * size


def test_explorer_cache_knows_the_weights_and_the_code_version(tiny, monkeypatch):
    """Old code: the result of the old weights came back after the model was changed in place."""
    from xattr_lab.widgets import explorer as explorer_module

    ex = tiny("bert")
    e = widgets.Explorer(ex, "a fine film", views=("strip",), background=False)
    e.refresh()
    first = e.strip.result.scores.copy()
    param = ex.model.bert.encoder.layer[1].attention.self.query.weight
    try:
        with torch.no_grad():
            param.mul_(-3.0)  # the model changes in place (fine-tuning, editing)
        e.refresh()
        assert not e.timings[-1]["cached"]
        assert not np.allclose(e.strip.result.scores, first)
    finally:
        with torch.no_grad():
            param.div_(-3.0)
    e.refresh()
    calls = len(e.timings)
    monkeypatch.setattr(explorer_module, "_code_version", lambda: "another version")
    e.refresh()
    assert len(e.timings) == calls + 1 and not e.timings[-1]["cached"]


def test_explorer_cache_is_bounded_by_bytes(tiny):
    e = widgets.Explorer(tiny("bert"), "a fine film", views=("strip",), background=False, cache_bytes=2000)
    for text in ("one film", "two films", "three fine films", "four films here", "five"):
        e.set(text=text)
    assert 0 < e.cache.total_bytes <= 2000 and len(e.cache) < 5
    assert e.strip.result.tokens[1] == "five"


@pytest.mark.parametrize("size", [0, 10])
def test_explorer_cache_of_zero_bytes_keeps_nothing(size):
    cache_ = widgets.bundle.ResultCache(size)
    cache_["k"] = widgets.bundle.ResultCache(1)  # any object is bigger than that
    assert "k" not in cache_ and cache_.total_bytes == 0
