"""Names and numbers shared across layers: the default model, MIME types, the JSON schema version."""
from __future__ import annotations

#: The model ``xa.load()``, ``%xattr`` and ``xattr`` use when none is named (embedded, offline).
DEFAULT_MODEL = "minilm-rt"

#: Saved-result JSON: the schema tag inside the payload and the MIME type of the display bundle.
SCHEMA = "xattr.v1"
MIME_TYPE = "application/vnd.xattr.v1+json"

#: The saved display payload, v2 (what the views draw, compact arrays; ``xattr_lab.payload``).
SCHEMA_V2 = "xattr.v2"
MIME_TYPE_V2 = "application/vnd.xattr.v2+json"

#: ipywidgets' MIME type (a live view in a display bundle).
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

__all__ = ["DEFAULT_MODEL", "SCHEMA", "MIME_TYPE", "SCHEMA_V2", "MIME_TYPE_V2", "WIDGET_MIME"]
