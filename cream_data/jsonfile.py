"""Reading a file a user or a run names: what it is, checked before it is opened, and a JSON file that must hold an
object (a manifest, a saved config, a checkpoint's config.json), with one line that names the file and what to do
when it does not. Pure: the standard library and cream_data.errors.

Opening a named pipe (FIFO) blocks until something writes to it, and a device such as ``/dev/zero`` never ends, so
every reader of a file the user names asks :func:`not_a_file` first: one line, at once, instead of a hang.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from cream_data.errors import CreamError

# What a path is, when it is neither a regular file nor a folder (st_mode test -> its name in a message).
_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def not_a_file(path: str | Path, expected: str) -> str | None:
    """Why ``path`` cannot be read as a file, without opening it (links followed): None for a regular file, else
    ``"not found"``, ``"is a folder, expected {expected}"`` or ``"not a regular file (a named pipe), expected
    {expected}"``."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as e:  # a name too long, a loop of links, a part of the path that is a file
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"is a folder, expected {expected}"
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"not a regular file ({kind}), expected {expected}"


def check_input(path, expected: str) -> None:
    """An input a command names (a table, a data file) is a regular file, a folder or not on disk (a Hub id, or a
    path the stage reports missing in its own words); a named pipe or a device is refused in one line before
    anything is loaded: opening a pipe blocks, a device never ends."""
    why = not_a_file(path, expected)
    if why is not None and why.startswith("not a regular file"):
        raise CreamError(f"{path}: {why}")


def require_file(path: str | Path, expected: str, *, where: str = "", missing: str = "not found") -> Path:
    """``path`` when it is a regular file; else a CreamError ``"{where}{path}: {why}"`` (:func:`not_a_file`;
    ``missing`` says a path that does not exist)."""
    why = not_a_file(path, expected)
    if why is not None:
        raise CreamError(f"{where}{path}: {missing if why == 'not found' else why}")
    return Path(path)


def read_json_object(path: str | Path, *, what: str, fix: str) -> dict:
    """The object in ``path``; a CreamError ``"{path}: corrupt {what} (…); {fix}"`` when it is not a regular file,
    not valid JSON or not an object."""
    why = not_a_file(path, "a JSON file")
    if why is not None and why != "not found":  # a missing file stays the caller's FileNotFoundError
        raise CreamError(f"{path}: corrupt {what} ({why}); {fix}")
    try:
        value = json.loads(Path(path).read_text())
    except RecursionError:
        raise CreamError(f"{path}: corrupt {what} (nested too deeply to read); {fix}") from None
    except ValueError as e:
        raise CreamError(f"{path}: corrupt {what} (not valid JSON: {str(e)[:200]}); {fix}") from None
    if not isinstance(value, dict):
        raise CreamError(f"{path}: corrupt {what} (expected a JSON object, got {json.dumps(value)[:40]}); {fix}")
    return value
