"""The labeling half of cream as Python functions, for notebooks and scripts (docs/API.md).

    from cream_data import api

    p = api.prompts("gsm8k/train.jsonl", out="work/prompts", limit=8)
    s = api.sample(p.out, out="work/responses", model="smollm2-135m-instruct", n=4, max_new_tokens=64)
    lab = api.label(s.out, out="work/labeled", model="smollm2-135m-instruct")
    lab.preferences                      # a pyarrow Table (.to_pandas(), polars.from_arrow(...))
    api.sql("work", "SELECT avg(weight) FROM preferences")

Each function does what one `cream` command does. Its settings are the command's flags written as keyword arguments
(``max_new_tokens=64`` for ``--max-new-tokens 64``; TRL's names too, ``learning_rate`` for ``lr``), and it builds from
them the same settings object the command builds (the stage's settings dataclass: the same defaults and the same
checks), so a bad value raises the command's :class:`~cream_data.errors.CreamError` with the keyword in the place of
the flag: ``top_p: got 3.0, expected a value in (0, 1]``. Then it calls the same library function as the command. It
returns a small frozen result: the output path(s) and the tables as pyarrow Tables, each read when first asked for.
Nothing is printed; the command's one-line summary is in the result's ``summary``.

Importing this module imports neither torch nor transformers: each function imports what it runs.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, fields as dataclass_fields
from functools import cached_property
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pyarrow as pa

from cream_data.inputs.prompts_config import PromptsConfig
from cream_data.settings import SettingsError, canonical_keys, coerce, default_of, joined, type_name, user_fields
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.label_config import LabelConfig
from cream_data.stages.sample_config import SampleConfig

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------- settings from keyword arguments
def settings_from(cls, given: dict[str, Any], *, elsewhere: dict[str, str] | None = None, **owned):
    """``cls`` (a stage's settings dataclass) from a function's keyword arguments ``given`` and the values the
    function owns (``owned``, e.g. ``model``), checked as the command checks its flags, every problem in one
    CreamError whose problems each start with the keyword: an unknown keyword (with the closest setting), a setting
    of another class (``elsewhere``: name → why, ``"only with stage sft"``), a value of the wrong type, and every
    rule of ``cls``. A path may be a :class:`~pathlib.Path`; a list setting takes a list or a comma-separated
    string, as its flag does."""
    from cream_data.config_yaml import kind_of
    from cream_data.errors import CreamError

    hints, elsewhere = get_type_hints(cls), elsewhere or {}
    raw, unknown = canonical_keys({k: v for k, v in given.items() if k not in elsewhere},
                                  {f.name for f in user_fields(cls)} - set(owned))
    problems = [(name, elsewhere[name]) for name in sorted(given) if name in elsewhere]
    values, mistyped = {}, False
    for name, value in raw.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and _is_list(hints[name]):
            value = tuple(t.strip() for t in value.split(",") if t.strip())
        try:
            values[name] = coerce(value, hints[name])
        except TypeError:
            problems.append((name, f"got {kind_of(value)}, expected {type_name(hints[name])}"))
            mistyped = True
    if unknown:
        raise CreamError(joined(unknown + [f"{name}: {text}" for name, text in problems]))
    config = None
    if not mistyped:  # built, as the command builds it even beside a setting of another class
        try:
            config = cls(**values, **owned)
        except SettingsError as e:
            problems += e.keyed
    if problems:
        raise SettingsError("", problems, names={f.name for f in dataclass_fields(cls)} | set(elsewhere))
    return config


def _is_list(hint) -> bool:
    return any(get_origin(h) is tuple for h in (hint, *get_args(hint)))


def settings_doc(*classes) -> str:
    """The settings of ``classes`` as a docstring's list: ``name (default): help``, one a line."""
    seen, lines = set(), []
    for cls in classes:
        for f in user_fields(cls):
            if f.name not in seen:
                seen.add(f.name)
                default = default_of(f)
                shown = "required" if default is MISSING or default == "" else repr(default)
                lines.append(f"    {f.name} ({shown}): {f.metadata['help']}")
    return "\n".join(lines)


def _documented(*classes):
    """Append the settings of ``classes`` to the decorated function's docstring (``help(api.sample)`` lists them)."""
    def wrap(fn):
        fn.__doc__ = (fn.__doc__ or "") + "\n\n    Settings (keyword arguments):\n\n" + settings_doc(*classes) + "\n"
        return fn
    return wrap


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PromptsResult:
    """What :func:`prompts` wrote: ``out`` (a table, or a folder of ``subset-K`` tables), ``kind`` (prompts or
    sft), the whole ``table`` and each subset's folder (``[out]`` without ``split_into``)."""

    out: Path
    kind: str
    table: pa.Table
    subsets: tuple[Path, ...]


@dataclass(frozen=True)
class SampleResult:
    """What :func:`sample` wrote: the responses table folder ``out`` and the stage's summary (prompts sampled and
    skipped, tokens, finish reasons, ``notes``: the warnings `cream sample` prints)."""

    out: Path
    summary: Any  # cream_data.stages.sample.SampleSummary

    @cached_property
    def responses(self) -> pa.Table:
        return read(self.out, "responses")


@dataclass(frozen=True)
class LabelResult:
    """What :func:`label` wrote into ``out``: its scores and preferences tables (``scores``: None after re-pairing
    into another folder), the labeling's ``summary`` (None when re-pairing) and the ``pairing`` summary (pairs,
    skips by reason, C mean/median/std; None while other shards are still missing)."""

    out: Path
    summary: Any  # cream_data.stages.label.LabelSummary | None
    pairing: Any  # cream_data.rewards.pairing.PairingSummary | None

    @cached_property
    def preferences(self) -> pa.Table:
        return read(self.out / "preferences", "preferences")

    @cached_property
    def scores(self) -> pa.Table | None:
        return read(self.out / "scores", "scores") if (self.out / "scores").exists() else None


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` wrote: the eval table folder ``out`` and the summary (accuracy per task, average)."""

    out: Path
    summary: Any  # cream_data.stages.evaluate.EvalSummary

    @cached_property
    def table(self) -> pa.Table:
        return read(self.out, "eval")


@dataclass(frozen=True)
class InspectResult:
    """What :func:`inspect` found: ``kind`` (run or labeled), the report as data (``report``: the dict that
    report.json / summary.json hold), its Markdown and the files written (name → path)."""

    path: Path
    kind: str
    report: dict
    markdown: str
    files: dict[str, Path]


# ---------------------------------------------------------------------------- the stages
@_documented(PromptsConfig)
def prompts(source: PathLike, *, out: PathLike, overwrite: bool = False, **settings) -> PromptsResult:
    """`cream prompts SOURCE --out OUT`: a prompts table (or, ``sft=True``, an SFT table) from a JSONL/JSON/CSV/
    TSV/Parquet file, a `datasets` folder, a cream table or a Hub dataset id; with ``split_into=T``, the disjoint
    subsets OUT/subset-1 … OUT/subset-T. ``overwrite`` replaces an earlier `cream prompts` output at ``out``."""
    from cream_data.stages.prompts import write_prompts

    cfg = settings_from(PromptsConfig, settings)
    out = Path(out)
    written = write_prompts(os.fspath(source), cfg, out, overwrite=overwrite)
    folders = (out,) if cfg.split_into is None else tuple(out / f"subset-{k}" for k in range(1, cfg.split_into + 1))
    return PromptsResult(out, written.kind, written.table, folders)


@_documented(SampleConfig)
def sample(prompts: PathLike | pa.Table, *, out: PathLike, overwrite: bool = False,
           shard: tuple[int, int] | None = None, progress=None, **settings) -> SampleResult:
    """`cream sample PROMPTS --out OUT --model M`: ``n`` responses per prompt (a prompts table's path, or the Table
    itself) into the responses table folder ``out``; a rerun into it resumes. ``shard=(i, k)``: this process takes
    part i of k. ``progress(what, done, total, extra)``: called as prompts finish."""
    from cream_data.stages.sample import check_before_sampling, sample as run_sample

    cfg = settings_from(SampleConfig, settings)
    source = prompts if isinstance(prompts, pa.Table) else Path(prompts)
    check_before_sampling(source, cfg)
    summary = run_sample(source, cfg, Path(out), shard=shard, overwrite=overwrite, progress=progress)
    return SampleResult(Path(out), summary)


@_documented(LabelConfig)
def label(responses: PathLike, *, out: PathLike, model: str | None = None, scores: PathLike | None = None,
          shard: tuple[int, int] | None = None, log=None, progress=None, **settings) -> LabelResult:
    """`cream label RESPONSES --out OUT --model M`: score the responses with M_t (and ``prev_model`` M_{t-1}, the
    judge, a reward model, the oracle), rank them, measure the consistency C and write OUT/scores and
    OUT/preferences. ``scores=DIR`` instead pairs DIR's stored scores again (another ``consistency``, ``scope``,
    ``pair_policy``, …) without loading a model, into ``out``. ``log(message)``: the stage's notes."""
    from cream_data.stages.label import check_model_or_scores, label as run_label, pair_again

    check_model_or_scores(model, scores)
    cfg = settings_from(LabelConfig, settings, model=os.fspath(model) if model else "")
    out = Path(out)
    if scores is not None:
        return LabelResult(out, None, pair_again(Path(responses), Path(scores), cfg, out))
    summary = run_label(Path(responses), cfg, out, shard=shard, log=log, progress=progress)
    return LabelResult(out, summary, summary.pairing)


@_documented(EvalConfig)
def evaluate(model: PathLike, *, out: PathLike, overwrite: bool = False, progress=None, **settings) -> EvalResult:
    """`cream eval --model M --out OUT`: greedy accuracy on the benchmark ``tasks`` (ARC-Easy/Challenge,
    OpenBookQA, SIQA, GSM8K) into the eval table folder ``out``; a rerun into it skips finished tasks."""
    from cream_data.stages.evaluate import evaluate as run_eval

    cfg = settings_from(EvalConfig, settings)
    summary = run_eval(os.fspath(model), cfg, Path(out), overwrite=overwrite, progress=progress)
    return EvalResult(Path(out), summary)


# ---------------------------------------------------------------------------- reports, queries, tables
def inspect(path: PathLike, *, out: PathLike | None = None) -> InspectResult:
    """`cream inspect PATH [--out DIR]`: the iteration report of a run directory (accuracy per model and task,
    ranking consistency, pairs per iteration, scorer agreement), or the summary of a labeled folder (pairs, skips,
    C, margins, rewards per scorer, agreement). Writes its Markdown, JSON and PNG plots into ``out`` (default
    RUN/report, or PATH/inspect) and returns the report as data. To compute a run's report without writing
    anything, :func:`report`."""
    from cream_data.reports import run_report
    from cream_data.tables.outputs import guard

    path = Path(path)
    if out is not None:
        guard(Path(out), "inspect", run_report.is_report_output, what="report folder")
    if run_report.is_run_dir(path):
        written = run_report.write_run_report(path, out)
        return InspectResult(path, "run", written.report, written.markdown, written.files)
    from cream_data.reports.inspect import inspect_folder, to_markdown

    found = inspect_folder(path, out)
    if found.unwritten:
        from cream_data.errors import CreamError

        raise CreamError(f"{out or path}: {found.unwritten_line()}")
    return InspectResult(path, "labeled", found.summary, to_markdown(found.summary), dict(found.files))


def report(run: PathLike) -> dict:
    """The iteration report of a run directory as data (what RUN/report/report.json holds; nothing is written):
    ``accuracy`` (per model, per task, with Wilson intervals), ``consistency`` (Kendall, C, Spearman, TopOrder per
    iteration), ``pairs`` (pairs and skips per iteration), ``harness``, ``agreement``, ``tasks``, ``method``, ``T``."""
    from cream_data.reports.run_report import run_report

    return run_report(Path(run))


def sql(path: PathLike, query: str, *, limit: int | None = None) -> pa.Table:
    """`cream sql PATH "SELECT …"`: one read-only DuckDB statement over every table under ``path`` (a run
    directory, a table folder or a Parquet file), the whole result as an Arrow table (at most ``limit`` rows). The
    views are named by table kind (prompts, responses, scores, preferences, eval, sft); a run's tables of one kind
    form one view with an ``iteration`` column, and ``table_path`` says which table each row came from."""
    from cream_data.tables.sql import query as run_query

    return run_query(Path(path), query, limit=limit)[0]


def browse(source: PathLike, *, out: PathLike = "pairs.html"):
    """`cream browse SOURCE --out FILE`: one self-contained HTML page of the pairs of ``source`` (a run directory, a
    `cream label` folder or a preferences table), to open in a browser. Returns
    :class:`cream_data.reports.browse.BrowseResult`: ``out``, ``pairs`` (how many), ``bytes`` (the file's size)."""
    from cream_data.reports.browse import browse as write_browser

    return write_browser(Path(source), Path(out))


def read(path: PathLike, kind: str | None = None, *, columns: list[str] | None = None) -> pa.Table:
    """Any cream table (a Parquet file or a folder of parts: prompts, sft, responses, scores, preferences, eval),
    checked against its schema (``kind``: the kind expected; by default the one its metadata names)."""
    from cream_data.tables.io import read_table

    return read_table(Path(path), kind, columns=columns)


def publish(source: PathLike, *, repo_id: str, dry_run: bool = False, private: bool = False,
            out: PathLike | None = None, license: str | None = None, exclude=(), allow_unfinished: bool = False):
    """`cream publish SOURCE --repo-id OWNER/NAME`: a Hugging Face dataset repository folder (one split per
    iteration; preferences, scores and responses; a card with lineage and statistics) built at ``out`` and uploaded,
    or only built with ``dry_run=True`` (``out`` by default a new folder beside SOURCE). Returns
    :class:`cream_data.publish.hub.Published`: ``folder``, ``files`` (path, bytes), ``url`` (None for a dry run),
    ``warning``."""
    from cream_data.publish.hub import publish as run_publish

    return run_publish(Path(source), repo_id, dry_run=dry_run, private=private, out=_path(out), license=license,
                       exclude=tuple(Path(e) for e in exclude), allow_unfinished=allow_unfinished)
