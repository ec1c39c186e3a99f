"""``xattr_lab.tasks``: the public name of :mod:`xattr_lab.evaluation.tasks` (the same module object)."""
import sys

from .evaluation import tasks as _module

sys.modules[__name__] = _module
