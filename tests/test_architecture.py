"""The structure of the package (docs/ARCHITECTURE.md): import contracts, module size, design references."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kernel_ext"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
MAX_LINES = 400


def _sections() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^## (.+)$", ARCHITECTURE.read_text(), re.M)}


def _python_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "node_modules" not in p.parts)


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is part of the dev extra"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" not in done.stdout.split("Contracts:")[-1].lower() or " 0 broken" in done.stdout


def test_no_module_over_the_size_limit():
    long = {str(p.relative_to(ROOT)): n for p in _python_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_design_reference_points_at_a_section_that_exists():
    sections = _sections()
    cited: dict[str, set[str]] = {}
    stale = []
    for path in _python_files() + sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        text = path.read_text()
        if re.search(r"DESIGN section", text):
            stale.append(str(path.relative_to(ROOT)))
        for ref in re.finditer(r"ARCHITECTURE\.md[^\n]*", text):
            for name in re.findall(r'"([^"]+)"', ref.group(0)):
                cited.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert not stale, f"references to the old DESIGN document: {stale}"
    missing = {name: sorted(files) for name, files in cited.items() if name not in sections}
    assert cited and not missing, f"cited sections missing from docs/ARCHITECTURE.md: {missing}"


def test_docs_method_table_is_the_registry():
    from xattr_lab.methods import registry

    assert registry.markdown_table() in (ROOT / "docs" / "guides" / "methods.md").read_text(), (
        "docs/guides/methods.md's method table differs from the registry: paste "
        "xattr_lab.methods.registry.markdown_table()"
    )


def test_public_method_list_is_the_registry():
    import xattr_lab as xa
    from xattr_lab.methods import registry

    assert xa.METHODS == registry.ATTRIBUTION_METHODS == registry.names("attribution")
    for name in registry.names():
        spec = registry.spec(name)
        assert spec.kind in registry.KINDS and spec.summary


@pytest.mark.parametrize("name", ["attention", "rollout", "attention_flow", "gaf", "ig", "sig", "grad_x_input",
                                  "flow", "heads", "circuit"])
def test_every_registered_method_has_an_implementation(name):
    from xattr_lab.methods import registry

    assert callable(registry.function(name))


def test_unknown_method_is_an_input_error_listing_the_choices():
    from xattr_lab.errors import InputError, XattrError
    from xattr_lab.methods import registry

    with pytest.raises(InputError, match="choose one of") as info:
        registry.spec("no_such_method")
    assert isinstance(info.value, XattrError) and isinstance(info.value, ValueError)


def test_importing_the_package_and_front_end_loads_no_torch():
    code = ("import sys, xattr_lab, xattr_lab.widgets, xattr_lab.widgets.explorer, xattr_lab.methods.registry;"
            "import xattr_lab.target_spec, xattr_lab.constants, xattr_lab.errors;"
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_public_names_still_import():
    import xattr_lab as xa

    for name in ("flows", "gradients", "circuits", "robustness", "geometry", "faithfulness", "zoo", "toy", "tasks",
                 "results", "widgets"):
        assert getattr(xa, name) is not None
    for name in ("load", "Explainer", "METHODS", "XattrError", "Attribution", "FlowResult", "HeadStats",
                 "CircuitResult"):
        assert getattr(xa, name) is not None
    from xattr_lab.flows import attention_flow, barrier_max_flow, information_tensor, rollout  # noqa: F401
    from xattr_lab.gradients import integrated_gradients, sequential_integrated_gradients  # noqa: F401
    from xattr_lab.circuits import head_ablation_effects, node_scores, roc_auc, truth_mask  # noqa: F401
    assert xa.flows.FlowSolverError is xa.errors.SolverError and issubclass(xa.errors.SolverError, RuntimeError)


def test_registry_info_kinds_are_the_graphs_kinds():
    from xattr_lab.graphs.information import INFO_KINDS
    from xattr_lab.methods import registry

    assert set(registry.INFO_KINDS) == set(INFO_KINDS)
    assert {o.name: o.choices for o in registry.spec("gaf").options}["info"] == registry.INFO_KINDS


def test_every_package_folder_is_in_the_wheel():
    """pyproject's explicit package list names every folder of kernel_ext that holds an __init__.py (a wheel
    built without one would lack that subpackage, e.g. core/adapters)."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    data_only = {name for name, folder in setuptools["package-dir"].items() if folder != "kernel_ext"}  # examples/
    found = {".".join(("xattr_lab",) + p.parent.relative_to(ROOT / "kernel_ext").parts)
             for p in (ROOT / "kernel_ext").rglob("__init__.py")}
    assert found == listed - data_only and data_only <= listed
