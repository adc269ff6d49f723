"""Read-only SQL over cream tables with DuckDB: every complete table under a path becomes a view.

A run directory holds one table of a kind per iteration (``RUN/iter-1/preferences``, ``RUN/iter-2/…``);
the view of that kind is their union by column name, with an ``iteration`` column: the table's own when it
has one, else the ``iter-<t>`` component of its path (any spelling :mod:`cream_data.tables.iterations` accepts), else
null. Every view has that column, so a query written for one table folder also runs on a whole run.

Every view also has a ``table_path`` column: the table each row was read from, as a path relative to the queried
folder (``iter-1/preferences``, ``lab-spearman/preferences``, ``eval.parquet``; the table's own name when the path
queried is the table itself). Two label outputs of one iteration (``cream label … --out lab`` and a re-pairing
``--out lab-spearman``) therefore stay apart: ``GROUP BY table_path`` counts each, and
``parse_dirpath(table_path)`` is the label folder (``lab``), to join a folder's scores with its preferences.

Read-only is enforced twice:

1. the statement is parsed by DuckDB and only one read statement is accepted (``SELECT``/``WITH``/
   ``FROM``/``VALUES``/``DESCRIBE``/``SHOW``/``SUMMARIZE``, ``EXPLAIN`` of those, ``PRAGMA table_info``);
2. DuckDB never touches the file system itself: the Parquet parts are handed to it as pyarrow datasets
   (pyarrow reads them; projections and filters are still pushed down), and then external access is turned
   off and the configuration locked. So even a statement that slipped past (1) could not write, attach,
   install, or read any other file. (DuckDB's ``allowed_paths`` would let it read the parts directly, but
   it also lets ``COPY … TO`` overwrite exactly those files, which is why it is not used.)
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from cream_data.errors import CreamError, missing_package
from cream_data.stats import json_safe
from cream_data.tables.io import complete_parts, iter_table_paths
from cream_data.tables.table_files import check_version
from cream_data.tables.iterations import iteration_from_path

if TYPE_CHECKING:  # duckdb is imported lazily: `import cream_data` stays light
    import duckdb

_PRAGMA_OK = re.compile(r"^\s*pragma\s+(table_info|show_tables|show_tables_expanded)\b", re.IGNORECASE)
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?", re.IGNORECASE)


TABLE_PATH = "table_path"  # the column every view gets: which table (folder or file) a row was read from


@dataclass(frozen=True)
class TableSource:
    """One table found on disk: its kind, where it lives, its Parquet files, its iteration (if known) and its path
    relative to the folder searched (``lab/preferences``; the table's own name when that folder is the table)."""

    kind: str
    path: Path
    files: tuple[Path, ...]
    iteration: int | None
    rel: str = ""


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form; the table's own name when it is ``root`` itself."""
    return path.name if path == root else path.relative_to(root).as_posix()


def find_tables(root: str | Path) -> list[TableSource]:
    """Every complete table under ``root`` (a run dir, a table folder or a Parquet file)."""
    root = Path(root)
    if not root.exists():
        raise CreamError(f"{root}: no such file or folder")
    found = []
    for kind, path in iter_table_paths(root):
        files = tuple(complete_parts(path)[0]) if path.is_dir() else (path,)
        found.append(TableSource(kind, path, files, iteration_from_path(path), relative_path(path, root)))
    return found


def view_name(src: TableSource) -> str:
    """The DuckDB view a table joins: its kind, prefixed by method temporal's folder when it lives in one
    (``anchor_responses``: the initial model's samples; ``anchored_preferences``: the pairs the future model trains
    on; ``future_responses``) or by the probe's (``probe_responses``, ``probe_scores``: a run's held-out prompts), so
    ``preferences`` and ``responses`` stay the pairs that train the next model and M_t's samples."""
    from cream_data.vocab import SIDE_FOLDERS

    parent = src.path.parent.name if src.path.is_dir() else src.path.parent.parent.name
    return f"{parent}_{src.kind}" if parent in SIDE_FOLDERS else src.kind


def _check_version(src: TableSource) -> None:
    for f in src.files[:1]:  # parts of one table are written by one writer: the first footer is enough
        md = pq.read_schema(f).metadata or {}
        check_version(f, src.kind, md.get(schemas.META_VERSION, b"").decode() or None)


def _dataset(src: TableSource):
    """A lazy pyarrow dataset over a table's parts (an empty in-memory table when it has none)."""
    import pyarrow.dataset as ds

    if not src.files:
        return schemas.get(src.kind).arrow.empty_table()
    # the latest schema first: columns added since an older file was written read as null
    latest = schemas.get(src.kind).arrow.remove_metadata() if src.kind in schemas.TABLE_KINDS else None
    schema = pa.unify_schemas(([latest] if latest is not None else []) + [pq.read_schema(f) for f in src.files],
                              promote_options="permissive")
    return ds.dataset([str(f) for f in src.files], schema=schema.remove_metadata(), format="parquet")


def connect(root: str | Path) -> tuple["duckdb.DuckDBPyConnection", dict[str, list[TableSource]]]:
    """A locked, read-only DuckDB connection with one view per table kind found under ``root``; every view has an
    ``iteration`` and a ``table_path`` column (see the module's docstring)."""
    try:
        import duckdb
    except ImportError:
        raise missing_package("duckdb", "cream sql") from None
    tables = find_tables(root)
    if not tables:
        raise CreamError(f"{root}: no complete cream tables found (expected table folders with a "
                         f"_manifest.json, or Parquet files written by cream)")
    by_kind: dict[str, list[TableSource]] = {}
    for t in sorted(tables, key=lambda t: (t.iteration is None, t.iteration or 0, str(t.path))):
        by_kind.setdefault(view_name(t), []).append(t)

    con = duckdb.connect(":memory:")
    # Python objects are never visible by variable name: only the views below exist.
    con.execute("SET python_enable_replacements = false")
    for name, sources in by_kind.items():
        view = None
        for src in sources:
            _check_version(src)
            data = _dataset(src)
            rel = con.from_arrow(data)
            if "iteration" not in data.schema.names:
                it = "NULL" if src.iteration is None else str(src.iteration)
                rel = rel.project(f"*, CAST({it} AS INTEGER) AS iteration")
            keep = f"* EXCLUDE ({TABLE_PATH})" if TABLE_PATH in data.schema.names else "*"  # ours wins
            rel = rel.project(f"{keep}, {_sql_text(src.rel)}::VARCHAR AS {TABLE_PATH}")
            view = rel if view is None else view.union_by_name(rel)
        view.create_view(name)
    # From here on DuckDB cannot open any file (read or write), load extensions, or undo these settings.
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con, by_kind


def _sql_text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def check_read_only(con: "duckdb.DuckDBPyConnection", sql: str) -> None:
    """Refuse anything but one read statement, using DuckDB's own parser."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise CreamError(f"bad SQL: {_one_line(e)}") from None
    if not statements:
        raise CreamError("empty SQL statement")
    if len(statements) > 1:
        raise CreamError(f"cream sql runs one statement at a time, got {len(statements)}")
    st = statements[0]
    kind = st.type
    if kind == duckdb.StatementType.SELECT:
        return
    if kind == duckdb.StatementType.PRAGMA and _PRAGMA_OK.match(st.query):
        return
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.sub("", st.query, count=1)
        if inner != st.query:
            check_read_only(con, inner)
            return
    raise CreamError(f"cream sql is read-only: {written_keyword(st.query, str(kind).rsplit('.', 1)[-1])} statements "
                     "are refused (use SELECT; write results with --format csv|json and a shell redirect)")


_COMMENT = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)


def written_keyword(statement: str, kind: str) -> str:
    """The statement's keyword as the user wrote it (``INSTALL``, ``USE``, ``FORCE INSTALL``), not DuckDB's type
    for it (LOAD, SET): its first word after comments; a ``WITH …`` names what follows (``WITH … INSERT``)."""
    words = re.findall(r"[A-Za-z]+", _COMMENT.sub("", statement, count=1)[:64])[:2]
    first = words[0].upper() if words else kind
    if first == "FORCE" and len(words) > 1:
        return f"FORCE {words[1].upper()}"
    return f"WITH … {kind}" if first == "WITH" else first


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("^")]
    return " ".join(lines)


def query(root: str | Path, sql: str, *, limit: int | None = None) -> tuple[pa.Table, bool]:
    """Run one read-only statement over the tables under ``root``.

    Returns ``(result, truncated)``: at most ``limit`` rows (all when None) and whether more rows existed.
    """
    import duckdb

    con, _ = connect(root)
    try:
        check_read_only(con, sql)
        try:
            rel = con.sql(sql)
            if rel is None:  # a statement with no result set
                return pa.table({}), False
            table, truncated = _take(rel.to_arrow_reader(batch_size=8192), limit)
        except duckdb.Error as e:
            raise CreamError(f"SQL error: {_one_line(e)}") from None
        return table, truncated
    finally:
        con.close()


def _take(reader: pa.RecordBatchReader, limit: int | None) -> tuple[pa.Table, bool]:
    """Read up to ``limit`` rows from a batch stream without materialising the rest."""
    if limit is None:
        return reader.read_all(), False
    batches, n = [], 0
    for batch in _batches(reader):
        if n + batch.num_rows > limit:
            batches.append(batch.slice(0, limit - n))
            return pa.Table.from_batches(batches, schema=reader.schema), True
        batches.append(batch)
        n += batch.num_rows
    return pa.Table.from_batches(batches, schema=reader.schema), False


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


# ---------------------------------------------------------------------------- output formats
def to_records(table: pa.Table) -> list[dict]:
    """Rows as JSON-ready dicts: nested columns stay nested; NaN/±inf become null (JSON has no NaN)."""
    return [{k: _json_value(v) for k, v in row.items()} for row in table.to_pylist()]


def _json_value(v):
    return json_safe(v, _scalar_text)


def _scalar_text(v) -> str:
    """Bytes as hex; dates, decimals, intervals: their text form."""
    return v.hex() if isinstance(v, bytes) else str(v)


def to_json(table: pa.Table) -> str:
    """A JSON array of records (one object per row)."""
    return json.dumps(to_records(table), ensure_ascii=False, allow_nan=False)


def to_csv(table: pa.Table) -> str:
    """CSV with a header; nested values (lists, conversations) are written as JSON text in their cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.column_names)
    for row in table.to_pylist():
        w.writerow([cell_text(v) for v in row.values()])
    return buf.getvalue()


def cell_text(v) -> str:
    """One value as text: '' for null, JSON for nested values, repr-free floats."""
    if v is None:
        return ""
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(_json_value(v), ensure_ascii=False)
    if isinstance(v, float):
        return repr(v)
    return str(v)
