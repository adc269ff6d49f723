"""Reading a JSON file that must hold an object (a manifest, a saved config, a checkpoint's config.json), with one
line that names the file and what to do when it does not. Pure: the standard library and cream_data.errors."""

from __future__ import annotations

import json
from pathlib import Path

from cream_data.errors import CreamError


def read_json_object(path: str | Path, *, what: str, fix: str) -> dict:
    """The object in ``path``; a CreamError ``"{path}: corrupt {what} (…); {fix}"`` when it is not valid JSON or not
    an object."""
    try:
        value = json.loads(Path(path).read_text())
    except ValueError as e:
        raise CreamError(f"{path}: corrupt {what} (not valid JSON: {e}); {fix}") from None
    if not isinstance(value, dict):
        raise CreamError(f"{path}: corrupt {what} (expected a JSON object, got {json.dumps(value)[:40]}); {fix}")
    return value
