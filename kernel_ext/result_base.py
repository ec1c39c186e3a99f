"""The base of every result (:class:`Result`) and its JSON helpers; :mod:`xattr_lab.results` re-exports them.

Split from :mod:`xattr_lab.results` to keep each module under the 400-line budget. numpy only.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
from typing import Any, ClassVar

import numpy as np

from .constants import SCHEMA

#: The module whose ``mime_bundle(result)`` draws results in notebooks (docs/ARCHITECTURE.md, "Front end").
FRONT_END = "xattr_lab.widgets"

KINDS: dict[str, type["Result"]] = {}


def to_plain(value: Any) -> Any:
    """Convert arrays/tuples/numpy scalars into JSON-safe Python objects."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            return to_plain(value.tolist())
        return value.tolist()
    if isinstance(value, (np.floating,)):
        return to_plain(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def float_array(value: Any) -> np.ndarray:
    array = np.asarray(value if value is not None else [], dtype=object)
    return np.asarray(np.where(array == None, np.nan, array), dtype=np.float64)  # noqa: E711


@dataclasses.dataclass
class Result:
    """Base of every result: knows its JSON kind and which fields are float arrays."""

    kind: ClassVar[str] = "result"
    #: names of fields held as float64 numpy arrays
    array_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        KINDS[cls.kind] = cls

    def __post_init__(self) -> None:
        for name in self.array_fields:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, as_float64(value))

    def to_dict(self) -> dict[str, Any]:
        payload = {"schema": SCHEMA, "kind": self.kind}
        for f in dataclasses.fields(self):
            payload[f.name] = to_plain(getattr(self, f.name))
        return payload

    def to_json(self, **json_kwargs: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **json_kwargs)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "Result":
        schema = payload.get("schema")
        if schema != SCHEMA:
            raise ValueError(f"unsupported xattr payload schema {schema!r}; this version reads {SCHEMA!r}")
        kind = payload.get("kind")
        target_cls = KINDS.get(kind)
        if target_cls is None:
            raise ValueError(f"unknown result kind {kind!r}; known: {sorted(KINDS)}")
        if cls is not Result and not issubclass(target_cls, cls):
            raise ValueError(f"payload holds a {kind!r}, not a {cls.kind!r}")
        names = {f.name for f in dataclasses.fields(target_cls)}
        values = {k: v for k, v in payload.items() if k in names}
        for name in target_cls.array_fields:
            if values.get(name) is not None:
                values[name] = float_array(values[name])
        return target_cls._from_plain(values)

    @classmethod
    def _from_plain(cls, values: dict[str, Any]) -> "Result":
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "Result":
        return cls.from_dict(json.loads(text))

    # Rich display: the front end (FRONT_END, a plug-in named by module path, so the compute
    # layers never import it) supplies the bundle; without it, text.
    def _repr_mimebundle_(self, include=None, exclude=None):
        try:
            mime_bundle = importlib.import_module(FRONT_END).mime_bundle
        except Exception:  # pragma: no cover - front end missing or broken
            return {"text/plain": repr(self)}
        return mime_bundle(self)


def as_float64(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)
