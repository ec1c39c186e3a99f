"""``xattr_lab.zoo``: the embedded models and data; :func:`load_alias` gives an :class:`xattr_lab.Explainer`.

The code lives in :mod:`xattr_lab.core.zoo` (building the embedded models), :mod:`xattr_lab.core.cache`
(where builds land) and :mod:`xattr_lab.core.zoo_packages` (the PyPI packages that carry them);
docs/ARCHITECTURE.md, section "Embedded models".
"""
from .core.cache import cache_dir, cached, manifest
from .core.zoo import (
    ALIASES, LABELS, MINILM_RECIPE, evaluate_accuracy, load_alias_model, minilm_dir, package_dir, quiet_transformers,
    rotten_tomatoes, smollm2_gguf, tiny_model, unknown_model_error,
)
from .core.zoo_packages import ZOO_INSTALL, ZOO_PACKAGES, ZOO_REQUIREMENTS, zoo_requirements
from .explainer import load_alias

__all__ = [
    "ALIASES", "LABELS", "MINILM_RECIPE", "ZOO_INSTALL", "ZOO_PACKAGES", "ZOO_REQUIREMENTS", "cache_dir", "cached",
    "evaluate_accuracy", "load_alias", "load_alias_model", "manifest", "minilm_dir", "package_dir",
    "quiet_transformers", "rotten_tomatoes", "smollm2_gguf", "tiny_model", "unknown_model_error", "zoo_requirements",
]
