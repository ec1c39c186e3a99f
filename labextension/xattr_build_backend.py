"""In-tree PEP 517 backend: pack the prebuilt JupyterLab extension, then delegate to setuptools.

The wheel carries ``labextension/dist`` as data files (``share/jupyter/labextensions/xattr-lab``),
``widgets/static/xattr-player.js`` (the offline player) and ``examples/*.ipynb`` as package
data. Where ``labextension/dist`` is built (a checkout after ``npm run build``, or an sdist, which
carries it) the build needs no Node. Where it is missing, ``npm install --no-save``, ``npm run build``
and ``npm run build:player`` run in ``labextension/`` when npm is on PATH, else the build stops with a
message naming ``npm run build``. ``XATTR_BUILD_LABEXTENSION=1`` rebuilds an existing dist with npm;
``SKIP_LABEXTENSION_BUILD=1`` packs a Python-only wheel (no extension) without asking for Node.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIST = HERE / "dist"
SOURCES = ("src", "style", "schema", "package.json")
NODE_BUILD_REQUIRES = ["jupyter-builder>=1.3"]  # `jupyter-builder build .` in `npm run build`



def _setuptools():
    """setuptools' PEP 517 backend, imported when a hook runs (the rules below need no setuptools)."""
    from setuptools import build_meta
    from setuptools.dist import Distribution

    # setuptools' editable install looks up `Distribution.has_data`, which no longer exists, and
    # silently drops data files without it.
    if not hasattr(Distribution, "has_data"):
        Distribution.has_data = Distribution.has_data_files  # type: ignore[attr-defined]
    return build_meta


def dist_is_built(dist: Path | None = None) -> bool:
    """True when ``dist`` (default labextension/dist) holds a built extension: its package.json,
    install.json and a remoteEntry script."""
    dist = DIST if dist is None else dist
    static = dist / "static"
    return ((dist / "package.json").is_file() and (dist / "install.json").is_file()
            and static.is_dir() and any(static.glob("remoteEntry.*.js")))


def dist_is_stale(dist: Path | None = None, root: Path = HERE) -> bool:
    """True when a source of the extension (src/, style/, schema/, package.json) is newer than dist/package.json."""
    dist = DIST if dist is None else dist
    built = (dist / "package.json").stat().st_mtime
    for name in SOURCES:
        path = root / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
        if any(f.stat().st_mtime > built for f in files):
            return True
    return False


def missing_dist_message(root: Path = HERE) -> str:
    return (f"the JupyterLab extension is not built ({root / 'dist'} is missing or incomplete) and npm is not on PATH. "
            f"Build it once with Node.js:  cd {root} && npm install && npm run build  "
            "(a wheel or sdist of xattr-lab carries it prebuilt; SKIP_LABEXTENSION_BUILD=1 builds a "
            "Python-only package without the extension).")


def needs_node() -> bool:
    """Whether this build runs npm: the extension is missing, or a rebuild was asked for."""
    if os.environ.get("SKIP_LABEXTENSION_BUILD") or not (HERE / "package.json").exists():
        return False
    return bool(os.environ.get("XATTR_BUILD_LABEXTENSION")) or not dist_is_built()


def _build_labextension() -> None:
    if not needs_node():
        if not os.environ.get("SKIP_LABEXTENSION_BUILD") and (HERE / "src").is_dir() and dist_is_stale():
            warnings.warn(f"{DIST} is older than the extension's sources; packing it as built. To rebuild: "
                          f"cd {HERE} && npm run build (or set XATTR_BUILD_LABEXTENSION=1)", stacklevel=2)
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(missing_dist_message())
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # `npm install --no-save` installs the versions pinned in package-lock.json and never rewrites it.
    # Not `npm ci`: it refuses a lock that lacks optional platform binaries (e.g. @rspack/binding-*
    # for other OSes) which a registry mirror does not carry, as the one on this machine.
    subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund"], cwd=HERE, env=env, check=True)
    subprocess.run([npm, "run", "build"], cwd=HERE, env=env, check=True)
    subprocess.run([npm, "run", "build:player"], cwd=HERE, env=env, check=True)


def node_build_requires() -> list[str]:
    """What a build needs beyond setuptools: jupyter-builder when npm builds the extension, else nothing."""
    return list(NODE_BUILD_REQUIRES) if needs_node() else []


# ---------------------------------------------------------------------------- PEP 517 hooks
def get_requires_for_build_sdist(config_settings=None):
    return _setuptools().get_requires_for_build_sdist(config_settings)


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools().get_requires_for_build_wheel(config_settings) + node_build_requires()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools().get_requires_for_build_editable(config_settings) + node_build_requires()


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _setuptools().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _setuptools().prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_sdist(sdist_directory, config_settings=None):
    return _setuptools().build_sdist(sdist_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _build_labextension()
    return _setuptools().build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _build_labextension()
    return _setuptools().build_editable(wheel_directory, config_settings, metadata_directory)
