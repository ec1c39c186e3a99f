"""The front end under its public name: ``xattr_lab.widgets`` is this package, ``xattr_widgets``.

The front end is an import package of its own (folder ``widgets/`` at the repository root) so that
import-linter can check it as a second root package beside ``xattr_lab`` (grimp only walks a root
package's folder). Users, notebooks and saved code import it as ``xattr_lab.widgets``:
:func:`install` makes that name, and every ``xattr_lab.widgets.<sub>`` name, the very module object
of ``xattr_widgets.<sub>`` -- one module, not a copy, so a monkeypatch, an ``isinstance`` check or a
module-level setting (``core.DIVERGING``) seen through either name is the same. Stdlib only.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

__all__ = ["PublicName", "install"]


class PublicName(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``<public>.<sub>`` as the already importable ``<real>.<sub>`` (a meta path finder)."""

    def __init__(self, public: str, real: str) -> None:
        self.public, self.real = public, real

    def real_name(self, fullname: str) -> str:
        """``xattr_lab.widgets.views`` -> ``xattr_widgets.views``."""
        return self.real + fullname[len(self.public):]

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.public + "."):
            return None
        real = importlib.util.find_spec(self.real_name(fullname))
        if real is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=real.submodule_search_locations is not None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.real_name(spec.name))
        spec.loader_state = module.__spec__  # the import system sets module.__spec__ = spec next
        return module

    def exec_module(self, module: ModuleType) -> None:
        alias = module.__spec__
        if alias is not None and alias.loader is self and alias.loader_state is not None:
            module.__spec__ = alias.loader_state  # the module keeps its own spec (importlib.resources, reload)

    def __eq__(self, other) -> bool:
        return isinstance(other, PublicName) and (other.public, other.real) == (self.public, self.real)

    __hash__ = None  # type: ignore[assignment]


def install(public: str, real: str) -> ModuleType:
    """Make ``public`` (and its submodule names) the package ``real``; returns the package. Idempotent."""
    finder = PublicName(public, real)
    if finder not in sys.meta_path:
        sys.meta_path.insert(0, finder)
    package = importlib.import_module(real)
    sys.modules[public] = package
    return package
