"""Standard preference datasets (TRL's layout) as cream's preference pairs: what `cream train` reads besides its own
tables.

Accepted layouts, told apart by the columns and by the first row's values (extra columns such as ``score_chosen`` or
``messages`` are ignored)::

    explicit prompt, text           prompt: str,       chosen: str,       rejected: str
    explicit prompt, message lists  prompt: [{role, content}], chosen/rejected: [{role, content}] (the answer turns)
    implicit prompt                 chosen/rejected: whole conversations [{role, content}] (no prompt column, or a
                                    text prompt beside them, as in the *_binarized datasets: it is not used)

Text becomes cream's conversational form: the prompt one user message, each answer one assistant message. An
implicit prompt is the longest run of leading messages the two conversations share (TRL's ``extract_prompt`` rule);
the rest of each, which must start with the assistant's answer, is the response. Every pair gets ``weight`` 1 (C = 1:
a foreign pair carries no consistency, so method cream trains it as plain DPO) and no stored log-probs (the reference
is computed by the starting model).

A table that carries cream's own columns (:data:`CREAM_COLUMNS`, e.g. ``weight`` or ``chosen_logp``) is cream's: it
is returned as read, and the trainer's usual checks apply to it.

Sources (:func:`read`): one data file (``.parquet``, ``.jsonl``/``.ndjson``, ``.json``, ``.csv``/``.tsv``, read by
:mod:`cream_data.inputs.records`), a ``datasets`` ``save_to_disk`` folder, or a folder of data files — a Parquet
folder, or a Hub dataset repository as ``datasets`` writes it (``data/<split>-00000-of-00001.parquet``, with or
without a ``README.md`` whose YAML ``configs`` block names each split's files); :mod:`cream_data.inputs.dataset_files`
finds the splits of such a folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from cream_data.errors import CreamError
from cream_data.inputs import dataset_files
from cream_data.inputs.layouts import Record
from cream_data.inputs.records import EXTENSIONS, records

SIDES = ("chosen", "rejected")
CREAM_COLUMNS = ("weight", "chosen_logp", "rejected_logp", "consistency", "template_hash")
LAYOUT_KEY = b"cream.source_layout"  # schema metadata of a converted table: the layout it was read in
SPLIT_KEY = b"cream.source_split"  # ... and the split read, when the source has splits
SAME_KEY = b"cream.same_pairs_left_out"  # ... and the rows left out: chosen and rejected the same answer (JSON list)
ROLES = ("system", "user", "assistant", "tool")
EXPECTED = ("expected TRL's preference layout: prompt, chosen and rejected as text or as lists of {role, content} "
            "messages, or chosen and rejected as whole conversations that begin with the shared prompt")


@dataclass(frozen=True)
class Loaded:
    """A preference dataset as cream trains on it."""

    table: pa.Table  # prompt/chosen/rejected conversations + weight 1.0; or, for cream's own columns, the table as read
    layout: str | None  # the layout recognized (see the module doc); None: cream's own table, used as it is
    split: str | None  # the split read (None: a single file)

    def note(self, label: str) -> str:
        """The log line saying what was read."""
        where = f", split {self.split}" if self.split else ""
        if self.layout is None:
            return f"{label}{where}: a table with cream's own columns ({self.table.num_rows} pairs); used as it is"
        return f"{label}: {converted_note(self.table)}"  # its layout names the split


def converted_note(table: pa.Table) -> str:
    """What a table converted by :func:`read` is, for the log: its layout, pairs, C and reference, and the rows left
    out because their chosen and rejected answers are the same (real datasets have a few ties; TRL would train on
    them with a zero gradient, cream's tables never hold one)."""
    md = table.schema.metadata or {}
    same = json.loads(md[SAME_KEY]) if SAME_KEY in md else []
    left_out = (f"; {len(same)} pair(s) left out whose chosen and rejected are the same answer "
                f"({', '.join(same[:3])}{', …' if len(same) > 3 else ''})") if same else ""
    return (f"a standard preference dataset ({layout_of(table)}): {table.num_rows} pairs, C = 1 each (plain "
            f"DPO) and reference log-probs computed by the starting model{left_out}")


def layout_of(table: pa.Table) -> str | None:
    """The layout a table returned by :func:`read` was converted from, with the split read (None: not converted)."""
    md = table.schema.metadata or {}
    if LAYOUT_KEY not in md:
        return None
    split = md.get(SPLIT_KEY)
    return md[LAYOUT_KEY].decode() + (f"; split {split.decode()}" if split else "")


def has_cream_columns(columns: Iterable[str]) -> bool:
    return any(c in CREAM_COLUMNS for c in columns)


# ---------------------------------------------------------------------------- which sources
def is_dataset_source(path: Path) -> bool:
    """A local file or folder this module reads (rather than one of cream's tables): a data file without cream's
    schema or columns, a ``save_to_disk`` folder, or a folder of data files holding no cream table."""
    if path.is_file():
        ext = path.suffix.lower()
        if ext != ".parquet":
            return ext in EXTENSIONS
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError):
            return False  # today's reader names the unreadable file
        return schemas.META_SCHEMA not in (schema.metadata or {}) and not has_cream_columns(schema.names)
    return path.is_dir() and dataset_files.is_dataset_folder(path)


def read(path: Path, split: str | None, label: str | None = None) -> Loaded:
    """The preference pairs of a local data file or dataset folder (see the module doc); ``label`` names the source
    in messages (default: the path). ``split`` picks a split of a folder (:func:`dataset_files.pick_split`); a single
    file has none."""
    label = label or str(path)
    if path.is_file():
        if split is not None:
            raise CreamError(f"--split {split}: {label} is a single data file, which has no splits (--split is for "
                             "a dataset folder, a Hub dataset id or a `cream publish` folder)")
        recs, columns = _file_records(path)
        return _loaded(recs, columns, label, None)
    if dataset_files.is_saved_dataset(path):
        recs, columns, split = dataset_files.saved_dataset_records(path, split, label, keep=("prompt", *SIDES))
        return _loaded(recs, columns, label, split)
    split, files = dataset_files.split_files(path, split, label)
    if not files:
        raise CreamError(f"{label}: split {split} lists no data files")
    first, columns = _file_records(files[0])
    if isinstance(first, pa.Table):
        return _loaded(pa.concat_tables([first, *(_file_records(f)[0] for f in files[1:])],
                                        promote_options="permissive"), columns, label, split)
    return _loaded(_chained(path, files, first), columns, label, split)


def _file_records(path: Path) -> tuple[Iterator[Record] | pa.Table, list[str] | None]:
    """(records, column names) of one data file; a Parquet file streams only the columns a pair needs (its other
    columns may be large), or is the table itself when it is cream's (schema metadata or columns)."""
    if path.suffix.lower() != ".parquet":
        recs, _, _ = records(str(path), None, "preferences")
        return recs, None
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise CreamError(f"{path}: not a readable Parquet file ({(str(e).splitlines() or [''])[0][:120]})") from None
    names = pf.schema_arrow.names
    if schemas.META_SCHEMA in (pf.schema_arrow.metadata or {}) or has_cream_columns(names):
        return pf.read(), names
    keep = [c for c in ("prompt", *SIDES) if c in names]

    def rows() -> Iterator[Record]:
        n = 0
        for batch in pf.iter_batches(columns=keep):
            for r in batch.to_pylist():
                n += 1
                yield f"row {n}", r

    return rows(), names


def _chained(folder: Path, files: list[Path], first: Iterator[Record]) -> Iterator[Record]:
    """The records of every file of a split, each named by its file (relative to ``folder``) and row."""
    for i, f in enumerate(files):
        recs = first if i == 0 else _file_records(f)[0]
        if isinstance(recs, pa.Table):  # a cream table among the files: its rows as records
            recs = ((f"row {n}", r) for n, r in enumerate(recs.to_pylist(), 1))
        rel = f.relative_to(folder).as_posix()
        yield from ((f"{rel} {where}", r) for where, r in recs)


def _loaded(recs: Iterator[Record] | pa.Table, columns: list[str] | None, label: str, split: str | None) -> Loaded:
    if isinstance(recs, pa.Table):  # cream's own table (its schema metadata or columns): as read
        return Loaded(recs, None, split)
    table, layout = convert(recs, label, columns)
    if split is not None and layout is not None:
        table = table.replace_schema_metadata({**table.schema.metadata, SPLIT_KEY: split.encode()})
    return Loaded(table, layout, split)


# ---------------------------------------------------------------------------- conversion
def convert(recs: Iterable[Record], label: str, columns: list[str] | None = None) -> tuple[pa.Table, str | None]:
    """(table, layout) from ``(where, row)`` records: cream's conversational pairs with weight 1 and the layout's
    name, or the rows as they are (layout None) when they carry cream's columns. ``columns``: the source's column
    names when known (the records may hold only those a pair needs); else the first row's fields."""
    recs = iter(recs)
    if columns is not None:
        _check_columns(columns, label)
    first = next(recs, None)
    if first is None:
        raise CreamError(f"{label}: no rows; expected at least one preference pair ({EXPECTED})")
    if columns is None:
        columns = list(first[1])
        if has_cream_columns(columns):
            return pa.Table.from_pylist([first[1]] + [r for _, r in recs]), None
        _check_columns(columns, label)
    layout = _layout(first, label)
    prompts, chosen, rejected, same = [], [], [], []
    for where, row in _chain(first, recs):
        p, c, r = _pair(where, row, label)
        if c == r:
            same.append(where)
            continue
        prompts.append(p)
        chosen.append(c)
        rejected.append(r)
    table = pa.table({"prompt": pa.array(prompts, schemas.CONVERSATION),
                      "chosen": pa.array(chosen, schemas.CONVERSATION),
                      "rejected": pa.array(rejected, schemas.CONVERSATION),
                      "weight": pa.array([1.0] * len(prompts), pa.float64())})
    if not prompts:
        raise CreamError(f"{label}: every pair's chosen and rejected are the same answer ({len(same)} rows); expected "
                         "two different answers to each prompt")
    metadata = {LAYOUT_KEY: layout.encode(), **({SAME_KEY: json.dumps(same).encode()} if same else {})}
    return table.replace_schema_metadata(metadata), layout


def _chain(first: Record, rest: Iterator[Record]) -> Iterator[Record]:
    yield first
    yield from rest


def _check_columns(columns: list[str], label: str) -> None:
    """A one-line error for columns that are not a preference layout: neither side, or one of the two missing."""
    missing = [c for c in SIDES if c not in columns]
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    if len(missing) == 2:
        raise CreamError(f"{label}: unknown layout (columns: {shown or 'none'}); {EXPECTED}")
    if missing:
        raise CreamError(f"{label}: no '{missing[0]}' column (columns: {shown}); {EXPECTED}")


def _layout(first: Record, label: str) -> str:
    """The layout's name from the first row."""
    where, row = first
    if _implicit(row):
        return "implicit prompt: chosen/rejected conversations sharing it"
    if "prompt" not in row:
        raise CreamError(f"{label} {where}: no 'prompt' column and chosen/rejected are text, so the prompt cannot be "
                         f"told apart from the answers; {EXPECTED}")
    kinds = {"text" if isinstance(row.get(c), str) else "message lists" for c in ("prompt", *SIDES)}
    return f"explicit prompt, {' and '.join(sorted(kinds))}"


def _implicit(row: dict) -> bool:
    """The prompt is inside chosen/rejected: no prompt (or a text one, as TRL's maybe_extract_prompt reads it) beside
    conversational answers."""
    answers_are_lists = isinstance(row.get("chosen"), list)
    return answers_are_lists and ("prompt" not in row or isinstance(row.get("prompt"), str))


def _pair(where: str, row: dict, label: str) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) conversations of one row."""
    if _implicit(row):
        c = _messages(row.get("chosen"), "chosen", where, label)
        r = _messages(row.get("rejected"), "rejected", where, label)
        return split_prompt(c, r, where, label)
    if "prompt" not in row:
        raise CreamError(f"{label} {where}: no 'prompt' field and chosen/rejected are text; {EXPECTED}")
    return (_side(row.get("prompt"), "prompt", "user", where, label),
            _side(row.get("chosen"), "chosen", "assistant", where, label),
            _side(row.get("rejected"), "rejected", "assistant", where, label))


def _side(value, field: str, role: str, where: str, label: str) -> list[dict]:
    """A text field as one ``role`` message, or a message list checked."""
    if isinstance(value, str):
        if field == "prompt" and not value.strip():
            raise CreamError(f"{label} {where}: field 'prompt' is empty; expected the prompt's text")
        return [{"role": role, "content": value}]
    return _messages(value, field, where, label)


def _kind(v) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            type(None): "null"}.get(type(v), type(v).__name__)


def _messages(value, field: str, where: str, label: str) -> list[dict]:
    """A non-empty list of {role, content} messages (role system/user/assistant/tool, content a string), as plain
    {role, content} dicts; a one-line error naming the row and the field otherwise."""
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else _kind(value)
        raise CreamError(f"{label} {where}: field '{field}' is {got}; expected a string or a non-empty list of "
                         "{role, content} messages")
    out = []
    for i, m in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise CreamError(f"{label} {where}: field '{name}' is {_kind(m)}; expected a {{role, content}} message")
        if m.get("role") not in ROLES:
            raise CreamError(f"{label} {where}: field '{name}.role' is {_shown(m.get('role'))}; expected one of "
                             f"{', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise CreamError(f"{label} {where}: field '{name}.content' is {_kind(m.get('content'))}; expected the "
                             "message's text as a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _shown(v) -> str:
    return f"'{v[:20]}'" if isinstance(v, str) else "missing" if v is None else _kind(v)


def split_prompt(chosen: list[dict], rejected: list[dict], where: str, label: str
                 ) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen answer, rejected answer) of two whole conversations: the prompt is the messages both begin
    with (TRL's extract_prompt rule); what follows in each must start with an assistant message."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == len(chosen) and n == len(rejected):  # one answer twice: the caller leaves the row out
        return chosen[:-1], chosen[-1:], rejected[-1:]
    if n == 0:
        raise CreamError(f"{label} {where}: chosen and rejected share no leading message, so there is no prompt; "
                         "expected both to begin with the same prompt messages")
    for side, conv in (("chosen", chosen), ("rejected", rejected)):
        if n == len(conv):
            raise CreamError(f"{label} {where}: {side} is only the shared prompt ({n} message(s)), it has no answer")
        if conv[n]["role"] != "assistant":
            raise CreamError(f"{label} {where}: chosen and rejected differ at message {n}, a {conv[n]['role']} "
                             "message; expected them to share every message up to the assistant's answer")
    return chosen[:n], chosen[n:], rejected[n:]
