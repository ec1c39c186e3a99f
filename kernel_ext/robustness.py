"""``xattr_lab.robustness``: robustness of attributions, one public module over the evaluation layer.

The code lives in the package :mod:`xattr_lab.evaluation.robustness`:

- metrics over attribution maps (top-k intersection, LENS, top-k-div, Spearman, Kendall):
  :mod:`xattr_lab.evaluation.robustness.metrics`;
- their chance levels and chance-corrected values (``chance_overlap``, ``chance_corrected``,
  ``chance_div_overlap``): :mod:`xattr_lab.evaluation.robustness.chance`;
- text perturbations that keep the prediction, and the attribution attack:
  :mod:`xattr_lab.evaluation.robustness.perturbations`;
- the four arms of the paired experiment with equal query budgets (neighbour-random, random
  search, gradient attack, dense embedding noise): :mod:`xattr_lab.evaluation.robustness.search`;
- the paired experiment (cached, resumable) and its statistics (chance-corrected means, paired
  bootstrap gaps): :mod:`xattr_lab.evaluation.robustness.experiment`,
  :mod:`xattr_lab.evaluation.robustness.stats`;
- the quick report over perturbations with Student-t intervals: :mod:`xattr_lab.evaluation.robustness.report`.

The names offered are the package's ``__all__``. See docs/ARCHITECTURE.md, section "Robustness".
"""

from .evaluation.robustness import *  # noqa: F401,F403 - exactly the names of its __all__
from .evaluation.robustness import __all__  # noqa: F401
