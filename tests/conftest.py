"""Shared fixtures: tiny random models (fast) and the embedded models (slow)."""
from __future__ import annotations

import os

import pytest

# Tests never touch the network: the hub client fails fast instead of trying to download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TINY_ARCHS = ("bert", "distilbert", "roberta", "gpt2", "llama")


@pytest.fixture(scope="session")
def tiny():
    """tiny(arch) -> a cached Explainer on a random-init tiny model ("bert", ..., "llama")."""
    import xattr_lab as xa

    cache = {}

    def get(arch: str = "bert"):
        if arch not in cache:
            cache[arch] = xa.load(f"tiny-{arch}", device="cpu")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def minilm():
    import xattr_lab as xa

    return xa.load("minilm-rt", device="cpu")


@pytest.fixture(scope="session")
def smollm():
    import xattr_lab as xa

    return xa.load("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def ip():
    """An IPython shell with ``%load_ext xattr_lab`` done (the magic's tests)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "xattr_lab")
    return shell
