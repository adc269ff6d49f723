"""What `cream publish` checks before it writes anything: where ``--out`` may go, which tables ``--exclude`` leaves
out, that no two tables fill one split, and that the tables of each split are of one labeling.

The last is issue #26's "a key means one thing where tables meet" (:func:`cream_data.stages.label.check_labeled`,
:mod:`cream_data.tables.keys`): a split's preferences, scores and responses agree key for key — each pair's prompt,
its two sides' texts and rewards are the responses and scores at its indices. A split without a published responses
table is checked against the ``responses`` folder beside its preferences (a run's ``iter-<t>/responses``) where there
is one: the table the pairs were labeled from must still be readable and say what the pairs say.
"""

from __future__ import annotations

from pathlib import Path

from cream_data.errors import CreamError
from cream_data.publish import card
from cream_data.stages.label import check_labeled
from cream_data.tables.io import read_table
from cream_data.tables.keys import Found


def check_out(root: Path, out: str | Path | None) -> None:
    """``--out`` is neither the folder being published, nor inside it, nor around it: the built folder would be
    read back as more tables, or replaced (and the source with it)."""
    if out is None:
        return
    src, dst = Path(root).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        where = "is" if dst == src else "is inside"
        raise CreamError(f"--out {out}: {where} {root}, the folder being published; choose a path outside it")
    if dst in src.parents:
        raise CreamError(f"--out {out}: holds {root}, the folder being published; choose a path outside it")


def excluded_paths(root: Path, exclude) -> list[Path]:
    """``--exclude`` values as paths (relative ones are taken below ``root``); each must exist."""
    paths = []
    for e in exclude or ():
        p = Path(e) if Path(e).is_absolute() else root / e
        if not p.exists():
            raise CreamError(f"--exclude {e}: no such folder or table under {root} "
                             "(give a path relative to it, e.g. a label folder)")
        paths.append(p.resolve())
    return paths


def refuse_incomplete(root: Path, skip: list[Path], complete: set[Path]) -> None:
    """A folder of table parts under ``root`` that is not a complete table (its stage is unfinished, or its manifest
    was lost) is refused in one line rather than left out of the dataset without a word."""
    for part in sorted(root.rglob("part-*.parquet")):
        folder = part.parent
        rel = folder.relative_to(root).parts if folder != root else ()
        if folder in complete or any(x.startswith(".") for x in rel) or any(
                x == folder.resolve() or x in folder.resolve().parents for x in skip):
            continue
        raise CreamError(f"{folder}: table parts without a complete manifest (an unfinished stage, or a manifest that "
                         "was lost); rerun the stage that writes it, or leave it out with --exclude")


def _label_folder(rel: str) -> str:
    """The folder to exclude to drop the table at ``rel``: its label folder, or the table when it has none."""
    parent = Path(rel).parent.as_posix()
    return rel if parent == "." else parent


def split_clash(root: Path, kind: str, name: str, its: set, rels: list[str], pick_with_exclude: bool) -> CreamError:
    """Two or more tables would fill one split (duplicate prompt ids): say which, and how to choose."""
    where = f"iteration {next(iter(its))}" if len(its) == 1 and None not in its else f"split '{name}'"
    listed = ", ".join(rels)
    if pick_with_exclude:
        folders = [_label_folder(r) for r in rels]
        folders = folders if len(set(folders)) == len(folders) else rels
        if len(folders) == 2:
            how = f"publish one: --exclude {folders[1]} (or --exclude {folders[0]})"
        else:
            how = "publish one: --exclude all others, e.g. " + " ".join(f"--exclude {f}" for f in folders[1:])
    else:
        how = "pass one of them: " + " or ".join(str(root / r) for r in rels)
    return CreamError(f"{root}: {len(rels)} {kind} tables for {where} ({listed}) would share one split and repeat "
                      f"prompt ids; {how}")


def check_splits(root: Path, splits: dict[str, list[card.Split]]) -> None:
    """The tables of each split (by split name: one iteration) are of one labeling; one line naming the tables and
    the first key where they disagree (see the module doc)."""
    by_name: dict[str, dict[str, card.Split]] = {}
    for kind, parts in splits.items():
        for s in parts:
            by_name.setdefault(s.name, {})[kind] = s
    for kinds in by_name.values():
        found = {kind: Found(s.table, str(_path(root, s)), s.manifests[0] if s.manifests else None)
                 for kind, s in kinds.items()}
        if "responses" not in found and "preferences" in kinds:
            found["responses"] = _beside(root, kinds["preferences"])
        check_labeled(found.get("preferences"), found.get("scores"), found.get("responses"))


def _path(root: Path, split: card.Split) -> Path:
    """Where a split's table is: ``root`` itself when the table was given as DIR."""
    path = root / split.sources[0]
    return path if split.sources[0] != root.name or path.exists() else root


def _beside(root: Path, prefs: card.Split) -> Found | None:
    """The ``responses`` folder beside a preferences table of ``root`` (read whole, so a folder that is no complete
    table is refused by its own line), or None where there is none."""
    path = _path(root, prefs)
    folder = path.parent / "responses"
    if path == root or not folder.is_dir():
        return None
    return Found(read_table(folder, "responses"), str(folder))
