"""``xattr_lab.tasks``: prompt sets with known circuits (IOI, greater-than, induction) and their metrics.

The code lives in :mod:`xattr_lab.evaluation.tasks`.
"""
from .evaluation.tasks import (
    GREATER_THAN_NOUNS, GREATER_THAN_TEMPLATE, IOI_NAMES, IOI_OBJECTS, IOI_PLACES, IOI_TEMPLATES, TaskPrompts,
    greater_than_prompts, induction_task, ioi_prompts, probability_difference,
)

__all__ = [
    "GREATER_THAN_NOUNS", "GREATER_THAN_TEMPLATE", "IOI_NAMES", "IOI_OBJECTS", "IOI_PLACES", "IOI_TEMPLATES",
    "TaskPrompts", "greater_than_prompts", "induction_task", "ioi_prompts", "probability_difference",
]
