"""The responses of a labeling run as pairing sees them: sorted by (prompt_id, response_idx) and grouped into
prompts (:class:`Rows`), and one scorer's rows of the scores table aligned to them (:class:`ScorerRows`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError


class Rows:
    """The responses sorted by (prompt_id, response_idx), grouped into prompts."""

    def __init__(self, responses: pa.Table):
        keys = responses.select(["prompt_id", "response_idx"])
        if keys["prompt_id"].null_count or keys["response_idx"].null_count:
            raise CreamError("responses: prompt_id and response_idx must not be null")
        self.table = responses
        self.order = pc.sort_indices(keys, sort_keys=[("prompt_id", "ascending"), ("response_idx", "ascending")])
        self.prompt_id = keys["prompt_id"].take(self.order).combine_chunks().cast(pa.string())
        self.response_idx = keys["response_idx"].take(self.order).to_numpy().astype(np.int64)
        self.n_rows = len(self.order)
        if self.n_rows:
            changes = pc.not_equal(self.prompt_id[1:], self.prompt_id[:-1]).to_numpy(zero_copy_only=False)
            self.starts = np.flatnonzero(np.concatenate([[True], changes]))
        else:
            self.starts = np.zeros(0, dtype=np.int64)
        self.counts = np.diff(np.append(self.starts, self.n_rows))
        self.unique_ids = self.prompt_id.take(pa.array(self.starts, pa.int64()))
        position = np.arange(self.n_rows) - np.repeat(self.starts, self.counts)
        bad = np.flatnonzero(self.response_idx != position)
        if len(bad):
            p = int(np.searchsorted(self.starts, bad[0], side="right") - 1)
            lo, hi = self.starts[p], self.starts[p] + self.counts[p]
            raise CreamError(
                f"responses: prompt_id {self.prompt_id[lo].as_py()!r} has response_idx "
                f"{self.response_idx[lo:hi].tolist()[:10]}, expected 0..N-1 with no gaps or repeats"
            )

    def prompt_id_at(self, sorted_rows: np.ndarray) -> pa.Array:
        return self.prompt_id.take(pa.array(sorted_rows, pa.int64()))

    def original(self, column: str, sorted_rows: np.ndarray) -> pa.Array:
        """Values of a responses column at rows given in sorted order."""
        picked = self.order.take(pa.array(sorted_rows, pa.int64()))
        return self.table[column].take(picked).combine_chunks()


class ScorerRows:
    """One scorer's rows of the scores table, aligned to the sorted response rows (-1 where missing)."""

    def __init__(self, scores: pa.Table, scorer: str, rows: Rows, *, required: bool):
        self.scorer = scorer
        self.table = scores.filter(pc.equal(scores["scorer"], scorer))
        if required and self.table.num_rows == 0:
            found = sorted(set(pc.unique(scores["scorer"]).to_pylist()) - {None})
            raise CreamError(f"scores: no rows for scorer {scorer!r} (scorers present: {', '.join(found) or 'none'})")
        # Each score row's response row: its prompt's number by a hash lookup among the sorted unique
        # prompt ids, then start + response_idx (cheaper than a two-key join).
        prompt_no = pc.index_in(self.table["prompt_id"].cast(pa.string()), value_set=rows.unique_ids)
        prompt_no = pc.fill_null(prompt_no, -1).to_numpy().astype(np.int64)
        ridx = pc.fill_null(self.table["response_idx"].cast(pa.int64()), -1).to_numpy()
        found = prompt_no >= 0
        found[found] &= (ridx[found] >= 0) & (ridx[found] < rows.counts[prompt_no[found]])
        if not found.all():
            i = int(np.flatnonzero(~found)[0])
            key = (self.table["prompt_id"][i].as_py(), self.table["response_idx"][i].as_py())
            raise CreamError(f"scores: {int((~found).sum())} row(s) of scorer {scorer!r} match no response, "
                             f"e.g. (prompt_id, response_idx) = {key}: scores from another responses table?")
        row = rows.starts[prompt_no] + ridx
        srow = np.arange(len(row))
        if len(row) and np.bincount(row, minlength=rows.n_rows).max() > 1:
            dup = int(np.flatnonzero(np.bincount(row) > 1)[0])
            raise CreamError(f"scores: scorer {scorer!r} has several rows for (prompt_id, response_idx) = "
                             f"{(rows.prompt_id[dup].as_py(), int(rows.response_idx[dup]))}")
        self.srow = np.full(rows.n_rows, -1, dtype=np.int64)
        self.srow[row] = srow

    def floats(self, column: str) -> np.ndarray:
        """The column as float64 per sorted response row; NaN where null or where the row is missing."""
        vals = pc.fill_null(self.table[column].cast(pa.float64()), np.nan).to_numpy()
        out = np.full(len(self.srow), np.nan)
        has = self.srow >= 0
        out[has] = vals[self.srow[has]]
        return out

    def value(self, column: str, sorted_rows: np.ndarray, typ: pa.DataType) -> pa.Array:
        """The column at the given sorted rows; null where this scorer has no row (or no such column)."""
        if column not in self.table.column_names:
            return pa.nulls(len(sorted_rows), type=typ)
        s = self.srow[sorted_rows]
        return self.table[column].take(pa.array(s, pa.int64(), mask=s < 0)).combine_chunks().cast(typ)
