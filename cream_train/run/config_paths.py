"""Relative paths in a run config resolve against the config file's folder, whichever folder `cream run` starts in.

Which keys hold paths is read from the settings' definitions (``setting(path=…)``, a ``PATH`` metavar:
:func:`cream_data.settings.path_kind`), so a new path-valued setting is resolved without being listed here. Each
kind (:data:`cream_data.settings.PATH_KINDS`) has its rule; an absolute path or ``~/…`` stays where it points:

* ``path`` (``judge_template``, ``accelerate_config``, ``eval.data_dir``, ``run_dir``): always a local path, joined
  to the config's folder.
* ``data`` (``sft.data``, ``prompts.source``): a local path when it looks like one (``./x``, ``x.jsonl``, ``a/b/c``,
  a bare name) or exists beside the config; else a Hub dataset id (``owner/name``).
* ``model`` (``model``, ``label.reward_model``): the embedded alias stays the alias; a value that starts with
  ``./`` or ``../`` or exists beside the config is a local folder there; anything else is a Hub id.
* ``sources`` (``prompts.sources``): each entry's ``source`` as a ``data`` path.

A value that would be read as a Hub id (or a bare name) but names something in the folder `cream run` starts in,
and nothing beside the config, is refused: the stage would load the local one, and the same config would train
another model from another folder. So is a value longer than :data:`MAX_PATH_CHARS`, which no file system takes
as a path (and no Hub id is): named by its first characters and its length, never echoed whole.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_type_hints

from cream_data.settings import PATH_KINDS, path_kind, shown

MAX_PATH_CHARS = 4096  # Linux's PATH_MAX: a longer value names no file, and a Hub id is under 100 characters


def too_long(value: Any) -> bool:
    """A path-valued setting longer than :data:`MAX_PATH_CHARS` (refused by :func:`resolve`)."""
    return isinstance(value, str) and len(value) > MAX_PATH_CHARS


def exists(path: Path) -> bool:
    """Whether ``path`` exists; False where the system cannot even look (a name too long, a file as a folder)."""
    try:
        return path.exists()
    except OSError:
        return False


def looks_local(path: str) -> bool:
    """A local path rather than a Hub id (owner/name): ./x, /x, ~/x, a file name with a suffix, a bare name."""
    return path.startswith((".", "/", "~")) or Path(path).suffix != "" or path.count("/") != 1


def path_keys(cls, where: str = "") -> dict[str, str]:
    """Every path-valued key of a config dataclass and its sections (``"label.reward_model"`` → ``"model"``)."""
    hints, keys = get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys.update(path_keys(hints[f.name], f"{where}{f.name}."))
        elif path_kind(f):
            keys[f"{where}{f.name}"] = path_kind(f)
    return keys


def resolve_paths(cfg, base: Path, problems: list[str], where: str = ""):
    """``cfg`` (a config dataclass) with every path-valued setting, in it and in its sections, resolved against the
    config's folder ``base`` by its kind's rule (see the module's docstring); an ambiguous value is a problem."""
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = resolve_paths(value, base, problems, f"{where}{f.name}.")
        elif path_kind(f) and value:
            changes[f.name] = resolve(path_kind(f), value, base, f"{where}{f.name}", problems)
    return dataclasses.replace(cfg, **changes)


def resolve(kind: str, value: Any, base: Path, where: str, problems: list[str]) -> Any:
    """One value of path kind ``kind`` resolved against ``base`` (a value of the wrong type is left to the checks
    that name it)."""
    if kind == "sources":
        if not isinstance(value, list):
            return value
        return [{**e, "source": resolve("data", e["source"], base, f"{where}[{i}].source", problems)}
                if isinstance(e, dict) and isinstance(e.get("source"), str) else e for i, e in enumerate(value)]
    if not isinstance(value, str) or not value.strip():
        return value
    if too_long(value):
        problems.append(f"{where}: got {shown(value)}, expected {PATH_KINDS[kind]} (at most {MAX_PATH_CHARS:,} "
                        "characters)")
        return value
    path = Path(value).expanduser()
    if path.is_absolute():  # a model as written (its name is part of M0's fingerprint), a data path normalised
        return str(path) if kind == "model" else str(path.resolve())
    if kind == "model" and _is_alias(value):  # the alias before any folder of that name, as a stage reads it
        return value
    beside = base / path
    local = kind == "path" or (kind == "data" and looks_local(value)) or value.startswith(("./", "../")) \
        or value in (".", "..")
    if local or exists(beside):
        return str(beside.resolve())
    here = Path.cwd().resolve()
    if here != base.resolve() and exists(path):
        problems.append(f"{where}: {shown(value)} is not beside the config ({beside} does not exist) but names "
                        f"{here / path} in the current folder; a relative path in a run config is relative to the "
                        "config's folder: write it from there (e.g. ../…) or as an absolute path")
    return value


def _is_alias(value: str) -> bool:
    from cream_data.engines.model_refs import EMBEDDED_ALIAS

    return value.strip().lower() == EMBEDDED_ALIAS
