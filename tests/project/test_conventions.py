"""Package conventions (docs/ARCHITECTURE.md, section "Public modules"): what is public and what stays private.

- The nine public modules (``xattr_lab.flows``, ``.gradients``, ...) hold only imports and ``__all__``; every
  name in ``__all__`` resolves, and the module offers nothing else. The code lives in the layers below.
- Every ``xa.<public>.<name>`` written in the README, the docs, the notebooks, the tests and the scripts resolves
  (also as ``from xattr_lab.<public> import <name>`` and ``from xattr_lab import <public> as P`` ... ``P.<name>``).
- A ``_name`` is private to its module: no module imports another module's ``_name`` (an AST scan of both root
  packages); none does (68 did when the scan was written).
"""
from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ROOT = REPO_ROOT
#: root package name -> folder
ROOT_PACKAGES = {"xattr_lab": ROOT / "kernel_ext", "xattr_widgets": ROOT / "widgets"}
PUBLIC = ("flows", "gradients", "circuits", "robustness", "geometry", "faithfulness", "tasks", "zoo", "toy")


# ---------------------------------------------------------------------------- the private-name scan
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_files(roots: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every .py file under each root package's folder (``__init__`` names its package)."""
    files = {}
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            if "node_modules" in path.parts or "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([package, *parts])] = path
    return files


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name an ``ImportFrom`` reads from (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(roots: dict[str, Path]) -> set[tuple[str, str, str]]:
    """(importing module, defining module, private name) for every ``_name`` one module takes from another.

    Two forms: ``from .x import _name`` (at any depth of the file, functions included) and ``x._name`` where ``x``
    is a module of the scanned packages bound by an import (``from . import x``, ``import pkg.x as x``).
    """
    files = _module_files(roots)
    found = set()
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        modules_bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node, module, path.name == "__init__.py")
                if source.split(".")[0] not in roots:
                    continue
                for alias in node.names:
                    if f"{source}.{alias.name}" in files:
                        modules_bound[alias.asname or alias.name] = f"{source}.{alias.name}"
                    elif _is_private(alias.name) and source != module:
                        found.add((module, source, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in roots and alias.asname and alias.name in files:
                        modules_bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in modules_bound and modules_bound[node.value.id] != module):
                found.add((module, modules_bound[node.value.id], node.attr))
    return found


def test_the_scan_finds_both_forms_of_private_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import _shared_in_package\n")
    (pkg / "sub" / "a.py").write_text("_shared_in_package = 1\n_own = 2\nx = _own\n")
    (pkg / "b.py").write_text("from .sub.a import _own, public\nfrom .sub import a\n\n\ndef f():\n"
                              "    from pkg.sub.a import __doc__\n    return a._hidden, a.visible\n")
    (pkg / "c.py").write_text("import pkg.sub.a as mod\nimport os\nvalue = mod._deep + os._exit.__name__\n")
    assert private_imports({"pkg": pkg}) == {
        ("pkg.sub", "pkg.sub.a", "_shared_in_package"),
        ("pkg.b", "pkg.sub.a", "_own"),
        ("pkg.b", "pkg.sub.a", "_hidden"),
        ("pkg.c", "pkg.sub.a", "_deep"),
    }


def test_no_private_name_crosses_a_module_boundary():
    found = sorted(private_imports(ROOT_PACKAGES))
    assert not found, ("a module imports another module's private name: make the name public (no underscore) where "
                     f"it is shared, or move it to the module that uses it: {found}")


# ---------------------------------------------------------------------------- the public modules
def _public_source(name: str) -> ast.Module:
    return ast.parse((ROOT_PACKAGES["xattr_lab"] / f"{name}.py").read_text())


@pytest.mark.parametrize("name", PUBLIC)
def test_a_public_module_holds_only_imports_and_all(name):
    body = _public_source(name).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    other = [ast.dump(node)[:80] for node in body
             if not isinstance(node, (ast.Import, ast.ImportFrom))
             and not (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"])]
    assert not other, f"xattr_lab.{name} holds more than imports and __all__: {other}"
    imports = [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(node, ast.ImportFrom) and node.level == 1 for node in imports), (
        f"xattr_lab.{name} imports only from the package's layers (relative imports)")
    assert not any(node.module == "__future__" for node in imports)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves_and_nothing_else_is_offered(name):
    module = importlib.import_module(f"xattr_lab.{name}")
    listed = list(module.__all__)
    assert len(listed) == len(set(listed)), f"names listed twice in xattr_lab.{name}.__all__"
    for item in listed:
        assert getattr(module, item) is not None, f"xattr_lab.{name}.{item}"
    offered = {item for item in vars(module) if not item.startswith("_")}
    assert offered == set(listed), f"xattr_lab.{name} offers names outside __all__: {sorted(offered - set(listed))}"
    import xattr_lab as xa

    assert getattr(xa, name) is module


def test_no_module_replaces_itself_in_sys_modules():
    """The public modules are modules of their own, not other modules under a second name."""
    for name in PUBLIC:
        module = importlib.import_module(f"xattr_lab.{name}")
        assert module.__name__ == f"xattr_lab.{name}"
        assert Path(module.__file__).resolve() == (ROOT_PACKAGES["xattr_lab"] / f"{name}.py").resolve()


_USE = re.compile(r"\b(?:xa|xattr_lab)\.(" + "|".join(PUBLIC) + r")\.([A-Za-z_]\w*)")
_FILE_SUFFIXES = {"py", "json", "txt", "md", "csv", "ipynb", "html", "png", "parquet"}
_IMPORT = re.compile(r"from xattr_lab import ([\w ,]+)")
_FROM = re.compile(r"from xattr_lab\.(" + "|".join(PUBLIC) + r") import (?:\(([^)]*)\)|([^\n]*))")


def _documents() -> list[Path]:
    docs = [p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts]
    code = [p for folder in ("tests", "scripts") for p in (ROOT / folder).rglob("*.py")]
    return [ROOT / "README.md", *docs, *sorted((ROOT / "examples").glob("*.ipynb")), *code]


def _text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
    return path.read_text()


def test_every_public_name_the_documents_use_resolves():
    used: dict[tuple[str, str], set[str]] = {}
    for path in _documents():
        if path == Path(__file__).resolve():
            continue
        text = _text(path)
        where = str(path.relative_to(ROOT))
        for match in _USE.finditer(text):
            used.setdefault((match.group(1), match.group(2)), set()).add(where)
        for match in _IMPORT.finditer(text):  # from xattr_lab import zoo, gradients as G -> zoo.x, G.y
            for item in match.group(1).split(","):
                name, _, alias = item.strip().partition(" as ")
                if name in PUBLIC:
                    for use in re.finditer(rf"(?<![\w./-]){re.escape(alias or name)}\.([A-Za-z_]\w*)", text):
                        if use.group(1) not in _FILE_SUFFIXES:  # "tasks.py", "geometry.json": file names
                            used.setdefault((name, use.group(1)), set()).add(where)
        for match in _FROM.finditer(text):
            listed = re.sub(r"#[^\n]*", "", match.group(2) or match.group(3))
            for item in re.sub(r"\b(\w+)\s+as\s+\w+", r"\1", listed).replace(",", " ").split():
                used.setdefault((match.group(1), item), set()).add(where)
    assert len(used) > 20 and ("flows", "rollout") in used and ("zoo", "load_alias") in used
    missing = {f"xattr_lab.{module}.{item}": sorted(files) for (module, item), files in used.items()
               if not hasattr(importlib.import_module(f"xattr_lab.{module}"), item)}
    assert not missing, f"public names used in the documents that no longer resolve: {missing}"
