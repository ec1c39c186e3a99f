"""Helpers the tests share (not tests): the repository root, model builders, GAF cases.

Import them as ``tests.support.<module>`` (tests/README.md).
"""
from __future__ import annotations

from pathlib import Path

#: the repository root (this file is tests/support/__init__.py): tests read docs/, scripts/, results/ from here
REPO_ROOT = Path(__file__).resolve().parents[2]
