"""Prompt and SFT loaders: any source → a ``prompts`` (or ``sft``) table; deterministic T-way splits.

Sources: a JSONL / JSON / CSV / TSV / Parquet file, a local ``datasets`` folder (``save_to_disk``), a cream
table (file or folder) of the wanted kind, or a Hugging Face Hub dataset id (``name`` or ``name:config``).
The records then go through a layout (see :mod:`cream_data.inputs.layouts`), detected from the fields or named.

``prompt_id`` is the source's id when it has one, else ``sha256(canonical JSON of the prompt turns)[:16]``
(computed before any ``suffix``: the id names the question, not how it is presented). For SFT rows without
a source id the hash covers prompt and completion, so two answers to one question stay two examples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, NamedTuple

import pyarrow as pa

import schemas
from cream_data.errors import CreamError
from cream_data.settings import shown
from cream_data.inputs.layouts import LAYOUTS, Context, FieldMap, Item, Record, detect, format_mc, gsm8k_reference, mc_letter
from cream_data.inputs.records import records as _records
from cream_data.tables.validate import check, conform

__all__ = ["load_prompts", "load_sft", "split_prompts", "load_benchmark", "prompt_hash", "format_mc", "mc_letter",
           "gsm8k_reference", "FieldMap", "BENCHMARKS", "KNOWN_LAYOUTS", "PROMPT_SPLITS", "task_source", "task_layout"]

KNOWN_LAYOUTS = tuple(LAYOUTS)


class Benchmark(NamedTuple):
    """Where a benchmark task's questions are, locally (a file under a data dir laid out like ../shared/data) and on
    the Hub (``hub`` id, ``config``). ``file`` and ``split``: the evaluation split (its Hub split); ``train``: the
    train split's file (its Hub split is ``train``), the questions a run's prompts may take (``prompts.sources``)."""

    file: str
    hub: str
    config: str | None
    split: str
    train: str


# task → its evaluation and train splits, under a data dir and on the Hub. SIQA: its train file beside its
# train-labels.lst, as the original release lays them out; on the Hub lighteval/siqa, a Parquet copy of
# allenai/social_i_qa (the same rows: train 33,410, validation 1,954), whose loading script `datasets` >= 4 no longer
# runs.
BENCHMARKS = {
    "arc_easy": Benchmark("arc/ARC-Easy-Test.jsonl", "allenai/ai2_arc", "ARC-Easy", "test",
                          "arc/ARC-Easy-Train.jsonl"),
    "arc_challenge": Benchmark("arc/ARC-Challenge-Test.jsonl", "allenai/ai2_arc", "ARC-Challenge", "test",
                               "arc/ARC-Challenge-Train.jsonl"),
    "openbookqa": Benchmark("openbookqa/test.jsonl", "allenai/openbookqa", "main", "test", "openbookqa/train.jsonl"),
    "siqa": Benchmark("siqa/dev.jsonl", "lighteval/siqa", None, "validation", "siqa/train.jsonl"),
    "gsm8k": Benchmark("gsm8k/test.jsonl", "openai/gsm8k", "main", "test", "gsm8k/train.jsonl"),
}
# The splits of a task a prompts source may name: its train split (the evaluation split stays out of D_U).
PROMPT_SPLITS = ("train",)
EVAL_SPLIT = "test"  # how :func:`task_source` names a task's evaluation split (SIQA's is its dev set)


def prompt_hash(turns: list[dict]) -> str:
    """First 16 hex digits of sha256 over the canonical JSON (sorted keys, no spaces) of ``turns``."""
    canon = json.dumps(turns, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------- assembling tables
def _items(source: str, layout: str | None, fields: FieldMap | None, split: str | None, want: str
           ) -> tuple[Iterator[Item] | pa.Table, Context, str]:
    if layout is not None and layout not in LAYOUTS:
        raise CreamError(f"--layout: unknown layout {shown(layout)}; expected one of {', '.join(KNOWN_LAYOUTS)}")
    if fields and layout not in (None, "generic"):
        raise CreamError(f"--layout {layout} reads its own fields; the field flags (--prompt-field …) apply to the "
                         "generic layout only")
    recs, path, split = _records(source, split, want)
    label = str(path) if path else source
    ctx = Context(label=label, path=path, split=split, fields=fields or FieldMap())
    if isinstance(recs, pa.Table):
        return recs, ctx, "table"
    first = next(recs, None)
    if first is None:
        raise CreamError(f"{label}: no records; expected at least one")

    def chained() -> Iterator[Record]:
        yield first
        yield from recs

    if layout is None:
        layout = "generic" if fields else detect(first[1], label)
        if layout is None:
            raise CreamError(f"{label} {first[0]}: cannot tell the layout from fields "
                             f"{shown(sorted(map(str, first[1])))}; name one with --layout ({', '.join(KNOWN_LAYOUTS)}) "
                             "or map fields with --prompt-field/--answer-field")
    return LAYOUTS[layout](chained(), ctx), ctx, layout


def _source_name(ctx: Context, layout: str) -> str:
    name = ctx.path.name if ctx.path else ctx.label
    return f"{layout}:{name}" + (f"[{ctx.split}]" if ctx.split and not ctx.path else "")


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise CreamError(f"--limit {limit}: expected a positive number of rows")


def _finish(rows: dict[str, list], kind: str, label: str) -> pa.Table:
    table = pa.table(rows, schema=schemas.get(kind).arrow)
    check(table, kind, label)
    return conform(table, kind)


def load_prompts(source: str, *, layout: str | None = None, fields: FieldMap | None = None, limit: int | None = None,
                 split: str | None = None, suffix: str | None = None, dedupe: bool = False,
                 answered: bool = False) -> pa.Table:
    """A ``prompts`` table from any source (see the module docstring); the first ``limit`` prompts.

    ``suffix`` is appended to the last user turn after a newline. Two rows with the same ``prompt_id`` are an
    error naming both rows, unless ``dedupe`` keeps the first (oasst ranked pairs repeat each question by
    construction, so that layout always keeps the first). ``answered`` keeps only the rows the source gives an
    answer for, the prompts of the SFT table :func:`load_sft` reads from it (oasst ranked pairs: the questions with a
    rank-0 answer; a prompts table: the rows with a ``human_answer``).
    """
    _check_limit(limit)
    items, ctx, layout = _items(source, layout, fields, split, "prompts")
    if isinstance(items, pa.Table):
        if answered:
            items = items.filter(items.column("human_answer").is_valid())
        return items.slice(0, limit) if limit else items
    dedupe = dedupe or layout == "oasst"
    seen: dict[str, str] = {}
    rows: dict[str, list] = {"prompt_id": [], "prompt": [], "source": [], "reference_answer": [], "human_answer": []}
    src = _source_name(ctx, layout)
    row_of: dict[str, int] = {}
    for it in items:
        if answered and not (it.completion and it.completion.strip()):
            continue
        pid = it.id if it.id is not None else prompt_hash(it.turns)
        if pid in seen:
            if dedupe:  # oasst ranked pairs: the rank-0 row (the human answer) need not come first
                if rows["human_answer"][row_of[pid]] is None and it.human_answer is not None:
                    rows["human_answer"][row_of[pid]] = it.human_answer
                continue
            same = "" if it.id is not None else " (the same prompt text; pass --dedupe to keep the first)"
            raise CreamError(f"{ctx.label} {it.where}: duplicate prompt_id {shown(pid)}, already at {seen[pid]}{same}")
        seen[pid] = it.where
        turns = it.turns
        if suffix:
            turns = [dict(t) for t in turns]
            turns[-1]["content"] = f"{turns[-1]['content'].rstrip()}\n{suffix}"
        rows["prompt_id"].append(pid)
        rows["prompt"].append(turns)
        rows["source"].append(src)
        rows["reference_answer"].append(it.reference)
        rows["human_answer"].append(it.human_answer)
        row_of[pid] = len(rows["prompt_id"]) - 1
        if limit and len(rows["prompt_id"]) >= limit:
            break
    if answered and not rows["prompt_id"]:
        raise CreamError(f"{ctx.label}: none of its records has an answer (layout '{layout}'), so it gives no SFT "
                         "prompts")
    return _finish(rows, "prompts", ctx.label)


def load_sft(source: str, *, layout: str | None = None, fields: FieldMap | None = None, limit: int | None = None,
             split: str | None = None) -> pa.Table:
    """An ``sft`` table: (prompt turns, assistant completion) pairs, e.g. oasst prompt + rank-0 answer.

    Rows a layout gives no answer for (lower-ranked oasst answers, trees without a rank-0 reply) are skipped;
    a source that yields none at all is an error.
    """
    _check_limit(limit)
    items, ctx, layout = _items(source, layout, fields, split, "sft")
    if isinstance(items, pa.Table):
        return items.slice(0, limit) if limit else items
    seen: dict[str, str] = {}
    rows: dict[str, list] = {"prompt_id": [], "prompt": [], "completion": [], "source": []}
    src = _source_name(ctx, layout)
    n_items = 0
    for it in items:
        n_items += 1
        if it.completion is None:
            continue
        if not it.completion.strip():
            raise CreamError(f"{ctx.label} {it.where}: the answer is empty, expected non-empty completion text")
        completion = [{"role": "assistant", "content": it.completion}]
        pid = it.id if it.id is not None else prompt_hash(it.turns + completion)
        if pid in seen:
            raise CreamError(f"{ctx.label} {it.where}: duplicate prompt_id {shown(pid)}, already at {seen[pid]}")
        seen[pid] = it.where
        for k, v in zip(rows, (pid, it.turns, completion, src)):
            rows[k].append(v)
        if limit and len(rows["prompt_id"]) >= limit:
            break
    if not rows["prompt_id"]:
        raise CreamError(f"{ctx.label}: none of its {n_items} records has an answer for SFT (layout '{layout}'); "
                         "name the answer field with --answer-field")
    return _finish(rows, "sft", ctx.label)


def split_prompts(table: pa.Table, T: int, seed: int = 0) -> list[pa.Table]:
    """T disjoint subsets whose union is ``table``, sizes differing by at most one.

    Rows are ordered by ``sha256(f"{seed}:{prompt_id}")`` and cut into T consecutive runs; each subset keeps
    the input's row order. Membership depends only on the ids and the seed, and adding rows moves only the
    few rows near the cut points.
    """
    n = table.num_rows
    if not 1 <= T <= n:
        raise CreamError(f"--split-into {T}: expected between 1 and the number of prompts ({n})")
    ids = table.column("prompt_id").to_pylist()
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).digest())
    bounds = [round(k * n / T) for k in range(T + 1)]
    return [table.take(sorted(order[bounds[k]:bounds[k + 1]])) for k in range(T)]


def _benchmark(task: str) -> Benchmark:
    if task not in BENCHMARKS:
        raise CreamError(f"unknown task {shown(task)}; known tasks: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[task]


def task_layout(task: str) -> str:
    """The layout that reads a benchmark task's records (both ARC tasks: ``arc``)."""
    return {"arc_easy": "arc", "arc_challenge": "arc"}.get(task, task)


def task_source(task: str, split: str = "train", data_dir: str | Path | None = None) -> tuple[str, str | None]:
    """Where one split of a benchmark task is read: ``(source, split)`` for :func:`load_prompts`.

    ``split``: ``train``, or ``test`` (the split evaluation reads; SIQA's dev set). With ``data_dir`` (a folder laid
    out like ../shared/data, see :data:`BENCHMARKS`) the file there, checked to exist (split None); without, the Hub
    copy: ``NAME`` or ``NAME:CONFIG`` and the Hub's split name.
    """
    b, known = _benchmark(task), (*PROMPT_SPLITS, EVAL_SPLIT)
    if split not in known:
        raise CreamError(f"task {task}: unknown split {shown(split)}; expected {' or '.join(known)}")
    rel, hub_split = (b.train, "train") if split == "train" else (b.file, b.split)
    if data_dir is None:
        return (f"{b.hub}:{b.config}" if b.config else b.hub), hub_split
    path = Path(data_dir).expanduser() / rel
    if not path.is_file():
        raise CreamError(f"{Path(data_dir).expanduser()}: no {rel} for task {task} split {split} (expected a folder "
                         f"laid out like ../shared/data); without a data dir the Hub's {b.hub} is read")
    return str(path), None


def load_benchmark(task: str, path: str | Path | None = None, *, limit: int | None = None,
                   suffix: str | None = None) -> pa.Table:
    """A benchmark's test set as a prompts table whose every row has a reference answer.

    ``path``: a file, a data dir laid out like ``../shared/data`` (see :data:`BENCHMARKS`), or ``None`` for the
    Hub copy. MC answers are letters, GSM8K answers numbers.
    """
    _benchmark(task)
    if path is None or Path(path).is_dir():
        source, split = task_source(task, EVAL_SPLIT, path)
    else:
        source, split = str(path), None
    table = load_prompts(source, layout=task_layout(task), limit=limit, split=split, suffix=suffix)
    missing = table.column("reference_answer").null_count
    if missing:
        raise CreamError(f"{source}: {missing} of {table.num_rows} {task} items have no reference answer "
                         "(for siqa, keep the <stem>-labels.lst file beside the records)")
    return table
