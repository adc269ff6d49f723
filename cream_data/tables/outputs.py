"""Output paths: what a command may write over, and one writer per output at a time.

Two rules hold for every command that takes an ``--out`` (or a run directory):

1. **Never replace what is not ours.** An output path that exists is accepted only when it is empty or holds
   this command's own output, recognised by what that command writes (a table manifest of the right kind, a
   sampling config, a training lineage, a run manifest …). Anything else — a folder of the user's files, a
   regular file, a table of another kind, the current folder — is refused with one line, and ``--overwrite``
   does not change that: it replaces only a recognised output.
2. **One writer per output.** :func:`locked` takes an exclusive lock on the output (per shard where k processes
   share a folder) for the whole stage. A second process refuses at once with one line naming the holder. The
   lock is ``filelock``'s ``flock`` on a hidden ``.NAME.lock`` file beside the output, with the holder's pid, host
   and command in ``.NAME.lock.holder``: the kernel drops the lock when the holder dies, even by ``kill -9``, so a
   stale lock is taken over by the next process (which says so); both files are removed when the holder finishes.

Both checks run before any model is loaded, so a mistake costs nothing.

A third holds for a stage that redoes its work (its inputs changed): **replace, then remove.** :func:`replacing`
moves its old outputs aside and brings them back when the new ones do not complete (an error, Ctrl-C), so an
interrupted redo never leaves less than there was.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from cream_data.errors import CreamError
from cream_data.tables.shard import split_shard

Recognise = Callable[[Path], bool]


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" … ({len(names)} entries)" if len(names) > 4 else "")


def check_writable(path: Path, flag: str = "--out") -> None:
    """The nearest existing ancestor of ``path`` must be a folder this process can create entries in."""
    parent = path.parent if not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CreamError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CreamError(f"{flag} {path}: cannot write in {parent} (permission denied or read-only); "
                         "choose a writable location")
    if path.exists():  # the output is rewritten by renames in its parent
        where = path.parent
        if not os.access(where, os.W_OK | os.X_OK):
            raise CreamError(f"{flag} {path}: cannot write in {where} (permission denied or read-only)")


def guard(path: str | Path, command: str, recognise: Recognise, *, overwrite: bool = False,
          flag: str = "--out", what: str = "output") -> Path:
    """Check an output path before any work; return it. See the module docstring for the rules.

    ``recognise(path)`` says whether an existing path holds ``cream {command}``'s own output.
    """
    path = Path(path)
    if path.resolve() in (Path.cwd().resolve(), Path(path.resolve().anchor)):
        raise CreamError(f"{flag} {path}: is the current folder (or the file-system root); name a new folder "
                         f"for the {what}, e.g. {flag} {command}-out")
    if path.exists():
        if path.is_dir() and not _visible(path):
            pass  # an empty folder (hidden temporary files of an interrupted write aside) loses nothing
        elif recognise(path):
            pass
        elif path.is_dir():
            raise CreamError(
                f"{flag} {path}: folder exists and holds files that are not a `cream {command}` {what} "
                f"({_shown(_visible(path))}); choose a new path — cream never replaces other files"
                + (", not even with --overwrite" if overwrite else ""))
        else:
            raise CreamError(
                f"{flag} {path}: is an existing file that is not a `cream {command}` {what}; choose a new path — "
                "cream never replaces other files" + (", not even with --overwrite" if overwrite else ""))
    check_writable(path, flag)
    return path


# ---------------------------------------------------------------------------- recognisers of each command's output
def has_table(path: Path, kinds: tuple[str, ...]) -> bool:
    """A Parquet file or table folder (complete or being written) of one of ``kinds``."""
    from cream_data.tables.io import table_kind

    try:
        return table_kind(path) in kinds
    except CreamError:
        return False


def only_entries(path: Path, allowed: Callable[[Path], bool]) -> bool:
    """A folder whose every visible entry passes ``allowed`` (and that has at least one)."""
    if not path.is_dir():
        return False
    entries = [path / n for n in _visible(path)]
    return bool(entries) and all(allowed(e) for e in entries)


def check_resume(out: Path, settings_file: str, identity: dict, overwrite: bool, *, what: str, command: str,
                 label: str = "saved settings", differences: Callable[[dict], list[str]] | None = None) -> None:
    """A resumable stage's existing output must hold this very run: the settings it saved (``settings_file``, its
    ``identity``) equal ``identity``; a table without that file was not written by ``command``. ``differences(saved)``
    says how the saved settings differ, each as a short phrase (default: the ``identity`` fields that changed)."""
    from cream_data.tables.io import read_json_object

    if overwrite or not out.exists():
        return
    cfg_path = out / settings_file
    if cfg_path.exists():
        saved = read_json_object(cfg_path, label)
        if differences is None:
            old = saved.get("identity", {})
            diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in identity.items() if old.get(k) != v]
        else:
            diff = differences(saved)
        if diff:
            raise CreamError(f"--out {out}: holds {what} with other settings ({'; '.join(diff)}); "
                             "choose another --out or pass --overwrite")
    elif any(out.glob("part-*.parquet")) or any(out.glob("_manifest*.json")):
        raise CreamError(f"--out {out}: holds a table not written by `{command}`; choose another --out or "
                         "pass --overwrite")


# ---------------------------------------------------------------------------- replace, then remove
def aside_path(path: Path) -> Path:
    """Where :func:`replacing` keeps the old version of ``path`` meanwhile: the hidden sibling ``.NAME.replaced``."""
    return path.parent / f".{path.name}.replaced"


def remove(path: Path) -> None:
    """Remove a file, link or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def replacing(paths) -> Iterator[list[Path]]:
    """Replace, then remove: each of ``paths`` that exists is moved aside (:func:`aside_path`, a rename, so nothing
    is copied) while the block writes its new version, and yielded. When the block raises (Ctrl-C included), what it
    wrote at such a path is removed and the old version moved back before the exception goes on; when it returns,
    the old versions are removed. A path that did not exist keeps what the block wrote either way (a resumable
    part). An aside copy left by a process killed meanwhile is removed first: the path holds what was recorded."""
    moved = []
    for path in map(Path, paths):
        remove(aside_path(path))
        if path.exists() or path.is_symlink():
            os.replace(path, aside_path(path))
            moved.append(path)
    try:
        yield moved
    except BaseException:
        for path in moved:
            remove(path)
            os.replace(aside_path(path), path)
        raise
    for path in moved:
        remove(aside_path(path))


# ---------------------------------------------------------------------------- one writer per output
def _lock_path(path: Path, shard: tuple[int, int] | None) -> Path:
    shard = split_shard(shard)
    suffix = shard.suffix if shard else ""
    return path.parent / f".{path.name}{suffix}.lock"


def _read_holder(holder: Path) -> dict:
    try:
        info = json.loads(holder.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder(holder: Path) -> str:
    info = _read_holder(holder)
    if not info:
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} (`{info.get('command', '?')}`, "
            f"since {info.get('since', '?')})")


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


@contextmanager
def locked(path: str | Path, *, shard: tuple[int, int] | None = None, flag: str = "--out",
           log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``path`` (shard ``i/k`` locks only its own shard) while writing it.

    Raises a one-line :class:`CreamError` naming the holder when another live process writes the same output.
    The lock is ``filelock``'s (an ``flock`` on ``.NAME.lock``); who holds it is written beside it in
    ``.NAME.lock.holder``, which only a holder that died leaves behind. Folders created to hold the lock file are
    removed again if they are still empty at the end.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    lock = _lock_path(path, shard)
    holder = lock.with_name(lock.name + ".holder")
    created = []
    parent = lock.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    lock.parent.mkdir(parents=True, exist_ok=True)
    guard_ = FileLock(lock, timeout=0, is_singleton=False)
    try:
        guard_.acquire()
    except Timeout:
        raise CreamError(f"{flag} {path}: is being written by {_holder(holder)}; wait for it to finish or stop "
                         f"it (two writers would duplicate rows)") from None
    try:
        stale = _read_holder(holder)
        if stale and log:
            state = "no longer running" if not _pid_alive(stale.get("pid")) else "lock released"
            log(f"took over a stale lock on {path} left by pid {stale.get('pid')} ({state})")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(["cream", *sys.argv[1:]])[:200] if sys.argv and sys.argv[0].endswith("cream")
                else " ".join(sys.argv)[:200]}
        holder.write_text(json.dumps(info))
        yield path
    finally:
        for f in (holder, lock):  # removed while still held: a process that opened the old file fails, not waits
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        guard_.release()
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
