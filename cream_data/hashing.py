"""Content hashes, one way each: text, JSON-able objects, Arrow tables and files.

Every fingerprint, cache key and id in cream is built from these (sha256; 16 hex digits where it names something
inside a run, the full digest where it is recorded for provenance). Changing one changes every stored
fingerprint, so existing runs would redo their stages: the functions are kept byte-for-byte stable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

BLOCK = 1 << 20  # bytes read at a time from a file


def text_hash(text: str, n: int | None = 16) -> str:
    """sha256 of the UTF-8 text, the first ``n`` hex digits (all 64 with ``n=None``).

    >>> text_hash("abc")
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def json_hash(obj, n: int | None = 16, *, compact: bool = False) -> str:
    """:func:`text_hash` of ``obj`` as JSON with sorted keys (objects JSON lacks: their ``str``). ``compact``: no
    spaces and non-ASCII kept (the canonical form of prompt ids); otherwise ``json.dumps``' defaults.

    >>> json_hash({"b": 1, "a": [1, 2]}) == text_hash('{"a": [1, 2], "b": 1}')
    True
    """
    if compact:
        text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(obj, sort_keys=True, default=str)
    return text_hash(text, n)


def table_hash(table, n: int | None = 16) -> str:
    """sha256 of an Arrow table's IPC stream (its schema, metadata included, and every value): the same content
    in the same row order and chunking-independent form gives the same hash."""
    import pyarrow as pa

    t = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:n]


def files_hash(paths: Iterable[str | Path], n: int | None = 16) -> str:
    """sha256 over each file's name and bytes, in the order given (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(BLOCK), b""):
                h.update(block)
    return h.hexdigest()[:n]
