"""Check a pyarrow table against a table schema and report every violation at once.

Non-finite numbers (NaN, ±inf) are refused in every float column of every schema (``Column.finite``, see
:mod:`schemas`): :func:`check_finite` names the first offending row; :func:`check` runs it first, so every
checked read and every write refuses them with that one line.

:func:`check_pair_sides` refuses a preference pair whose two sides are one response (a pair teaches nothing then);
:func:`conversation_keys` gives the string that compares conversations (prompts, chosen, rejected) by content.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from cream_data.errors import CreamError, SchemaError
from schemas import TableSchema


def _type_ok(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual.equals(expected):
        return True
    # Large/view variants of strings and lists are the same logical type.
    if pa.types.is_large_string(actual) or pa.types.is_string_view(actual):
        return pa.types.is_string(expected)
    if pa.types.is_null(actual):
        return True  # an all-null column; nullability is checked separately
    # Integer widths are not a user's concern: conform() casts safely (overflow is an error there).
    if pa.types.is_integer(expected) and pa.types.is_integer(actual):
        return True
    if pa.types.is_floating(expected) and (pa.types.is_floating(actual) or pa.types.is_integer(actual)):
        return True
    if (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and pa.types.is_list(expected):
        return _type_ok(actual.value_type, expected.value_type)
    if pa.types.is_struct(actual) and pa.types.is_struct(expected):
        names = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        for i in range(expected.num_fields):
            f = expected.field(i)
            if f.name not in names or not _type_ok(names[f.name], f.type):
                return False
        return True
    return False


def _first_rows(mask: np.ndarray, k: int = 3) -> str:
    rows = np.flatnonzero(mask)[:k].tolist()
    more = "…" if int(mask.sum()) > k else ""
    return ", ".join(map(str, rows)) + more


def violations(table: pa.Table, schema: TableSchema) -> list[str]:
    """Every way ``table`` breaks ``schema``: missing columns, wrong types, nulls, ranges, list lengths."""
    found: list[str] = []
    usable = _columns(table, schema, found)
    found.extend(_nonfinite(table, schema))
    found.extend(_value_rules(schema, usable))
    found.extend(_count_rules(schema, usable))
    if schema.unique and all(u in usable for u in schema.unique) and table.num_rows:
        keys = table.select(list(schema.unique)).group_by(list(schema.unique)).aggregate([([], "count_all")])
        dup = keys.filter(pc.greater(keys["count_all"], 1))
        if dup.num_rows:
            example = {k: dup.column(k)[0].as_py() for k in schema.unique}
            found.append(f"{dup.num_rows} duplicate key(s) on ({', '.join(schema.unique)}), e.g. {example}")
    return found


def _columns(table: pa.Table, schema: TableSchema, found: list[str]) -> dict[str, pa.ChunkedArray]:
    """The columns present with the right type (the others reported into ``found``), nulls and conversations
    checked."""
    present = set(table.column_names)
    usable: dict[str, pa.ChunkedArray] = {}
    for col in schema.columns:
        if col.name not in present:
            if not (col.nullable and col.since > 1):  # a nullable column added by a later version reads as null
                found.append(f"missing column '{col.name}' ({col.type})")
            continue
        arr = table.column(col.name)
        if not _type_ok(arr.type, col.arrow):
            found.append(f"column '{col.name}' has type {arr.type}, expected {col.type}")
            continue
        usable[col.name] = arr
        if not col.nullable and arr.null_count:
            mask = arr.is_null().to_numpy(zero_copy_only=False)
            found.append(f"column '{col.name}' has {arr.null_count} null(s), not allowed (rows {_first_rows(mask)})")
        if col.type == "conversation" and len(arr):
            found.extend(_conversation_violations(col.name, arr))
    return usable


def _value_rules(schema: TableSchema, usable: dict) -> list[str]:
    """Enum values and numeric ranges."""
    found = []
    for name, allowed in schema.enums.items():
        if name in usable:
            arr = usable[name]
            bad = pc.and_(pc.invert(pc.is_in(arr, value_set=pa.array(allowed))), arr.is_valid())
            mask = bad.to_numpy(zero_copy_only=False)
            if mask.any():
                vals = sorted({str(v) for v in pc.filter(arr, bad).to_pylist()})[:3]
                found.append(f"column '{name}' has value(s) {vals} (rows {_first_rows(mask)}), expected one of {allowed}")
    for name, (lo, hi) in schema.ranges.items():
        if name in usable:
            vals = usable[name].to_numpy(zero_copy_only=False).astype(float)
            with np.errstate(invalid="ignore"):
                bad = np.zeros(len(vals), bool)
                if lo is not None:
                    bad |= vals < lo
                if hi is not None:
                    bad |= vals > hi
            bad &= np.isfinite(vals)  # NaN/inf are the finiteness rule's to report, nulls the nullability check's
            if bad.any():
                found.append(
                    f"column '{name}' out of range [{lo if lo is not None else '-inf'}, "
                    f"{hi if hi is not None else 'inf'}] at rows {_first_rows(bad)} (e.g. {vals[bad][0]})"
                )
    return found


def _count_rules(schema: TableSchema, usable: dict) -> list[str]:
    """List lengths and indexes against a count column."""
    found = []
    for count_col, lc, n, arr in _against_counts(schema.list_lengths, usable):
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(float)
        bad = arr.is_valid().to_numpy(zero_copy_only=False) & (lengths != n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            found.append(f"column '{lc}' has {int(lengths[i])} item(s) at row {i} but {count_col} = {int(n[i])} "
                         f"({int(bad.sum())} row(s) disagree)")
    for count_col, ic, n, arr in _against_counts(schema.index_columns, usable):
        bad = arr.to_numpy(zero_copy_only=False).astype(float) >= n
        if bad.any():
            found.append(f"column '{ic}' is >= {count_col} at rows {_first_rows(bad)}")
    return found


def _against_counts(rules: dict, usable: dict):
    """(count column, other column, counts as floats, the other column) for every rule whose columns are usable."""
    for count_col, cols in rules.items():
        if count_col not in usable:
            continue
        n = usable[count_col].to_numpy(zero_copy_only=False).astype(float)
        for col in cols:
            if col in usable:
                yield count_col, col, n, usable[col]


def _conversation_violations(name: str, arr: pa.ChunkedArray) -> list[str]:
    out = []
    flat = pc.list_flatten(arr)
    if len(flat):
        roles = pc.struct_field(flat, "role")
        bad_roles = pc.invert(pc.is_in(roles, value_set=pa.array(["system", "user", "assistant", "tool"])))
        if pc.any(pc.fill_null(bad_roles, True)).as_py():
            out.append(f"column '{name}' has a turn whose role is not system/user/assistant/tool")
        if pc.struct_field(flat, "content").null_count:
            out.append(f"column '{name}' has a turn with null content")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    empty = np.nan_to_num(lengths.astype(float), nan=1) == 0
    if empty.any():
        out.append(f"column '{name}' has an empty conversation at rows {_first_rows(empty)}")
    return out


def _nonfinite_rows(arr: pa.ChunkedArray) -> np.ndarray:
    """The table row of every NaN/inf in a float or list-of-float column (empty for any other type; nulls pass)."""
    arr = arr.combine_chunks()
    rows = np.arange(len(arr))
    if (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) and pa.types.is_floating(arr.type.value_type):
        rows = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        arr = pc.list_flatten(arr)
    if not pa.types.is_floating(arr.type):
        return rows[:0]
    bad = pc.fill_null(pc.invert(pc.is_finite(arr)), False).to_numpy(zero_copy_only=False)
    return rows[bad]


def _nonfinite(table: pa.Table, schema: TableSchema) -> list[str]:
    """One message per ``finite`` column of ``schema`` in ``table`` that holds NaN/inf."""
    found = []
    ids = table.column("prompt_id") if "prompt_id" in table.column_names else None
    for col in schema.columns:
        if not col.finite or col.name not in table.column_names:
            continue
        rows = _nonfinite_rows(table.column(col.name))
        if rows.size:
            first, n = int(rows[0]), int(rows.size)
            pid = f" (prompt_id {ids[first].as_py()!r})" if ids is not None else ""
            found.append(f"column '{col.name}' has {n} non-finite value{'s' if n != 1 else ''} (NaN/inf), "
                         f"first at row {first}{pid}; expected finite numbers")
    return found


def check_finite(table: pa.Table, kind: str | TableSchema, where: str) -> None:
    """Raise one :class:`CreamError` line naming each float column that holds NaN/inf (the columns present only,
    so a partial table can be checked too)."""
    found = _nonfinite(table, schemas.get(kind) if isinstance(kind, str) else kind)
    if found:
        raise CreamError(f"{where}: " + "; ".join(found))


def check(table: pa.Table, kind: str | TableSchema, where: str) -> None:
    """Raise :func:`check_finite`'s line for NaN/inf, else :class:`SchemaError` listing every violation."""
    schema = schemas.get(kind) if isinstance(kind, str) else kind
    check_finite(table, schema, where)
    found = violations(table, schema)
    if found:
        raise SchemaError(where, found)


def conform(table: pa.Table, kind: str | TableSchema) -> pa.Table:
    """Cast a (valid) table to the exact schema: column order and types; extra columns kept after. A nullable
    column that a later schema version added (``since`` > 1) and the table lacks is filled with nulls."""
    schema = schemas.get(kind) if isinstance(kind, str) else kind
    target = schema.arrow
    cols, fields = [], []
    added = {c.name for c in schema.columns if c.nullable and c.since > 1}
    for f in target:
        if f.name in added and f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            fields.append(f)
            continue
        try:
            cols.append(table.column(f.name).cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaError(schema.name, [f"column '{f.name}' cannot be stored as {f.type}: {str(e)[:100]}"]) from None
        fields.append(f)
    for name in table.column_names:
        if name not in target.names:
            cols.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=target.metadata))


def conversation_keys(conversations: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One string per conversation: its turns' role and content, joined by separators no text holds (two
    conversations are the same exactly when their keys are equal)."""
    conv = conversations.combine_chunks() if isinstance(conversations, pa.ChunkedArray) else conversations
    turns = conv.flatten()
    text = pc.binary_join_element_wise(pc.fill_null(turns.field("role"), ""), pc.fill_null(turns.field("content"), ""),
                                       "\x1f")
    return pc.binary_join(pa.ListArray.from_arrays(pc.subtract(conv.offsets, conv.offsets[0]), text), "\x1e")


def check_pair_sides(table: pa.Table, where: str) -> None:
    """Refuse, in one line naming the first such row, a pair whose chosen and rejected are one response: the same
    ``chosen_idx``/``rejected_idx`` (where the table has both) or the same conversation (DPO's two log-ratios cancel,
    so the pair teaches nothing, and it counts in C's mean as if it did)."""
    same = np.zeros(table.num_rows, dtype=bool)
    if {"chosen_idx", "rejected_idx"} <= set(table.column_names):
        same |= pc.fill_null(pc.equal(table["chosen_idx"], table["rejected_idx"]), False).to_numpy(zero_copy_only=False)
    if {"chosen", "rejected"} <= set(table.column_names) and table.num_rows:
        keys = [conversation_keys(table[side]) for side in ("chosen", "rejected")]
        same |= pc.fill_null(pc.equal(*keys), False).to_numpy(zero_copy_only=False)
    if not same.any():
        return
    i = int(np.flatnonzero(same)[0])
    row = {c: table[c][i].as_py() for c in ("prompt_id", "chosen_idx", "rejected_idx", "chosen")
           if c in table.column_names}
    pid = f" (prompt_id {row['prompt_id']!r})" if "prompt_id" in row else ""
    if row.get("chosen_idx") is not None and row.get("chosen_idx") == row.get("rejected_idx"):
        what = f"chosen_idx = rejected_idx = {row['chosen_idx']}"
    else:
        text = " ".join(str(t.get("content")) for t in row.get("chosen") or [])
        what = f"the same text {text if len(text) <= 48 else text[:45] + '...'!r}"
    raise CreamError(f"{where}: row {i}{pid}: chosen and rejected are one response ({what}; {int(same.sum())} "
                     "pair(s) like this); expected two different responses per pair")
