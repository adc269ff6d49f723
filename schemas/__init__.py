"""The versioned table schemas: the single source of truth for column names and types.

Each table kind is a JSON file under ``schemas/v<version>/<name>.json``; a kind's newest version is what cream
writes, and every older version of it still reads: a version may only add nullable columns (``since``: the
version that added each, read as null from older files) and enum values. This module turns those
files into :class:`TableSchema` objects (with their pyarrow schema) and nothing more: it imports
pyarrow only, never torch.

Every float column (``float32``, ``float64``, ``list<float64>``) holds finite numbers only: NaN and ±inf are
never valid values (:attr:`Column.finite`); a missing number is a null, allowed where the column is nullable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

CURRENT_VERSION = 1
TABLE_KINDS = ("prompts", "responses", "scores", "preferences", "eval", "sft", "logps", "eval_summary", "rm_rewards",
               "human_scores")

# Keys in a Parquet file's key-value metadata that carry the schema identity.
META_SCHEMA = b"cream.schema"
META_VERSION = b"cream.schema_version"

_HERE = Path(__file__).resolve().parent

CONVERSATION = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

_SCALARS = {
    "string": pa.string(),
    "bool": pa.bool_(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
}


def arrow_type(name: str) -> pa.DataType:
    """Map a schema type name (``string``, ``list<float64>``, ``conversation``…) to a pyarrow type."""
    if name == "conversation":
        return CONVERSATION
    if name.startswith("list<") and name.endswith(">"):
        return pa.list_(arrow_type(name[5:-1]))
    try:
        return _SCALARS[name]
    except KeyError:
        raise ValueError(f"unknown schema type {name!r}") from None


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    doc: str = ""
    since: int = 1  # the schema version that added the column; files of older versions read it as null

    @property
    def arrow(self) -> pa.DataType:
        return arrow_type(self.type)

    @property
    def finite(self) -> bool:
        """Its numbers must be finite (every float column, list items included)."""
        return "float" in self.type


@dataclass(frozen=True)
class TableSchema:
    """One table kind at one version, as read from its JSON file."""

    name: str
    version: int
    description: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ()
    enums: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    list_lengths: dict = field(default_factory=dict)
    index_columns: dict = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def arrow(self) -> pa.Schema:
        """The pyarrow schema, with the schema identity in its metadata."""
        fields = [pa.field(c.name, c.arrow, nullable=c.nullable) for c in self.columns]
        return pa.schema(fields, metadata=self.metadata)

    @property
    def metadata(self) -> dict[bytes, bytes]:
        return {META_SCHEMA: self.name.encode(), META_VERSION: str(self.version).encode()}


def versions() -> list[int]:
    return sorted(int(p.name[1:]) for p in _HERE.glob("v[0-9]*") if p.is_dir())


@lru_cache(maxsize=None)
def latest(name: str) -> int:
    """The newest schema version of a table kind: what cream writes. A kind changes version on its own (the
    ``scores`` table is at v2 while the others are at v1); every older version of it still reads."""
    found = [v for v in versions() if (_HERE / f"v{v}" / f"{name}.json").is_file()]
    if not found:
        raise KeyError(f"unknown table kind {name!r}; expected one of {', '.join(TABLE_KINDS)}")
    return max(found)


def readable(name: str, version: int) -> bool:
    """Whether this cream reads ``name`` tables written at schema ``version`` (1 … its latest)."""
    return 1 <= version <= latest(name)


@lru_cache(maxsize=None)
def get(name: str, version: int | None = None) -> TableSchema:
    """Load a table schema by kind and version (``get("preferences")``: the latest)."""
    if version is None:
        version = latest(name)
    path = _HERE / f"v{version}" / f"{name}.json"
    if not path.is_file():
        if name not in TABLE_KINDS:
            raise KeyError(f"unknown table kind {name!r}; expected one of {', '.join(TABLE_KINDS)}")
        raise KeyError(f"table {name!r} has no schema version {version}; known: {versions()}")
    raw = json.loads(path.read_text())
    return TableSchema(
        name=raw["name"],
        version=int(raw["version"]),
        description=raw.get("description", ""),
        columns=tuple(Column(**c) for c in raw["columns"]),
        unique=tuple(raw.get("unique", ())),
        enums=raw.get("enums", {}),
        ranges=raw.get("ranges", {}),
        list_lengths=raw.get("list_lengths", {}),
        index_columns=raw.get("index_columns", {}),
    )
