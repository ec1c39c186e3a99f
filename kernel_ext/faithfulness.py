"""``xattr_lab.faithfulness``: the public name of :mod:`xattr_lab.evaluation.faithfulness` (the same module object)."""
import sys

from .evaluation import faithfulness as _module

sys.modules[__name__] = _module
