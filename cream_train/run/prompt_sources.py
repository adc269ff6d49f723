"""A run's prompts D_U (the ``prompts`` section): one source, or a mix of several (``sources``), read once when the
config is loaded, so that T against the number of prompts is checked before any work; their paths are resolved
against the config file's folder like every other path of a run config.

An entry of ``sources`` is ``{source, layout?, limit?}``; or ``{sft: true, limit?}``: the prompts of the run's SFT
data D_S (``sft.data`` read with ``sft.layout`` and ``sft.limit``, its rows with an answer, each question once), as
the CREAM paper mixes them into D_U with the downstream tasks' train questions; or ``{task, split, limit?}``: those
questions, a benchmark task's train split named instead of a path (``cream_data.inputs.prompts.BENCHMARKS``), read
from the folder ``prompts.data_dir`` (laid out like ../shared/data) when it is set, else from the Hub."""

from __future__ import annotations

from pathlib import Path

from cream_data.errors import CreamError
from cream_data.settings import INT64_MAX, shown
from cream_train.run.config_paths import looks_local

ENTRY_KEYS = ("layout", "limit", "sft", "source", "split", "task")  # the keys of one entry of prompts.sources


def count_prompts(cfg, base: Path, problems: list[str]):
    """The prompts table of the run config ``cfg`` (a RunConfig), loaded once; what is wrong with it (too few
    prompts for T subsets and the probe, too few human answers for the probe, no reference answers for method
    oracle) added to ``problems``. None when it does not load (the problem says why)."""
    from cream_data.inputs.probe import answered

    try:
        table = load_prompt_sources(cfg.prompts, base, cfg.sft)
    except CreamError as e:
        problems.append(f"prompts.source{'s' if cfg.prompts.sources else ''}: {e}")
        return None
    need, probe = cfg.iterations * (cfg.prompts.per_iteration or 1), cfg.prompts.probe
    if table.num_rows - probe < need:
        beside = f" beside the {probe} of prompts.probe" if probe else ""
        problems.append(f"iterations: {cfg.iterations} disjoint subsets of {cfg.prompts.per_iteration or 1}+ prompts "
                        f"need {need} prompts{beside}, but prompts.source has {table.num_rows}")
    if probe and answered(table) < probe:
        problems.append(f"prompts.probe: {probe} probe prompts need {probe} prompts with a human_answer, but "
                        f"prompts.source has {answered(table)} (of {table.num_rows} prompts)")
    if cfg.method == "oracle" and table.num_rows and table["reference_answer"].null_count == table.num_rows:
        problems.append("method oracle: prompts.source has no reference answers (oracle needs them)")
    return table


def probe_problems(p) -> list[str]:
    """What is wrong with ``prompts.probe`` of the prompts section ``p`` on its own (the counts need the prompts:
    :func:`count_prompts`)."""
    if p.probe < 0:
        return [f"prompts.probe: got {p.probe}, expected >= 0 (the number of held-out probe prompts; 0: none)"]
    return []


def entry_problems(entry, where: str) -> list[str]:
    """What is wrong with one entry of ``prompts.sources`` (``where`` names it: ``prompts.sources[2]``)."""
    if not isinstance(entry, dict):
        return [f"{where}: got {shown(entry)}, expected a mapping {{source, layout, limit}}, {{sft: true, limit}} or "
                "{task, split, limit}"]
    problems = []
    extra = sorted(set(entry) - set(ENTRY_KEYS))
    if extra:
        problems.append(f"{where}: unknown setting(s) {shown(', '.join(map(str, extra)), quote=False)} "
                        f"(known: {', '.join(ENTRY_KEYS)})")
    if "split" in entry and "task" not in entry:
        problems.append(f"{where}.split: only with task (a source's split is prompts.split)")
    if "task" in entry:
        problems += _task_problems(entry, where)
    elif "sft" in entry:
        if entry["sft"] is not True:
            problems.append(f"{where}.sft: got {shown(entry['sft'])}, expected true (the prompts of sft.data)")
        for key in ("source", "layout"):
            if key in entry:
                problems.append(f"{where}.{key}: not with sft: true (the SFT prompts are read from sft.data with "
                                "sft.layout)")
    elif not isinstance(entry.get("source"), str):
        return problems + [f"{where}.source: missing, expected a file, folder or Hub id (or sft: true, or a task)"]
    lim = entry.get("limit")
    if lim is not None and (not isinstance(lim, int) or isinstance(lim, bool) or not 1 <= lim <= INT64_MAX):
        problems.append(f"{where}.limit: got {shown(lim)}, expected a 64-bit integer >= 1 or null")
    return problems


def _task_problems(entry: dict, where: str) -> list[str]:
    """What is wrong with a ``{task, split, limit?}`` entry's own keys."""
    from cream_data.inputs.prompts import PROMPT_SPLITS
    from cream_data.vocab import TASKS

    problems = [f"{where}.{key}: not with task (a task entry reads the task's split, from prompts.data_dir or the "
                "Hub, with the task's layout)" for key in ("source", "sft", "layout") if key in entry]
    if entry["task"] not in TASKS:
        problems.append(f"{where}.task: got {shown(entry['task'])}, expected one of {', '.join(TASKS)}")
    if "split" not in entry:
        problems.append(f"{where}.split: missing, expected {' or '.join(PROMPT_SPLITS)}")
    elif entry["split"] not in PROMPT_SPLITS:
        problems.append(f"{where}.split: got {shown(entry['split'])}, expected {' or '.join(PROMPT_SPLITS)} (a "
                        "task's evaluation split stays out of the prompts)")
    return problems


def _is_task(entry) -> bool:
    """A well-formed ``{task, split}`` entry (a known task, a split prompts may take)."""
    from cream_data.inputs.prompts import PROMPT_SPLITS
    from cream_data.vocab import TASKS

    return isinstance(entry, dict) and entry.get("task") in TASKS and entry.get("split") in PROMPT_SPLITS


def data_dir_problems(p) -> list[str]:
    """What is wrong with ``prompts.data_dir`` (of the prompts section ``p``, resolved): a folder, for task entries,
    holding each one's file."""
    from cream_data.inputs.prompts import task_source

    if not p.data_dir:
        return []
    if not Path(p.data_dir).is_dir():
        return [f"prompts.data_dir: {p.data_dir} is not a folder"]
    tasks = [(i, e) for i, e in enumerate(p.sources or ()) if _is_task(e)]
    if not tasks and not any(isinstance(e, dict) and "task" in e for e in p.sources or ()):
        return ["prompts.data_dir: set, but prompts.sources has no {task, split} entry to read from it"]
    problems = []
    for i, e in tasks:
        try:
            task_source(e["task"], e["split"], p.data_dir)
        except CreamError as err:
            problems.append(f"prompts.sources[{i}]: {err}")
    return problems


def named_sources(cfg) -> list[str]:
    """Every source the prompts section of the run config ``cfg`` reads (``sft.data`` for an ``sft: true`` entry,
    a task's file under ``prompts.data_dir`` or its Hub id; "" for an entry that names none)."""
    if not cfg.prompts.sources:
        return [cfg.prompts.source]
    return [_named(e, cfg) for e in cfg.prompts.sources
            if isinstance(e, dict) and (e.get("sft") or "task" in e or isinstance(e.get("source"), str))]


def _named(entry: dict, cfg) -> str:
    from cream_data.inputs.prompts import task_source

    if "task" in entry:
        try:
            return task_source(entry["task"], entry["split"], cfg.prompts.data_dir)[0] if _is_task(entry) else ""
        except CreamError:  # no file under data_dir (a problem of its own)
            return ""
    return cfg.sft.data if entry.get("sft") else entry["source"]


def uses_sft_prompts(cfg) -> bool:
    """Whether D_U includes the prompts of the SFT data (an ``sft: true`` entry)."""
    return any(isinstance(e, dict) and e.get("sft") for e in cfg.prompts.sources or ())


def load_prompt_sources(p, base: Path, sft=None):
    """The prompts table D_U of the prompts section ``p``: one source, or several concatenated in order (each with
    its own layout and limit; an ``sft: true`` entry reads the SFT section ``sft``'s data, a task entry the task's
    split, see the module doc).

    A prompt id found in two sources is an error naming both; ``limit`` then keeps the first K of the whole.
    """
    import pyarrow as pa

    from cream_data.inputs.prompts import load_prompts

    c = p.build()  # the prompts stage's settings (fields, split, suffix, dedupe) apply to every source
    how = {"fields": c.field_map(), "split": c.split, "suffix": c.suffix, "dedupe": c.dedupe}
    if p.sources is None:
        return load_prompts(resolved_source(base, p.source), layout=p.layout, limit=p.limit, **how)
    tables, seen = [], {}
    for entry in p.sources:
        if entry.get("sft"):  # read as the SFT stage reads it (no field map, no split), each question once
            src = resolved_source(base, sft.data)
            limits = [n for n in (entry.get("limit"), sft.limit) if n]
            t = load_prompts(src, layout=sft.layout, limit=min(limits, default=None), suffix=c.suffix, dedupe=True,
                             answered=True)
        elif "task" in entry:  # read with the task's layout, from its split (no field map)
            src, t = _task_prompts(entry, p.data_dir, suffix=c.suffix, dedupe=c.dedupe)
        else:
            src = resolved_source(base, entry["source"])
            t = load_prompts(src, layout=entry.get("layout") or p.layout, limit=entry.get("limit"), **how)
        for pid in t.column("prompt_id").to_pylist():
            if pid in seen:
                raise CreamError(f"{src}: prompt_id '{pid}' also comes from {seen[pid]} (sources must not overlap)")
            seen[pid] = src
        tables.append(t)
    table = pa.concat_tables(tables)
    return table.slice(0, p.limit) if p.limit else table


def _task_prompts(entry: dict, data_dir: str | None, *, suffix: str | None, dedupe: bool):
    """``(source, prompts table)`` of a ``{task, split, limit?}`` entry: its file under ``data_dir``, else the Hub's."""
    from cream_data.inputs.prompts import load_prompts, task_layout, task_source

    src, split = task_source(entry["task"], entry["split"], data_dir)
    try:
        return src, load_prompts(src, layout=task_layout(entry["task"]), limit=entry.get("limit"), split=split,
                                 suffix=suffix, dedupe=dedupe)
    except CreamError as e:
        if data_dir is None:  # offline, a gated or moved dataset…: a local copy is the way out
            raise CreamError(f"{e}; set prompts.data_dir to read a local copy laid out like ../shared/data") from None
        raise


def resolved_source(base: Path, path: str) -> str:
    """A source as the config names it: a local path against the config's folder ``base``, a Hub id as it is."""
    return str((base / path).resolve()) if looks_local(path) else path
