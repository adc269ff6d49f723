"""One table file's content, apart from where and how it is written (:mod:`cream_data.tables.io`): a table prepared
for writing (checked and conformed to its schema), the manifest record a folder is finished with, and one Parquet file
read back, its kind and schema version checked (a table of an older version gains the later columns as nulls).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from cream_data.errors import CreamError
from cream_data.tables.validate import check, conform


def prepare(table: pa.Table, kind: str, where: str, metadata: dict | None) -> pa.Table:
    """``table`` as it is written: older-version columns added as nulls, checked against the ``kind`` schema
    (``where`` names it in an error), conformed to the schema's types and order, ``metadata`` in its schema."""
    table = upgrade(table, kind, 1)  # a column a later schema version added may be left out by a writer: null
    check(table, kind, where)
    table = conform(table, kind)
    if metadata:
        md = dict(table.schema.metadata or {})
        md.update({(k.encode() if isinstance(k, str) else k): (json.dumps(v) if not isinstance(v, (str, bytes)) else v)
                   for k, v in metadata.items()})
        table = table.replace_schema_metadata(md)
    return table


def manifest_record(kind: str, parts: list[str], rows: int, extra: dict | None,
                    shard: tuple[int, int] | None = None) -> dict:
    """What a table folder's manifest says: kind and schema version, its part files and rows, when it was written,
    the shard (``(i, k)``) it finishes if any, and the writer's ``extra`` fields."""
    m = {
        "schema": kind,
        "schema_version": schemas.get(kind).version,
        "parts": parts,
        "rows": rows,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if shard:
        m["shard"] = {"index": shard[0], "count": shard[1]}
    if extra:
        m.update(extra)
    return m


def read_file(path: Path, kind: str | None, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file as a table of ``kind`` (None: the kind its metadata names): the kind and schema version it
    records are checked, columns a later version added are filled with nulls; one line naming the file otherwise."""
    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise CreamError(f"{path}: file not found") from None
    except (pa.ArrowInvalid, OSError) as e:
        if path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv") and kind in (None, "prompts", "sft"):
            sft = " --sft" if kind == "sft" else ""
            raise CreamError(f"{path}: a {path.suffix} file, not a table; build a {kind or 'prompts'} table from it "
                             f"with `cream prompts {path}{sft} --out DIR` and pass DIR") from None
        raise CreamError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    md = pf.schema_arrow.metadata or {}
    found_kind = md.get(schemas.META_SCHEMA, b"").decode() or None
    found_version = md.get(schemas.META_VERSION, b"").decode() or None
    if kind and found_kind and found_kind != kind:
        raise CreamError(f"{path}: holds a '{found_kind}' table, expected a '{kind}' table")
    version = check_version(path, found_kind or kind, found_version)
    try:
        table = pf.read(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise CreamError(f"{path}: corrupt Parquet data ({str(e).splitlines()[0][:120]})") from None
    return upgrade(table, found_kind or kind, version, columns)


def check_version(path, kind: str | None, found: str | None) -> int | None:
    """The file's schema version as an int; one line when this cream cannot read it (newer, or not a number)."""
    if found is None or kind is None or kind not in schemas.TABLE_KINDS:
        return None
    newest = schemas.latest(kind)
    if not (found.isdigit() and schemas.readable(kind, int(found))):
        raise CreamError(f"{path}: '{kind}' table has schema version {found}, this cream reads versions 1 to "
                         f"{newest}" + ("; upgrade cream" if found.isdigit() and int(found) > newest else ""))
    return int(found)


def upgrade(table: pa.Table, kind: str | None, version: int | None, columns: list[str] | None = None) -> pa.Table:
    """A table read from an older schema version, with the columns added since then as nulls."""
    if kind is None or version is None or version >= schemas.latest(kind):
        return table
    for col in schemas.get(kind).columns:
        if col.since > version and col.name not in table.column_names and (columns is None or col.name in columns):
            column = pa.field(col.name, col.arrow, nullable=True)
            table = table.append_column(column, pa.nulls(table.num_rows, col.arrow))
    return table
