"""Response pools for labeling: other responses tables whose rows may only be chosen (``--chosen-from``) or only
rejected (``--rejected-from``) beside the input's responses, which may be either.

Temporal self-rewarding pairs this way (docs/REWARDS.md): iteration t's anchored pairs take the chosen from M_t's
samples and the rejected from M_t's and the initial model M1's (``cream label M_t-samples --rejected-from
M1-samples``); the final pairs also let the temporary future model's samples be chosen (``--chosen-from
future-samples``).

The pooled table is the input's rows, then each ``--chosen-from`` table's, then each ``--rejected-from`` table's,
for the input's prompts only, each prompt's ``response_idx`` renumbered 0 … N-1 in that order (so the chosen is the
input's on a tie: the first best wins). Rows keep their ``model`` and ``iteration`` (who sampled them), which the
preferences record for each side. The pooled table is rebuilt from the same files whenever it is needed (scoring,
each shard's pairing, re-pairing from stored scores), so it is never written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError
from cream_data.tables import io


def pooled(responses: pa.Table, chosen_from=(), rejected_from=()) -> tuple[pa.Table, tuple[np.ndarray, np.ndarray] | None]:
    """The input ``responses`` (sorted) with the pools' rows added, and (may be chosen, may be rejected) per row;
    the input as it is and None without pools."""
    if not chosen_from and not rejected_from:
        return responses, None
    parts = [(responses, True, True, "the input")]
    parts += [(_read(p, "--chosen-from"), True, False, str(p)) for p in chosen_from]
    parts += [(_read(p, "--rejected-from"), False, True, str(p)) for p in rejected_from]
    ids = responses["prompt_id"].cast(pa.string())
    offset: dict[str, int] = {}
    tables, may_choose, may_reject = [], [], []
    for table, choose, reject, where in parts:
        table = table.filter(pc.is_in(table["prompt_id"].cast(pa.string()), value_set=ids.unique()))
        table = table.sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])
        pids = table["prompt_id"].cast(pa.string()).to_pylist()
        old = table["response_idx"].to_numpy().astype(np.int64)
        start = np.array([offset.get(p, 0) for p in pids], dtype=np.int64)
        new = start + old
        for p, i in zip(pids, new):
            offset[p] = max(offset.get(p, 0), int(i) + 1)
        if len(new) and new.max() > np.iinfo(np.int16).max:
            raise CreamError(f"{where}: more than {np.iinfo(np.int16).max} responses per prompt in the pool")
        table = table.set_column(table.schema.get_field_index("response_idx"), "response_idx",
                                 pa.array(new, table.schema.field("response_idx").type))
        tables.append(table.select(responses.column_names).cast(responses.schema))
        may_choose.append(np.full(table.num_rows, choose))
        may_reject.append(np.full(table.num_rows, reject))
    table = pa.concat_tables(tables)
    order = pc.sort_indices(table, sort_keys=[("prompt_id", "ascending"), ("response_idx", "ascending")]).to_numpy()
    choose, reject = np.concatenate(may_choose)[order], np.concatenate(may_reject)[order]
    return table.take(pa.array(order)), (choose, reject)


def _read(path, flag: str) -> pa.Table:
    path = Path(path)
    try:
        table = io.read_table(path, "responses")
    except CreamError as e:
        raise CreamError(f"{flag} {path}: {e}") from None
    if table.num_rows == 0:
        raise CreamError(f"{flag} {path}: responses table is empty")
    return table
