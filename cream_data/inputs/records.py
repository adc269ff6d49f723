"""Records from any source a loader accepts: ``(where, fields)`` pairs from a JSONL / JSON / CSV / TSV / Parquet
file, a local ``datasets`` folder (``save_to_disk``) or a Hugging Face Hub dataset id (``name`` or
``name:config``), or the table itself when the source is a cream table of the wanted kind. ``where`` names the
record for error messages (``line 7``, ``row 3``, ``[2]``).

Bounds, each refused in one line naming the file and the line: a path that is neither a regular file nor a folder (a
named pipe, a device: asked before opening it, which would block or never end); JSON nested deeper than Python's
reader goes (its recursion limit, about 1,000 levels) or a number of more digits than it converts (4,300); a
CSV/TSV field longer than :data:`MAX_CSV_FIELD` characters (a prompt may be long: the csv module's own limit,
131,072, is raised to this while a file is read).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from cream_data.errors import CreamError, missing_package
from cream_data.inputs.layouts import Record
from cream_data.jsonfile import not_a_file

EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
MAX_CSV_FIELD = 2**24  # characters of one CSV/TSV field: 16 Mi, far beyond any model's context


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CreamError(f"{path} line {line}: bytes that are not UTF-8 (byte {e.start}); expected UTF-8 text") from None


def _json_kind(v) -> str:
    return {list: "a list", str: "a string", dict: "an object", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


@contextmanager
def _bounded_json(where: str):
    """Parse JSON within the bounds of Python's reader, which recurses once per level of nesting (so as deep as the
    interpreter's recursion limit, about 1,000) and converts numbers of up to 4,300 digits; a one-line error naming
    ``where`` beyond them. Invalid JSON is the caller's to report (JSONDecodeError passes through)."""
    try:
        yield
    except RecursionError:
        raise CreamError(f"{where}: nested too deeply to read (more than about {sys.getrecursionlimit():,} levels); "
                         "expected a record of fields") from None
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError):
            raise
        raise CreamError(f"{where}: a number too long to read ({str(e).split(':')[0]})") from None


def _jsonl(path: Path, text: str) -> Iterator[Record]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            with _bounded_json(f"{path} line {n}"):
                obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CreamError(f"{path} line {n}: not valid JSON ({e.msg}, column {e.colno}); "
                             "expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise CreamError(f"{path} line {n}: {_json_kind(obj)}, expected a JSON object per line")
        yield f"line {n}", obj


def _json(path: Path, text: str) -> Iterator[Record]:
    try:
        with _bounded_json(str(path)):
            obj = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):  # JSON Lines saved as .json
            yield from _jsonl(path, text)
            return
        raise CreamError(f"{path} line {e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if isinstance(obj, dict):  # {"data": [...]}-style: the one list of objects inside
        lists = {k: v for k, v in obj.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        key = "data" if "data" in lists else next(iter(lists)) if len(lists) == 1 else None
        if key is None:
            raise CreamError(f"{path}: a JSON object with {len(lists)} lists of records "
                             f"({', '.join(lists) or 'none'}); expected an array of records or one such list")
        obj = obj[key]
    if not isinstance(obj, list):
        raise CreamError(f"{path}: {_json_kind(obj)}, expected a JSON array of objects")
    for i, r in enumerate(obj, 1):
        if not isinstance(r, dict):
            raise CreamError(f"{path} item {i}: {_json_kind(r)}, expected a JSON object")
        yield f"item {i}", r


def _csv(path: Path, text: str, delimiter: str) -> Iterator[Record]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if not _csv_next(path, reader, lambda: reader.fieldnames):
        raise CreamError(f"{path}: no header row; expected column names on line 1")
    width = len(reader.fieldnames)
    while (r := _csv_next(path, reader, lambda: next(reader, None))) is not None:
        where = f"line {reader.line_num}"
        if None in r:
            raise CreamError(f"{path} {where}: {width + len(r[None])} values but the header has {width} columns")
        if any(v is None for v in r.values()):
            have = sum(v is not None for v in r.values())
            raise CreamError(f"{path} {where}: {have} values but the header has {width} columns")
        yield where, r


def _csv_next(path: Path, reader: csv.DictReader, step):
    """``step()`` (the next row, or the header) with fields of up to MAX_CSV_FIELD characters; the csv module's
    error (a longer field, a bad quote) as one line naming the file and line."""
    limit = csv.field_size_limit(MAX_CSV_FIELD)
    try:
        return step()
    except csv.Error as e:
        why = f"a field longer than {MAX_CSV_FIELD:,} characters" if "field limit" in str(e) else str(e)
        raise CreamError(f"{path} line {reader.reader.line_num}: {why}; expected one record per row") from None
    finally:
        csv.field_size_limit(limit)


def _rows(table: pa.Table) -> Iterator[Record]:
    for i, r in enumerate(table.to_pylist(), 1):
        yield f"row {i}", r


def _pick_split(d, label: str, split: str | None):
    """One split of a DatasetDict: the named one, else 'train', else the only one."""
    names = list(d.keys())
    if split is None:
        split = "train" if "train" in names else names[0] if len(names) == 1 else None
        if split is None:
            raise CreamError(f"{label}: has splits {names}; name one with --split")
    if split not in names:
        raise CreamError(f"{label}: no split '{split}'; it has {names}")
    return d[split], split


def _datasets():
    try:
        import datasets
    except ImportError:
        raise missing_package("datasets", "loading a datasets folder or Hub dataset") from None
    return datasets


def _hub(source: str, split: str | None) -> tuple[Iterator[Record], str]:
    ds_mod = _datasets()
    name, _, config = source.partition(":")
    _hub_reachable(source)
    try:
        ds = ds_mod.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown id, gated repo…: all reach the user as one line
        msg = " ".join(str(e).split())[:200]
        raise CreamError(f"{source}: not a local file or folder, and loading it as a Hugging Face Hub dataset failed "
                         f"({type(e).__name__}: {msg})") from None
    if isinstance(ds, ds_mod.DatasetDict):
        ds, split = _pick_split(ds, source, split)
    return ((f"row {i}", r) for i, r in enumerate(ds, 1)), split


PROBE_TIMEOUT_S = 5.0  # the reachability probe's limit (connect, proxy handshake, first byte)
_UNREACHABLE_STATUS = (502, 503, 504)  # a proxy (or the Hub's front) answering that the Hub is not there


def _hub_reachable(source: str) -> None:
    """Fail in seconds, in one line, when the Hub cannot be reached (the client would retry for ~30 s).

    The probe is one ``HEAD`` of the endpoint through huggingface_hub's own HTTP session (``get_session()``: the
    client ``datasets`` downloads with, and whatever ``set_client_factory`` configured), so it honours
    ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY`` exactly as the download will. Any HTTP answer counts
    as reached (an unknown or gated id is ``load_dataset``'s to report), except 502/503/504, which a proxy gives
    when it cannot reach the Hub. In offline mode (HF_HUB_OFFLINE=1) the datasets cache answers instead, so no probe
    is made.
    """
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return
    endpoint = constants.ENDPOINT
    try:
        status = get_session().head(endpoint, timeout=PROBE_TIMEOUT_S).status_code
    except Exception as e:  # the client's transport errors (connect, proxy, timeout, TLS), or a malformed HF_ENDPOINT
        reason = _reason(e)
    else:
        if status not in _UNREACHABLE_STATUS:
            return
        reason = f"HTTP {status}"
    raise CreamError(f"{source}: not a local file or folder, and the Hugging Face Hub ({endpoint}) cannot be reached "
                     f"({reason}{_via_proxy(endpoint)}); check the path, the network or the proxy settings") from None


def _reason(e: Exception) -> str:
    """The error's class and first line, with any ``user:password@`` of a proxy URL masked."""
    import re

    first = (str(e).strip().splitlines() or [""])[0]
    first = re.sub(r"://[^/@\s]+@", "://***@", first)[:160]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _via_proxy(endpoint: str) -> str:
    """``, through the proxy in HTTPS_PROXY`` when the environment routes ``endpoint`` through one, read the way the
    HTTP client reads it (:func:`urllib.request.getproxies`; never the proxy's URL, which may hold a password)."""
    import os
    from urllib.parse import urlsplit
    from urllib.request import getproxies_environment, proxy_bypass_environment

    url = urlsplit(endpoint)
    proxies = getproxies_environment()
    key = next((k for k in (url.scheme, "all") if proxies.get(k)), None)
    if key is None or proxy_bypass_environment(url.hostname or "", proxies):
        return ""
    name = f"{key}_proxy"
    return f", through the proxy in {name if os.environ.get(name) else name.upper()}"


def _local_dataset(path: Path, split: str | None) -> tuple[Iterator[Record], str | None]:
    ds_mod = _datasets()
    try:
        ds = ds_mod.load_from_disk(str(path))
    except Exception as e:
        raise CreamError(f"{path}: not a readable datasets folder ({type(e).__name__}: {str(e)[:150]})") from None
    if isinstance(ds, ds_mod.DatasetDict):
        ds, split = _pick_split(ds, str(path), split)
    return ((f"row {i}", r) for i, r in enumerate(ds, 1)), split


def _cream_kind(path: Path) -> str | None:
    from cream_data.tables.io import table_kind

    try:
        return table_kind(path)
    except (OSError, ValueError):
        return None


def records(source: str, split: str | None, want: str) -> tuple[Iterator[Record] | pa.Table, Path | None, str | None]:
    """The records of a source, or a ready table when the source already is a cream table of kind ``want``."""
    path = Path(source)
    kind = not_a_file(path, "a file of records, a folder or a Hub dataset id")
    if kind is not None and kind.startswith("not a regular file"):  # a named pipe, a device: never opened
        raise CreamError(f"{path}: {kind}")
    if path.is_dir():
        if (path / "_manifest.json").exists() or any(path.glob("_manifest.shard-*.json")) or any(path.glob("part-*.parquet")):
            return _cream_table(path, want), None, split
        if any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            recs, split = _local_dataset(path, split)
            return recs, None, split
        raise CreamError(f"{path}: a folder that is neither a cream table nor a `datasets` save_to_disk folder")
    if path.is_file():
        ext = path.suffix.lower()
        if ext not in EXTENSIONS:
            raise CreamError(f"{path}: unknown file extension '{ext or '(none)'}'; expected one of "
                             f"{', '.join(EXTENSIONS)} (or a datasets folder, a cream table, a Hub id)")
        if ext == ".parquet":
            try:
                meta = pq.read_schema(path).metadata or {}
            except (pa.ArrowInvalid, OSError) as e:
                raise CreamError(f"{path}: not a readable Parquet file ({str(e)[:120]})") from None
            if schemas.META_SCHEMA in meta:
                return _cream_table(path, want), path, split
            return _rows(pq.read_table(path)), path, split
        data = path.read_bytes()
        if not data.strip():
            raise CreamError(f"{path}: the file is empty; expected {ext[1:].upper()} records")
        text = _decode(path, data)
        if ext in (".jsonl", ".ndjson"):
            return _jsonl(path, text), path, split
        if ext == ".json":
            return _json(path, text), path, split
        return _csv(path, text, "\t" if ext == ".tsv" else ","), path, split
    looks_like_path = source.startswith((".", "/", "~")) or path.suffix.lower() in EXTENSIONS or source.count("/") > 1
    if looks_like_path or not source.strip():
        raise CreamError(f"{source}: no such file or folder")
    recs, split = _hub(source, split)
    return recs, None, split


def _cream_table(path: Path, want: str) -> pa.Table:
    from cream_data.tables.io import read_table

    kind = _cream_kind(path)
    if kind is not None and kind != want:
        raise CreamError(f"{path}: holds a '{kind}' table, expected a '{want}' table or raw records")
    return read_table(path, want)
