"""``xattr_lab.geometry``: the public name of :mod:`xattr_lab.methods.geometry` (the same module object)."""
import sys

from .methods import geometry as _module

sys.modules[__name__] = _module
