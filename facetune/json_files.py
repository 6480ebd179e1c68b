"""The one way facetune writes JSON: numpy values as numbers/lists, paths as strings, anything
else refused (never stringified into a file that reads back as something else), and files
replaced atomically so that a killed process never leaves half a file behind."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def json_text(payload: Any, sort_keys: bool = False) -> str:
    """`payload` as indented JSON text with a final newline; TypeError for values JSON cannot hold."""
    return json.dumps(payload, indent=2, sort_keys=sort_keys, default=_json_value) + "\n"


def write_json(path: str | os.PathLike[str], payload: Any, sort_keys: bool = False) -> None:
    """Write `payload` to `path` atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    text = json_text(payload, sort_keys)  # before touching the disk: a bad value leaves the old file
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer, so concurrent writers of one file never share a temporary file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _json_value(value: Any) -> Any:
    # numpy scalars and arrays sneak into configs and metrics.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
