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

Where tables meet, a key means one thing: a prompt_id names one prompt in the input, in each pool and across them
(:func:`prompt_per_id`, :func:`same_prompts`; the label stage checks its ``--prompts`` table so too); a pool is
another table than the input and than every other pool, by path and by content (rows twice would be duplicated
responses); and a pool shares prompts with the input (one that shares none would be dropped whole).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError
from cream_data.tables import io
from cream_data.tables.validate import conversation_keys


def pooled(responses: pa.Table, chosen_from=(), rejected_from=(), *, source: str | os.PathLike | None = None,
           ) -> tuple[pa.Table, tuple[np.ndarray, np.ndarray] | None]:
    """The input ``responses`` (sorted; read from ``source``) with the pools' rows added, and (may be chosen, may be
    rejected) per row; the input as it is and None without pools. A pool that is the input or another pool (by
    path, or by content: :func:`_check_new_rows`), shares no prompt_id with the input, or names another prompt under
    one of its prompt_ids is refused."""
    if not chosen_from and not rejected_from:
        return responses, None
    _check_distinct(source, [("--chosen-from", p) for p in chosen_from] + [("--rejected-from", p) for p in rejected_from])
    source = source or "the input"
    prompts = prompt_per_id(responses, str(source))
    parts = [(responses, True, True, "the input" if source == "the input" else f"the input {source}")]
    parts += [(_read(p, "--chosen-from", prompts, source), True, False, f"--chosen-from {p}") for p in chosen_from]
    parts += [(_read(p, "--rejected-from", prompts, source), False, True, f"--rejected-from {p}")
              for p in rejected_from]
    ids = responses["prompt_id"].cast(pa.string()).unique()
    parts = [(t.filter(pc.is_in(t["prompt_id"].cast(pa.string()), value_set=ids)), *rest) for t, *rest in parts]
    _check_new_rows(parts)
    offset: dict[str, int] = {}
    tables, may_choose, may_reject = [], [], []
    for table, choose, reject, where in parts:
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


def as_labeled(responses: pa.Table, config: dict, where: str) -> tuple[pa.Table, bool]:
    """The responses a labeling paired, from its input ``responses`` (read from ``where``) and the pools its
    manifest's ``config`` names: (table, whole). Without pools: the input, whole. With pools read back from the
    absolute paths recorded (the pooled table as :func:`pooled` built it then): whole; with pools recorded by a
    relative path or no longer there: the input alone, not whole (its rows keep their response_idx when pooled)."""
    pools = [tuple(config.get(flag) or ()) for flag in ("chosen_from", "rejected_from")]
    if not any(pools):
        return responses, True
    if not all(Path(p).is_absolute() and Path(p).exists() for p in pools[0] + pools[1]):
        return responses, False
    return pooled(responses, *pools, source=where)[0], True


def _read(path, flag: str, prompts: pa.Table, source) -> pa.Table:
    """A pool, checked against the input's ``prompts`` (:func:`prompt_per_id`): its prompt_ids are the input's
    prompts where they meet, and at least one meets."""
    path = Path(path)
    try:
        table = io.read_table(path, "responses")
    except CreamError as e:
        raise CreamError(f"{flag} {path}: {e}") from None
    if table.num_rows == 0:
        raise CreamError(f"{flag} {path}: responses table is empty")
    if not same_prompts(prompt_per_id(table, f"{flag} {path}"), prompts, f"{flag} {path}", str(source)):
        raise CreamError(f"{flag} {path}: none of its prompt_ids is a prompt of {source} (e.g. "
                         f"{table['prompt_id'][0].as_py()!r}); expected responses to the input's prompts")
    return table


def same_prompts(mine: pa.Table, theirs: pa.Table, where: str, source: str) -> int:
    """How many prompt_ids two tables share (:func:`prompt_per_id` of each), after checking that each shared one
    names the same prompt in both; one line naming the first that does not, and the turns that differ."""
    at = pc.index_in(mine["prompt_id"], value_set=theirs["prompt_id"])
    common = pc.is_valid(at)
    keys, other = mine["key"].filter(common), theirs["key"].take(at.filter(common))
    differs = pc.not_equal(keys, other).to_numpy(zero_copy_only=False)
    if differs.any():
        i = int(np.flatnonzero(differs)[0])
        raise CreamError(f"{where}: prompt_id {mine['prompt_id'].filter(common)[i].as_py()!r} is another prompt "
                         f"than in {source} ({_difference(keys[i].as_py(), other[i].as_py())}); "
                         f"{int(differs.sum())} prompt_id(s) differ — sampled from another prompts table?")
    return len(keys)


def prompt_per_id(table: pa.Table, where: str) -> pa.Table:
    """(prompt_id, key) once per prompt_id of a responses table, ``key`` the prompt's text (every turn's role and
    content); refuses a table that names two different prompts under one prompt_id (one line: the prompt_id and
    both prompts)."""
    t = pa.table({"prompt_id": table["prompt_id"].cast(pa.string()), "key": conversation_keys(table["prompt"])})
    per_id = t.group_by("prompt_id").aggregate([("key", "min"), ("key", "max")])
    two = pc.not_equal(per_id["key_min"], per_id["key_max"])
    if pc.any(two).as_py():
        bad = per_id.filter(two)
        raise CreamError(f"{where}: prompt_id {bad['prompt_id'][0].as_py()!r} names two different prompts "
                         f"({_difference(bad['key_min'][0].as_py(), bad['key_max'][0].as_py())}; "
                         f"{bad.num_rows} prompt_id(s) like this); expected one prompt per prompt_id")
    return pa.table({"prompt_id": per_id["prompt_id"], "key": per_id["key_min"]})


def _difference(a: str, b: str) -> str:
    """Two prompt keys (:func:`~cream_data.tables.validate.conversation_keys`) as the first turn where they differ,
    quoted short: "'x' vs 'y'"."""
    ta, tb = a.split("\x1e"), b.split("\x1e")
    k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))

    def shown(turns: list[str]) -> str:
        if k >= len(turns):
            return f"{len(turns)} turn(s)"
        role, _, text = turns[k].partition("\x1f")
        return f"{role} {text if len(text) <= 48 else text[:45] + '...'!r}"

    return f"{shown(ta)} vs {shown(tb)}"


def _check_new_rows(parts: list[tuple]) -> None:
    """Each pool (its rows for the input's prompts, ``parts[1:]``) brings a response that neither the input nor an
    earlier pool holds: a copy of a table at another path, or a part of one, would add its rows a second time. A
    response is its (prompt_id, text); one left out of a pool's rows is no concern (pools are other models' draws,
    which may say the same short answer)."""
    def keys(table: pa.Table) -> pa.Array:
        return pc.binary_join_element_wise(table["prompt_id"].cast(pa.string()), table["response"].cast(pa.string()),
                                           "\x1f").combine_chunks()

    seen = []
    for table, _, _, where in parts:
        mine = keys(table)
        for other, other_where in seen:
            if len(mine) and pc.all(pc.is_in(mine, value_set=other)).as_py():
                pid, text = table["prompt_id"][0].as_py(), table["response"][0].as_py()
                raise CreamError(f"{where}: holds no response that {other_where} does not hold already (e.g. "
                                 f"prompt_id {pid!r}: {text if len(text) <= 48 else text[:45] + '...'!r}): a copy of "
                                 "it? a pool is another responses table than the input and than every other pool "
                                 "(its rows would count twice)")
        seen.append((mine, where))


def _check_distinct(source, pools: list[tuple[str, object]]) -> None:
    """No pool is the input, and no table is given twice (its rows would be duplicated responses)."""
    seen = [("the input", Path(source))] if source is not None else []
    for flag, path in pools:
        path = Path(path)
        for other_flag, other in seen:
            if path.exists() and other.exists() and os.path.samefile(path, other):
                was = f"the input {other}" if other_flag == "the input" else f"also given as {other_flag} {other}"
                raise CreamError(f"{flag} {path}: is {was}; a pool is another responses table than the input "
                                 "and than every other pool (its rows would count twice)")
        seen.append((flag, path))
