"""In-tree PEP 517 backend: build the JupyterLab extension, then delegate to setuptools.

`build_wheel` and `build_editable` run `npm install --no-save`, `npm run build` and `npm run build:player`
in `labextension/` (with this interpreter's bin folder on PATH so `jupyter-builder` is found) before
setuptools packs `labextension/dist` as data files and `kernel_ext/widgets/static/xattr-player.js` (the
text/html player, one esbuild IIFE) as package data. Set ``SKIP_LABEXTENSION_BUILD=1`` for a Python-only
install (the extension is then not shipped; the committed player file is, as it was last built).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.dist import Distribution

# setuptools' editable install looks up `Distribution.has_data`, which no longer exists, and
# silently drops data files without it.
if not hasattr(Distribution, "has_data"):
    Distribution.has_data = Distribution.has_data_files  # type: ignore[attr-defined]

HERE = Path(__file__).resolve().parent

get_requires_for_build_wheel = _setuptools.get_requires_for_build_wheel
get_requires_for_build_sdist = _setuptools.get_requires_for_build_sdist
get_requires_for_build_editable = _setuptools.get_requires_for_build_editable
prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
build_sdist = _setuptools.build_sdist


def _build_labextension() -> None:
    if os.environ.get("SKIP_LABEXTENSION_BUILD") or not (HERE / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is needed to build the JupyterLab extension; install Node.js, "
            "or set SKIP_LABEXTENSION_BUILD=1 for a Python-only install."
        )
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # `npm install --no-save` installs the versions pinned in package-lock.json and never rewrites it.
    # Not `npm ci`: it refuses a lock that lacks optional platform binaries (e.g. @rspack/binding-*
    # for other OSes) which a registry mirror does not carry, as the one on this machine.
    subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund"], cwd=HERE, env=env, check=True)
    subprocess.run([npm, "run", "build"], cwd=HERE, env=env, check=True)
    subprocess.run([npm, "run", "build:player"], cwd=HERE, env=env, check=True)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _build_labextension()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _build_labextension()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
