"""Content fingerprints of tables and files: what a stage's outputs record about their inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cream_data.hashing import files_hash, table_hash
from cream_data.tables.shard import split_shard


def table_fingerprint(table: pa.Table, columns: list[str] | None = None, sort_by: list[str] | None = None) -> str:
    """sha256 (16 hex) of the selected columns' content, independent of row order when ``sort_by`` is given."""
    t = table.select(columns) if columns else table
    if sort_by:
        t = t.take(pc.sort_indices(t, sort_keys=[(c, "ascending") for c in sort_by]))
    return table_hash(t.replace_schema_metadata(None))


def responses_fingerprint(responses: pa.Table) -> str:
    """What the labels of a responses table depend on: which prompt, which index, which text."""
    return table_fingerprint(responses, ["prompt_id", "response_idx", "response"], ["prompt_id", "response_idx"])


def files_fingerprint(paths: list[Path]) -> str:
    """sha256 (16 hex) over the files' names and bytes, in path order."""
    return files_hash(sorted(paths))


def shard_mask(keys: pa.Array | pa.ChunkedArray, shard: tuple[int, int] | None) -> pa.Array:
    """Rows whose key hashes to shard i of k (a stable hash, the same in every process)."""
    import numpy as np

    values = keys.to_pylist()
    if split_shard(shard) is None:
        return pa.array(np.ones(len(values), dtype=bool))
    i, k = shard
    return pa.array([int(hashlib.md5(str(v).encode()).hexdigest()[:8], 16) % k == i for v in values])
