"""A variant of the CPU study's run config: study.yaml with its data folder moved and some settings replaced.

(examples/study-gpu/run.sh writes its configs' variants with it too: their data folder moved, ``STUDY_DATA``.)

`cream run` overrides three keys of a config (--method, --seed, --out). The study's other variations — its data
in another folder (``STUDY_DATA``) and the reduced variant (``STUDY_QUICK=1``) — go through a copy of study.yaml
that run.sh has this script write, so study.yaml stays the one description of the study and a variant differs
from it only in what the command line names:

    python examples/study/variant.py CONFIG OUT [--data FROM TO] [KEY=VALUE ...]

- Every relative path of CONFIG is written absolute, against CONFIG's folder (as `cream run` reads it), so OUT means
  the same from any folder.
- ``--data FROM TO``: every path inside the folder FROM (the study's data folder) is moved to the same place inside
  TO.
- ``KEY=VALUE``: KEY a dotted path into the config (``eval.harness.limit``; ``prompts.sources.*.limit`` sets the
  key in every entry of the list), VALUE read as YAML (``50``, ``null``, ``[gsm8k]``). KEY must be a setting that
  CONFIG already writes: study.yaml writes every setting, so a variant changes settings, it adds none, and a typo
  is an error rather than a setting nobody reads.

A problem is one line on stderr (exit 2). Nothing is checked beyond that: `cream run` checks OUT as any config.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from cream_data.errors import CreamError
from cream_train.run.config import RunConfig
from cream_train.run.config_paths import path_keys, resolve

ANY = "*"  # a KEY part that stands for every entry of a list


def absolute_paths(raw: dict, base: Path) -> dict:
    """``raw`` (a run config mapping) with each path-valued setting resolved against ``base`` by `cream run`'s rules."""
    problems: list[str] = []
    for key, kind in path_keys(RunConfig).items():
        *sections, name = key.split(".")
        holder = raw
        for section in sections:
            holder = holder.get(section) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and holder.get(name):
            holder[name] = resolve(kind, holder[name], base, key, problems)
    if problems:
        raise CreamError(problems[0])
    return raw


def moved(value, old: Path, new: Path):
    """A path string inside ``old`` as the same place inside ``new``; anything else unchanged."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    return str(new / path.relative_to(old)) if path == old or old in path.parents else value


def move_data(raw: dict, old: Path, new: Path) -> dict:
    """Every path-valued setting of ``raw`` (already absolute) inside ``old`` moved into ``new``."""
    for key, kind in path_keys(RunConfig).items():
        *sections, name = key.split(".")
        holder = raw
        for section in sections:
            holder = holder.get(section) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or name not in holder:
            continue
        if kind == "sources" and isinstance(holder[name], list):
            for entry in holder[name]:
                if isinstance(entry, dict) and "source" in entry:
                    entry["source"] = moved(entry["source"], old, new)
        else:
            holder[name] = moved(holder[name], old, new)
    return raw


def assign(raw: dict, key: str, value) -> None:
    """``raw``'s setting at the dotted ``key`` replaced by ``value``; a key that ``raw`` does not hold is an error."""
    holders, parts = [raw], key.split(".")
    for depth, part in enumerate(parts[:-1]):
        step = []
        for holder in holders:
            if part == ANY and isinstance(holder, list) and holder:
                step += holder
            elif isinstance(holder, dict) and isinstance(holder.get(part), (dict, list)):
                step.append(holder[part])
            else:
                raise CreamError(f"{key}: the config has no {'.'.join(parts[:depth + 1])} to set it in "
                                 "(expected a setting that study.yaml writes)")
        holders = step
    last = parts[-1]
    for holder in holders:
        if not isinstance(holder, dict) or last not in holder:
            raise CreamError(f"{key}: not a setting the config writes (expected one of study.yaml's keys)")
        holder[last] = value


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` as (KEY, VALUE read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CreamError(f"{text}: expected KEY=VALUE (e.g. eval.limit=50)")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise CreamError(f"{text}: the value is not YAML") from None


def variant(config: Path, *, data: tuple[Path, Path] | None = None, settings: list[str] = ()) -> dict:
    """The run config ``config`` with its paths absolute, its data folder moved and ``settings`` (KEY=VALUE) set."""
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise CreamError(f"{config}: cannot read it as YAML ({e.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise CreamError(f"{config}: expected a mapping of settings")
    raw = absolute_paths(raw, config.resolve().parent)
    if data is not None:
        raw = move_data(raw, data[0].resolve(), data[1].resolve())
    for key, value in map(parse_setting, settings):
        assign(raw, key, value)
    return raw


def main(argv: list[str]) -> int:
    args, data = list(argv), None
    if "--data" in args:
        i = args.index("--data")
        if len(args) < i + 3:
            return fail("--data: expected two folders, FROM and TO")
        data = (Path(args[i + 1]), Path(args[i + 2]))
        del args[i:i + 3]
    if len(args) < 2:
        return fail("usage: variant.py CONFIG OUT [--data FROM TO] [KEY=VALUE ...]")
    config, out, settings = Path(args[0]), Path(args[1]), args[2:]
    try:
        raw = variant(config, data=data, settings=settings)
    except CreamError as e:
        return fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    said = " ".join(settings) or "none"
    moved_note = f"; data {data[0]} -> {data[1]}" if data else ""
    header = (f"# Written by examples/study/variant.py from {config} (paths made absolute{moved_note}; "
              f"settings replaced: {said}). Edit {config.name}, not this file.\n")
    out.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return 0


def fail(message: str) -> int:
    print(f"variant.py: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
