"""The structure of the package (docs/ARCHITECTURE.md): import contracts, module size, design references."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ROOT = REPO_ROOT
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


# ---------------------------------------------------------------------------- the layer diagram is the import graph
#: modules outside the layers (docs/ARCHITECTURE.md, section "Public modules"): the lazy package, the nine public
#: modules (only imports and __all__) and the workshop's checks
OUTSIDE_THE_LAYERS = {"xattr_lab", "xattr_lab.workshop"} | {
    f"xattr_lab.{name}" for name in
    ("flows", "gradients", "circuits", "robustness", "geometry", "faithfulness", "tasks", "zoo", "toy")}
_ARROW = re.compile(r'\s*(?:-->|-- "[^"]*" -->|-\.->|-\. "[^"]*" \.->)\s*')


def parse_layer_diagram(text: str) -> tuple[dict[str, list[str]], set[tuple[str, str, bool]]]:
    """A mermaid flowchart -> ({node: the paths its label names}, {(from, to, dotted)}).

    A node's paths are the ``x.py`` and ``x/`` words of its label's first line; a subgraph is one node holding its
    nodes' paths (an arrow from or to one of them is the subgraph's).
    """
    labels, members, arrows, group = {}, {}, set(), None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("subgraph "):
            group = re.match(r"subgraph (\w+)", line).group(1)
            members[group] = []
            continue
        if line == "end":
            group = None
            continue
        parts = _ARROW.split(line)
        dotted = [".->" in token for token in _ARROW.findall(line)]
        nodes = []
        for part in parts:
            match = re.fullmatch(r'(\w+)(?:\["([^"]*)"\])?', part.strip())
            if not match:
                break
            nodes.append(match.group(1))
            if match.group(2) is not None:
                labels[match.group(1)] = re.findall(r"[\w/]+\.py|\w+/", match.group(2).split("<br/>")[0])
                if group:
                    members[group].append(match.group(1))
        else:
            arrows |= {(a, b, d) for a, b, d in zip(nodes, nodes[1:], dotted)}
    parent = {member: group for group, names in members.items() for member in names}
    paths = {node: ([p for m in members[node] for p in labels[m]] if node in members else labels.get(node, []))
             for node in set(labels) | set(members) if node not in parent}
    return paths, {(parent.get(a, a), parent.get(b, b), d) for a, b, d in arrows}


def _node_modules(paths: list[str], modules: set[str]) -> set[str]:
    """The modules a node's paths name: ``x.py`` is ``xattr_lab.x``; ``x/`` the package ``xattr_lab.x`` and a
    root package whose folder is ``x/`` (pyproject's package-dir), with their submodules."""
    import tomllib

    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    roots = [name.removesuffix(".py").rstrip("/") for name in paths]
    prefixes = {f"xattr_lab.{name.replace('/', '.')}" for name in roots}
    prefixes |= {package for package, folder in folders.items() if folder in roots}
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


def diagram_errors(paths: dict[str, list[str]], arrows: set[tuple[str, str, bool]], imports: set[tuple[str, str]],
                   modules: set[str], outside: set[str]) -> list[str]:
    """What the diagram gets wrong about ``imports`` (direct (importer, imported) pairs of ``modules``)."""
    owner, errors = {}, []
    for node, named in paths.items():
        for module in _node_modules(named, modules):
            owner.setdefault(module, set()).add(node)
    unplaced = sorted(m for m in modules if m not in owner and m not in outside)
    errors += [f"{m} is in no box of the diagram" for m in unplaced]
    errors += [f"{m} is in two boxes: {sorted(nodes)}" for m, nodes in owner.items() if len(nodes) > 1]
    box = {m: next(iter(nodes)) for m, nodes in owner.items()}
    between = {(box[a], box[b]) for a, b in imports if a in box and b in box and box[a] != box[b]}
    errors += [f"arrow {a} -> {b}: no module of {a} imports one of {b}" for a, b, _ in sorted(arrows) if (a, b) not in between]
    reach = {node: {node} for node in paths}
    for _ in paths:
        for a, b, _dotted in arrows:
            reach[a] |= reach.get(b, {b})
    errors += [f"{a} imports {b} with no path of arrows from {a} to {b}" for a, b in sorted(between) if b not in reach[a]]
    errors += [f"{b} (outside the layers) is imported by {a}" for a, b in sorted(imports) if b in outside and a in box]
    return errors


def _layer_diagram() -> str:
    text = ARCHITECTURE.read_text()
    section = text[text.index("## Layers"):]
    return section[section.index("```mermaid") + len("```mermaid"):section.index("```\n", section.index("```mermaid") + 3)]


def test_the_diagram_check_finds_a_missing_and_a_false_arrow():
    paths, arrows = parse_layer_diagram('subgraph top["t"]\n  a["a.py<br/>x"]\nend\nb["b/"]\nc["c.py"]\n'
                                        'top --> b\nb -. "later" .-> c\n')
    assert paths == {"top": ["a.py"], "b": ["b/"], "c": ["c.py"]}
    assert arrows == {("top", "b", False), ("b", "c", True)}
    modules = {"xattr_lab.a", "xattr_lab.b", "xattr_lab.b.x", "xattr_lab.c", "xattr_lab.flows"}
    honest = {("xattr_lab.a", "xattr_lab.b.x"), ("xattr_lab.b.x", "xattr_lab.c"), ("xattr_lab.a", "xattr_lab.c")}
    assert diagram_errors(paths, arrows, honest, modules, {"xattr_lab.flows"}) == []
    wrong = {("xattr_lab.a", "xattr_lab.c"), ("xattr_lab.c", "xattr_lab.b"), ("xattr_lab.b", "xattr_lab.flows")}
    assert diagram_errors(paths, arrows, wrong, modules | {"xattr_lab.d"}, {"xattr_lab.flows"}) == [
        "xattr_lab.d is in no box of the diagram",
        "arrow b -> c: no module of b imports one of c",
        "arrow top -> b: no module of top imports one of b",
        "c imports b with no path of arrows from c to b",
        "xattr_lab.flows (outside the layers) is imported by xattr_lab.b",
    ]


def test_the_layer_diagram_is_the_import_graph():
    """docs/ARCHITECTURE.md's layer diagram: every arrow is a direct import, every import between two boxes follows
    the arrows, every module is in a box or outside the layers; a dotted arrow's imports are made in a function."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("xattr_lab", "xattr_widgets", exclude_type_checking_imports=True)
    modules = set(graph.modules)
    imports = {(a, b) for a in modules for b in graph.find_modules_directly_imported_by(a)}
    paths, arrows = parse_layer_diagram(_layer_diagram())
    assert len(paths) >= 10 and len(arrows) >= 10
    errors = diagram_errors(paths, arrows, imports, modules, OUTSIDE_THE_LAYERS)
    assert not errors, "docs/ARCHITECTURE.md's layer diagram differs from the imports:\n" + "\n".join(errors)
    for a, b, dotted in arrows:
        if not dotted:
            continue
        ours, theirs = _node_modules(paths[a], modules), _node_modules(paths[b], modules)
        for importer, imported in sorted(imports):
            if importer in ours and imported in theirs:
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    line = _source_line(importer, detail["line_number"])
                    assert line.startswith((" ", "\t")), f"{importer} imports {imported} at module level: {line}"


def _source_line(module: str, number: int) -> str:
    import importlib.util

    origin = importlib.util.find_spec(module).origin
    return Path(origin).read_text().splitlines()[number - 1]


def test_every_public_exception_class_lives_in_errors():
    """Exception and warning classes a caller can see are in errors.py (a module's own ``_Stop`` signal, raised and
    caught inside it, is private to it). The one left outside is the input-adapter engineer's."""
    import importlib
    import inspect
    import pkgutil

    import xattr_lab

    # the input-adapter engineer's: OutOfTime is raised and caught in methods/; Cancelled is moving to errors.py
    allowed = {"xattr_lab.methods.pacing.OutOfTime", "xattr_lab.methods.gradients.Cancelled"}
    outside = set()
    for info in pkgutil.walk_packages(xattr_lab.__path__, "xattr_lab."):
        if info.name == "xattr_lab.widgets" or info.name.startswith("xattr_lab.examples"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name
                    and not name.startswith("_") and info.name != "xattr_lab.errors"):
                outside.add(f"{info.name}.{name}")
    assert not outside - allowed, f"exception classes outside errors.py: {sorted(outside - allowed)}"
    from xattr_lab.errors import BackendError, InSampleWarning, XattrError
    from xattr_lab.evaluation.distributed import ray_backend, shards
    from xattr_lab.methods import circuits

    assert ray_backend.BackendError is shards.BackendError is BackendError and issubclass(BackendError, XattrError)
    assert circuits.InSampleWarning is InSampleWarning


def test_no_file_cites_the_superseded_design_document():
    """DESIGN.md is outside the repository and superseded by docs/ARCHITECTURE.md (requirements-zoo.txt cited it)."""
    files = [*ROOT.glob("requirements*.txt"), *(PACKAGE / "data").glob("*.txt"), ROOT / "pyproject.toml",
             *_python_files(), *sorted((ROOT / "widgets").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
    assert len(files) > 100
    stale = [str(p.relative_to(ROOT)) for p in files if "DESIGN.md" in p.read_text()]
    assert not stale, f"files citing DESIGN.md: cite docs/ARCHITECTURE.md's sections instead: {stale}"
