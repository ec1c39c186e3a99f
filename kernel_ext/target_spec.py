"""Target specifications as users type them (``--target``, the widgets' target box).

Pure string handling: no numpy, no torch, so the front end can use it.
"""
from __future__ import annotations

from typing import Any


def parse_target(value: Any) -> Any:
    """"" or None -> None (predicted); "3" -> 3; "a,b" -> ("a", "b"); else the label/token string.

    Token strings keep their leading space (" Mary" and "Mary" are different GPT-2/Llama tokens):
    ``--target " Mary, John"`` gives (" Mary", " John"). Class labels are matched ignoring spaces.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() == "":
            return None
        a, comma, b = value.partition(",")
        if comma and a.strip() and b.strip():
            return (parse_target(a), parse_target(b))
        if value.strip().lstrip("-").isdigit():
            return int(value)
    return value


def target_text(target: Any) -> str:
    """The inverse of :func:`parse_target`, for a text box."""
    if target is None:
        return ""
    if isinstance(target, (tuple, list)):
        return ",".join(str(t) for t in target)
    return str(target)


def token_position(value: str) -> Any:
    """A token position option: 'mean' or a token index (negative counts from the end)."""
    return "mean" if value == "mean" else int(value)
