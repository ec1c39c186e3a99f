"""``xattr_lab.gradients``: the public name of :mod:`xattr_lab.methods.gradients` (the same module object)."""
import sys

from .methods import gradients as _module

sys.modules[__name__] = _module
