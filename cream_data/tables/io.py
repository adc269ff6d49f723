"""Parquet table I/O: atomic writes, multi-part folders with a manifest written last, checked reads.

A table lives either in one ``.parquet`` file or in a folder of parts::

    DIR/part-00000.parquet …            unsharded parts
    DIR/part-00000.shard-00001-of-00004.parquet …   parts of shard 1 of 4
    DIR/_manifest.json                  written last: the folder is complete
    DIR/_manifest.shard-00001-of-00004.json          one per finished shard

Every file is written to a hidden temporary name and renamed into place, so a reader never sees half a
file. A folder is complete when its ``_manifest.json`` exists, or when every shard of one sharding has
written its shard manifest; reading the folder is the merge. Readers validate against the schema.

A manifest is checked, never trusted (:func:`check_manifest`): every part it lists is there and has a readable
Parquet footer, their rows add up to its ``rows``, and no part of its own naming lies beside them unlisted (a file
deleted, truncated or replaced after the manifest was written, or a manifest edited by hand). A stage whose output
fails the check redoes what is missing instead of calling it done. What goes into one file (a table prepared for
writing, a manifest's record) and one Parquet file read back are :mod:`cream_data.tables.table_files`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from cream_data import jsonfile
from cream_data.errors import CreamError
from cream_data.tables.shard import Shard, split_shard
from cream_data.tables.table_files import manifest_record, prepare, read_file
from cream_data.tables.validate import check

MANIFEST = "_manifest.json"
COMPRESSION = "zstd"
_SHARD_MANIFEST = re.compile(r"^_manifest\.shard-(\d{5})-of-(\d{5})\.json$")


# ---------------------------------------------------------------------------- atomic primitives
class WriteError(CreamError, OSError):
    """An atomic write that failed, named by its target — never by the temporary file or folder it was being built
    in, which the user never asked for. Still an OSError (with the errno), for code that handles those."""

    def __init__(self, target: Path, err: OSError):
        self.reason = _reason(err)
        super().__init__(f"{target}: cannot write it ({self.reason})")
        self.errno, self.strerror, self.filename, self.original = err.errno, err.strerror, str(target), err

    def __str__(self) -> str:  # the message, not OSError's "[Errno …] …: filename"
        return self.args[0]


def _reason(err: OSError) -> str:
    hint = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
            errno.ENOSPC: "the disk is full", errno.EDQUOT: "disk quota exceeded"}.get(err.errno)
    return hint or (err.strerror or str(err)).lower()


@contextmanager
def writing(target: str | Path) -> Iterator[None]:
    """Around an atomic write of ``target``: an OSError becomes a :class:`WriteError` naming ``target`` (the
    outermost one: a table, not the part file of its staging folder)."""
    try:
        yield
    except OSError as e:
        raise WriteError(Path(target), getattr(e, "original", e)) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def _write_parquet_file(table: pa.Table, path: Path) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pq.write_table(table, tmp, compression=COMPRESSION)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def staging_folder(target: Path) -> Path:
    """A fresh hidden sibling ``.NAME.tmp-…`` to build ``target`` in, with the permissions a plain ``mkdir``
    would give under the user's umask (``mkdtemp`` makes 0700, which the final rename would keep)."""
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
    return staging


def replace_folder(staging: Path, target: Path) -> None:
    """Move a finished staging folder into place; an older ``target`` is replaced only now the new one is whole."""
    with writing(target):
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)


# ---------------------------------------------------------------------------- whole-table writes
def write_table(table: pa.Table, path: str | Path, kind: str, *, metadata: dict | None = None,
                manifest_extra: dict | None = None) -> Path:
    """Validate and write a whole table atomically.

    ``path`` ending in ``.parquet`` → one file. Otherwise a folder with one part and a manifest; the folder
    is built beside the target and renamed into place, replacing an older one only once complete.
    """
    path = Path(path)
    table = prepare(table, kind, str(path), metadata)
    if path.suffix == ".parquet":
        _write_parquet_file(table, path)
        return path
    staging = staging_folder(path)
    try:
        with writing(path):  # a failure names the table, not its staging folder
            _write_parquet_file(table, staging / "part-00000.parquet")
            atomic_write_json(staging / MANIFEST, manifest_record(kind, ["part-00000.parquet"], table.num_rows,
                                                                  manifest_extra))
        replace_folder(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------- incremental (resumable) writes
class PartWriter:
    """Writes a table folder part by part, so an interrupted stage can resume.

    Each :meth:`write` adds one atomically written part; :meth:`finish` writes the manifest last.
    With ``shard=(i, k)`` the parts and manifest carry the shard, so k processes can share one folder.
    """

    def __init__(self, folder: str | Path, kind: str, *, shard: tuple[int, int] | None = None,
                 metadata: dict | None = None):
        self.folder = Path(folder)
        self.kind = kind
        self.shard = split_shard(shard)
        self.metadata = metadata
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def pattern(shard: tuple[int, int] | None) -> re.Pattern:
        """The file names of shard ``(i, k)``'s parts (None: an unsharded table's); group 1 is the part's number."""
        return re.compile(rf"^part-(\d{{5}}){re.escape(PartWriter.suffix(shard))}\.parquet$")

    @staticmethod
    def suffix(shard: tuple[int, int] | None) -> str:
        return Shard.of(shard).suffix if shard else ""

    @property
    def _suffix(self) -> str:
        return self.suffix(self.shard)

    @property
    def manifest_path(self) -> Path:
        return self.folder / (f"_manifest{self._suffix}.json" if self.shard else MANIFEST)

    def parts(self) -> list[Path]:
        """This writer's parts already on disk (from an earlier, interrupted run too)."""
        return sorted(p for p in self.folder.iterdir() if self.pattern(self.shard).match(p.name))

    def problem(self) -> str | None:
        """Why this writer's output is not finished and whole (no manifest, or one that fails
        :func:`check_manifest`); None when it is."""
        if not self.manifest_path.exists():
            return f"{self.manifest_path}: not written yet"
        try:
            check_manifest(self.folder, self.manifest_path, self.pattern(self.shard))
        except CreamError as e:
            return str(e)
        return None

    def done(self) -> bool:
        """Finished earlier and still whole: a manifest that its parts on disk bear out."""
        return self.problem() is None

    def drop_unreadable(self) -> list[str]:
        """Remove this writer's parts whose Parquet footer cannot be read (truncated, overwritten), so a resume redoes
        their rows instead of failing on them; one note per part removed."""
        notes = []
        for part in self.parts():
            try:
                part_rows(part)
            except CreamError as e:
                part.unlink(missing_ok=True)
                notes.append(f"{e}; removed, its rows are done again")
        return notes

    def existing(self, columns: list[str] | None = None) -> pa.Table | None:
        parts = self.parts()
        if not parts:
            return None
        return pa.concat_tables([read_file(p, self.kind, columns) for p in parts], promote_options="permissive")

    def write(self, table: pa.Table) -> Path | None:
        if table.num_rows == 0:
            return None
        table = prepare(table, self.kind, str(self.folder), self.metadata)
        # one past the highest number on disk, not the count: once a part was removed, the count names one still there
        seq = max((int(self.pattern(self.shard).match(p.name).group(1)) for p in self.parts()), default=-1) + 1
        path = self.folder / f"part-{seq:05d}{self._suffix}.parquet"
        _write_parquet_file(table, path)
        return path

    def finish(self, extra: dict | None = None) -> Path:
        parts = self.parts()
        rows = sum(part_rows(p) for p in parts)
        record = manifest_record(self.kind, [p.name for p in parts], rows, extra, self.shard)
        atomic_write_json(self.manifest_path, record)
        return self.manifest_path


# ---------------------------------------------------------------------------- checks of what is on disk
def part_rows(path: Path) -> int:
    """The rows a part's Parquet footer records; one line naming the file when it is missing or has no readable
    footer (truncated, overwritten, not Parquet)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except FileNotFoundError:
        raise CreamError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise CreamError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None


def check_manifest(folder: Path, path: Path, pattern: re.Pattern) -> tuple[list[Path], dict]:
    """The parts of the manifest ``path`` and the manifest, checked against the folder: ``parts`` a list of file
    names and ``rows`` a count; each part there with a readable footer; their rows adding up to ``rows``; no part of
    its naming (``pattern``) on disk that it does not list. One line naming the file otherwise."""
    m = read_json_object(path)
    names, rows = m.get("parts"), m.get("rows")
    if not (isinstance(names, list) and all(isinstance(n, str) and n and Path(n).name == n for n in names)
            and isinstance(rows, int) and not isinstance(rows, bool)):
        raise CreamError(f"{path}: corrupt manifest (expected 'parts' a list of file names and 'rows' a count); "
                         "remove the folder and rerun the stage that writes it")
    parts, found = [folder / n for n in names], 0
    for part in parts:
        if not part.is_file():
            raise CreamError(f"{folder}: manifest lists {part.name}, which is missing")
        found += part_rows(part)
    if found != rows:
        raise CreamError(f"{path}: says {rows} rows, its {len(parts)} part(s) hold {found}")
    unlisted = sorted(p.name for p in folder.iterdir() if pattern.match(p.name) and p.name not in set(names))
    if unlisted:
        raise CreamError(f"{path}: does not list {unlisted[0]}"
                         + (f" and {len(unlisted) - 1} more part(s)" if len(unlisted) > 1 else "")
                         + " beside it")
    return parts, m


# ---------------------------------------------------------------------------- reads
def read_json_object(path: Path, what: str = "manifest") -> dict:
    """A JSON object that cream wrote (a manifest, a stage's saved settings); one line when it is corrupt."""
    return jsonfile.read_json_object(path, what=what, fix="remove the folder and rerun the stage that writes it")


def table_kind(path: str | Path) -> str | None:
    """The table kind recorded in a file's metadata or a folder's manifest, if any."""
    path = Path(path)
    if path.is_dir():
        manifests = sorted(path.glob("_manifest*.json"))
        if manifests:
            return read_json_object(manifests[0]).get("schema")
        parts = sorted(path.glob("part-*.parquet"))
        path = parts[0] if parts else path
    if path.is_file():
        try:
            md = pq.ParquetFile(path).schema_arrow.metadata or {}
        except Exception:
            return None
        return md.get(schemas.META_SCHEMA, b"").decode() or None
    return None


def complete_parts(folder: Path) -> tuple[list[Path], list[dict]]:
    """The parts of a complete table folder and its manifests; a clear error when incomplete or corrupt."""
    main = folder / MANIFEST
    if not main.exists():
        shard_files = {}
        for p in folder.iterdir():
            m = _SHARD_MANIFEST.match(p.name)
            if m:
                shard_files.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
        done = [k for k, got in shard_files.items() if len(got) == k]
        if not done:
            if any(folder.glob("part-*.parquet")) or shard_files:
                missing = ""
                if shard_files:
                    k, got = max(shard_files.items(), key=lambda kv: len(kv[1]))
                    missing = f" (shards finished: {sorted(got)} of {k})"
                raise CreamError(
                    f"{folder}: table is incomplete{missing}: no manifest; rerun the stage that writes it to finish"
                )
            raise CreamError(f"{folder}: no table here (expected Parquet parts and a {MANIFEST})")
        k = max(done)
        checked = [check_manifest(folder, p, PartWriter.pattern((i, k))) for i, p in sorted(shard_files[k].items())]
        return [p for parts, _ in checked for p in parts], [m for _, m in checked]
    parts, manifest = check_manifest(folder, main, PartWriter.pattern(None))
    return parts, [manifest]


def read_manifest(path: str | Path) -> dict:
    """Merged manifest of a table folder (shard manifests merged; 'rows' summed)."""
    _, manifests = complete_parts(Path(path))
    merged = dict(manifests[0])
    merged["rows"] = sum(m.get("rows", 0) for m in manifests)
    merged["parts"] = [p for m in manifests for p in m.get("parts", [])]
    return merged


def read_table(path: str | Path, kind: str | None = None, *, columns: list[str] | None = None,
               validate: bool = True) -> pa.Table:
    """Read a table from a Parquet file or a (complete) folder of parts, checked against its schema."""
    path = Path(path)
    if not path.exists():
        raise CreamError(f"{path}: no such file or folder")
    if path.is_dir():
        parts, _ = complete_parts(path)
        if not parts:
            tables = []
        else:
            tables = [read_file(p, kind, columns) for p in parts]
    else:
        tables = [read_file(path, kind, columns)]
    kind = kind or table_kind(path)
    if not tables:
        if kind is None:
            raise CreamError(f"{path}: empty table folder of unknown kind")
        arrow = schemas.get(kind).arrow
        table = arrow.empty_table() if columns is None else arrow.empty_table().select(columns)
    else:
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except pa.ArrowInvalid as e:
            raise CreamError(f"{path}: parts disagree on their columns ({str(e)[:120]})") from None
    if validate and kind and columns is None:
        check(table, kind, str(path))
    return table


def iter_table_paths(root: str | Path) -> Iterable[tuple[str, Path]]:
    """(kind, path) for every complete table under ``root`` (a run dir, a table dir, or a file). Hidden entries and
    everything inside a hidden folder are skipped: the ``.NAME.tmp-…`` and ``.NAME.replaced`` folders of atomic
    writes and replaces hold copies that are not (or no longer) the table."""
    root = Path(root)
    if root.is_file() or (root / MANIFEST).exists() or any(root.glob("_manifest.shard-*.json")):
        k = table_kind(root)
        if k:
            yield k, root
        return
    for p in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.is_dir() and ((p / MANIFEST).exists() or any(p.glob("_manifest.shard-*.json"))):
            k = table_kind(p)
            if k:
                yield k, p
        elif p.is_file() and p.suffix == ".parquet" and not p.name.startswith("part-"):
            k = table_kind(p)
            if k:
                yield k, p
