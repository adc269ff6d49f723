"""Downstream evaluation (docs/algorithm.md, section 7; docs/EVALUATION.md): greedy answers to benchmark
questions, scored by extraction.

For a model M and a task with examples (x_j, a_j), j = 1 … n:

    y_j       = greedy decode of M on x_j + SUFFIX        (chat template applied, at most max_new_tokens)
    p_j       = extract(y_j)                              (option letter, or the final number for GSM8K)
    acc(task) = (1/n) · Σ_j [p_j = a_j]                   (a missing p_j counts as wrong)
    average   = (1/|tasks|) · Σ_task acc(task)            (macro: every task weighs the same, as in the paper)

Multiple-choice items are shown as ``A. …`` lines (``layouts.format_mc``), so the letters a prediction may
take are that item's own letters (3 for SIQA, 3-5 for a few ARC items); ARC's numeric labels "1".."4" were
already mapped to letters by position when loading, and a numeric answer ("Answer: 2") maps back the same way.

``--limit K`` takes the first K examples of each task **in file order** (the Hub split's order without
``--data-dir``), so every model is scored on the same K questions.

Output: an ``eval`` table folder with one part per task, written atomically as each task finishes; a rerun
into the same folder skips finished tasks, and the manifest (written last) carries the summary. Consecutive small
tasks are generated together (``task_groups``: up to two batches of questions, sorted by templated length), so a
``--limit`` of a few questions per task does not pay a whole decode per task; their parts are written when the group
finishes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

import schemas
from cream_data.tables import io
from cream_data.rewards.answers import (authors_choice, authors_correct, authors_number, extract_choice, extract_number,
                                numbers_equal)
from cream_data.errors import CreamError
from cream_data.inputs.prompts import BENCHMARKS, load_benchmark
from cream_data.progress import Progress
from cream_data.stages.eval_config import EvalConfig

NUMERIC_TASKS = frozenset({"gsm8k"})
CONFIG_FILE = "_eval_config.json"  # written before the first part: a rerun checks it resumes the same run
LETTERS = "ABCDEFGHIJ"
TASK_META = "cream.eval_task"  # key of a part's Parquet metadata: {"task", "truncated", "extractor"}
logger = logging.getLogger("cream.eval")



@dataclass(frozen=True)
class EvalSummary:
    """Per-task results (keys in ``cfg.tasks`` order) and the macro average."""

    out: Path
    model: str  # the name recorded in the table (alias, Hub id, or absolute checkpoint path)
    label: str | None
    accuracy: dict[str, float]  # mean of `correct` per task
    n: dict[str, int]  # examples per task
    correct: dict[str, int]
    extracted: dict[str, int]  # examples with a non-null prediction
    truncated: dict[str, int]  # responses cut by max_new_tokens before they ended
    average: float  # mean of the task accuracies
    tasks_run: tuple[str, ...] = ()  # evaluated in this call
    tasks_skipped: tuple[str, ...] = ()  # found finished on disk
    tokens: int = 0  # generated in this call
    seconds: float = 0.0
    generate_seconds: float = 0.0
    dtype: str = ""  # the dtype the model ran in (bf16, fp32, …); "" when nothing was evaluated in this call

    def manifest(self) -> dict:
        return {"model": self.model, "label": self.label, "accuracy": self.accuracy, "average": self.average,
                "n": self.n, "correct": self.correct, "extracted": self.extracted, "truncated": self.truncated}


# ---------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Examples:
    """One task's examples in file order: ids, prompts (suffix included), gold answers, allowed letters."""

    task: str
    ids: list[str]
    prompts: list[list[dict]]
    answers: list[str]
    letters: list[str | None] = field(default_factory=list)  # None for numeric tasks


def option_letters(question: str) -> str | None:
    """The option letters of a question laid out by ``format_mc``: "A. …", "B. …", … on their own lines.

    Found from the last line starting "A. " and the lines "B. ", "C. ", … after it in turn (option texts
    may hold newlines). ``None`` when there is no "A. " line.

    >>> option_letters("Which?\\nA. red\\nB. blue\\nC. green\\nThink step by step.")
    'ABC'
    """
    pos = question.rfind("\nA. ")
    if pos < 0:
        return None
    letters = "A"
    for ltr in LETTERS[1:]:
        pos = question.find(f"\n{ltr}. ", pos + 1)
        if pos < 0:
            break
        letters += ltr
    return letters


def task_source(task: str, data_dir: str | Path | None) -> Path | None:
    """The benchmark file of ``task`` under ``data_dir`` (checked to exist), or ``None`` for the Hub copy."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "no such folder"
        raise CreamError(f"--data-dir {data_dir}: {what}; expected a folder laid out like ../shared/data")
    path = root / BENCHMARKS[task][0]
    if not path.is_file():
        raise CreamError(f"--data-dir {data_dir}: no {BENCHMARKS[task][0]} for task {task} "
                         "(expected a folder laid out like ../shared/data)")
    return path


def load_examples(task: str, cfg: EvalConfig) -> Examples:
    """A task's first ``cfg.limit`` examples (file order) with the evaluation suffix appended."""
    source = task_source(task, cfg.data_dir)
    try:
        table = load_benchmark(task, source, limit=cfg.limit, suffix=cfg.suffix or None)
    except CreamError as e:
        if source is None:  # offline, unknown split…: the local copy is the way out
            raise CreamError(f"{e}; pass --data-dir DIR to read a local copy laid out like ../shared/data") \
                from None
        raise
    ids = table.column("prompt_id").to_pylist()
    prompts = table.column("prompt").to_pylist()
    answers = table.column("reference_answer").to_pylist()
    letters: list[str | None] = [None] * len(ids)
    if task not in NUMERIC_TASKS:
        for i, (conv, gold) in enumerate(zip(prompts, answers)):
            found = option_letters(conv[-1]["content"])
            # Every loaded item is formatted by format_mc; the fallback only guards odd option texts.
            letters[i] = found if found and gold in found else LETTERS[: max(5, LETTERS.index(gold) + 1)]
    return Examples(task, ids, prompts, answers, letters)


# ---------------------------------------------------------------------------- scoring
def score(task: str, response: str, answer: str, letters: str | None, extract: str = "cream") -> tuple[str | None, bool]:
    """``(prediction, correct)`` for one response: an option letter among ``letters``, or a number.

    ``extract="authors"`` applies the CREAM authors' rules instead (A–D only, string equality; see
    :func:`cream_data.rewards.answers.authors_choice`)."""
    if extract == "authors":
        pred = authors_number(response) if task in NUMERIC_TASKS else authors_choice(response)
        return pred, authors_correct(pred, answer)
    if task in NUMERIC_TASKS:
        pred = extract_number(response)
        return pred, numbers_equal(pred, answer)
    pred = extract_choice(response, letters or "ABCDE")
    return pred, pred is not None and pred == answer


def summarize(table: pa.Table, tasks: tuple[str, ...]) -> tuple[dict, dict, dict, dict, float]:
    """Per-task ``n``, ``correct``, ``extracted``, ``accuracy`` from an eval table, and the macro average."""
    rows = table.select(["task", "prediction", "correct"]).to_pylist()
    n = {t: 0 for t in tasks}
    correct, extracted = dict(n), dict(n)
    for r in rows:
        if r["task"] in n:
            n[r["task"]] += 1
            correct[r["task"]] += bool(r["correct"])
            extracted[r["task"]] += r["prediction"] is not None
    accuracy = {t: correct[t] / n[t] if n[t] else 0.0 for t in tasks}
    average = sum(accuracy.values()) / len(tasks) if tasks else 0.0
    return n, correct, extracted, accuracy, average


# ---------------------------------------------------------------------------- the output folder
def _check_out(out: Path, record: dict, overwrite: bool) -> None:
    """An existing folder must hold this very evaluation (same model, tasks, settings and data)."""
    from cream_data.tables.outputs import check_resume

    if not overwrite and out.exists() and not out.is_dir():
        raise CreamError(f"--out {out}: is a file; expected a folder for the eval table")
    check_resume(out, CONFIG_FILE, record["identity"], overwrite, what="an evaluation", command="cream eval")


def _data_fingerprint(examples: list[Examples]) -> str:
    import hashlib

    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.task, ex.ids, ex.prompts, ex.answers], ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- the stage
def finished_tasks(out: Path, kind: str, overwrite: bool) -> set[str]:
    """The tasks whose part is in ``out`` and reads (a rerun skips them; none under ``overwrite``). What is on disk
    decides, never the manifest: a part that cannot be read is removed first, with a warning, so its task is done
    again; the manifest is written anew at the end."""
    if not out.is_dir() or overwrite:
        return set()
    writer = io.PartWriter(out, kind)
    for note in writer.drop_unreadable():
        logger.warning(note)
    have = writer.existing(columns=["task"])
    return set(have.column("task").to_pylist()) if have is not None else set()


def is_eval_output(path: Path) -> bool:
    """What `cream eval` writes: an eval table folder (finished or being written) with its settings."""
    from cream_data.tables.outputs import has_table

    return path.is_dir() and ((path / CONFIG_FILE).is_file() or has_table(path, ("eval",)))


def evaluate(model: str, cfg: EvalConfig, out: str | Path, *, overwrite: bool = False, engine=None,
             progress: Progress | None = None) -> EvalSummary:
    """Greedy-evaluate ``model`` on ``cfg.tasks`` into the eval table folder ``out``.

    Every user mistake (unknown model path, missing data, a folder of another run or of other files) is found
    before anything is written. ``engine`` reuses a loaded sampling engine (``HfSampler``) for ``model``.
    """
    from cream_data.tables.outputs import guard, locked

    out = guard(out, "eval", is_eval_output, overwrite=overwrite, what="eval table")
    with locked(out):
        return _evaluate_locked(model, cfg, out, overwrite, engine, progress)


def _evaluate_locked(model: str, cfg: EvalConfig, out: Path, overwrite: bool, engine,
                     progress: Progress | None) -> EvalSummary:
    from cream_data.engines import models
    from cream_data.engines.base import GenerationParams

    t0 = time.perf_counter()
    ref = models.resolve(model)
    examples = [load_examples(t, cfg) for t in cfg.tasks]
    identity = {**cfg.identity(ref.name, _data_fingerprint(examples)), "model_id": models.content_id(ref)}
    record = {"stage": "eval", "identity": identity, "config": asdict(cfg), "model_path": ref.path}
    _check_out(out, record, overwrite)

    done_tasks = finished_tasks(out, "eval", overwrite)
    todo = [ex for ex in examples if ex.task not in done_tasks]
    if todo and engine is None:
        from cream_data.engines.hf_sample import HfSampler

        engine = HfSampler.load(ref, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)

    if overwrite and out.is_dir():  # all checks are behind us: clear the old table only now
        for p in list(out.glob("part-*.parquet")) + list(out.glob("_manifest*.json")):
            p.unlink()
    writer = io.PartWriter(out, "eval")
    io.atomic_write_json(out / CONFIG_FILE, record)

    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens)
    tokens, gen_seconds, truncated = 0, 0.0, {}
    for ex, responses, task_tokens, task_seconds, truncated[ex.task] in generate_answers(engine, examples, done_tasks,
                                                                                        params, cfg, progress):
        tokens, gen_seconds = tokens + task_tokens, gen_seconds + task_seconds
        # One atomic part per task, the unit of resume; it carries its own truncation count.
        meta = {"task": ex.task, "truncated": truncated[ex.task], "extractor": cfg.extract}
        io.PartWriter(out, "eval", metadata={TASK_META: meta}).write(_task_table(ex, responses, ref.name, cfg.extract))

    table = writer.existing()
    n, correct, extracted, accuracy, average = summarize(table, cfg.tasks)
    truncated = {**_part_truncation(writer), **truncated}
    truncated = {t: truncated.get(t, 0) for t in cfg.tasks}
    summary = EvalSummary(out, ref.name, cfg.label, accuracy, n, correct, extracted, truncated, average,
                          tuple(ex.task for ex in todo), tuple(t for t in cfg.tasks if t in done_tasks), tokens,
                          time.perf_counter() - t0, gen_seconds, getattr(engine, "dtype", "") if todo else "")
    writer.finish({"summary": {**summary.manifest(), "extractor": cfg.extract}, "label": cfg.label, "eval": record})
    return summary


def task_groups(examples: list[Examples], batch_size: int) -> list[list[Examples]]:
    """Consecutive tasks packed into groups of at most ``2 x batch_size`` questions (a larger task alone): a group's
    questions are batched together, so tasks of a few questions each (``--limit``) share batches instead of each
    paying a whole decode of its own, while a group is still small enough that an interruption loses little."""
    groups: list[list[Examples]] = []
    for ex in examples:
        if groups and sum(len(e.ids) for e in groups[-1]) + len(ex.ids) <= 2 * batch_size:
            groups[-1].append(ex)
        else:
            groups.append([ex])
    return groups


def generate_answers(engine, examples: list[Examples], done: set[str], params, cfg: EvalConfig,
                     progress: Progress | None = None):
    """Greedy answers of every task not in ``done``, yielded task by task in ``examples`` order as each group of
    tasks (:func:`task_groups`) finishes: ``(examples, responses, tokens, generation seconds, truncated)``.

    A group's questions are sorted by templated length into batches of ``cfg.batch_size`` (ties by task, then id);
    the plan covers the tasks in ``done`` too and a batch is generated whole, so a resumed evaluation runs exactly
    the batches of an uninterrupted one."""
    from cream_data.engines.base import plan_batches, prompt_seed

    for group in task_groups(examples, cfg.batch_size):
        todo = [ex for ex in group if ex.task not in done]
        if not todo:
            continue
        questions = [(ex, i) for ex in group for i in range(len(ex.ids))]
        keys = [f"{ex.task}\x00{ex.ids[i]}" for ex, i in questions]
        lengths = engine.prompt_lengths([ex.prompts[i] for ex, i in questions])
        answers = {ex.task: [None] * len(ex.ids) for ex in todo}
        counts = {ex.task: [0, 0, 0] for ex in todo}  # tokens, truncated, answered
        seconds = 0.0
        if progress:
            for ex in todo:
                progress(ex.task, 0, len(ex.ids), 0)
        for batch in plan_batches(keys, lengths, cfg.batch_size):
            if not any(questions[q][0].task in answers for q in batch):
                continue
            t_gen = time.perf_counter()
            # Greedy decoding ignores the seeds; they are passed so any engine gets a valid request.
            gens = engine.generate([questions[q][0].prompts[questions[q][1]] for q in batch],
                                   [prompt_seed(0, questions[q][0].ids[questions[q][1]]) for q in batch], 1, params)
            seconds += time.perf_counter() - t_gen
            batch_tokens: dict[str, int] = {}
            for q, g in zip(batch, gens):
                ex, i = questions[q]
                if ex.task not in answers:
                    continue
                answers[ex.task][i] = g[0].text
                count = counts[ex.task]
                count[0] += g[0].n_tokens
                count[1] += g[0].finish_reason == "length"
                count[2] += 1
                batch_tokens[ex.task] = batch_tokens.get(ex.task, 0) + g[0].n_tokens
            if progress:
                for task, n in batch_tokens.items():
                    progress(task, counts[task][2], len(answers[task]), n)
        total = sum(len(ex.ids) for ex in todo)
        for ex in todo:  # the group's generation time shared by questions
            yield ex, answers[ex.task], counts[ex.task][0], seconds * len(ex.ids) / total, counts[ex.task][1]


def _task_table(ex: Examples, responses: list[str | None], model: str, extract: str) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in schemas.get("eval").column_names}
    for eid, resp, gold, letters in zip(ex.ids, responses, ex.answers, ex.letters):
        pred, ok = score(ex.task, resp, gold, letters, extract)
        for k, v in zip(("example_id", "response", "prediction", "answer", "correct"), (eid, resp, pred, gold, ok)):
            cols[k].append(v)
    k = len(ex.ids)
    cols.update(model=[model] * k, task=[ex.task] * k)
    return pa.table(cols, schema=schemas.get("eval").arrow)


def _part_truncation(writer: io.PartWriter) -> dict[str, int]:
    """Truncation counts recorded in the parts' metadata (tasks finished by earlier calls too)."""
    import pyarrow.parquet as pq

    found = {}
    for part in writer.parts():
        raw = (pq.read_schema(part).metadata or {}).get(TASK_META.encode())
        if raw:
            meta = json.loads(raw)
            found[meta["task"]] = int(meta["truncated"])
    return found
