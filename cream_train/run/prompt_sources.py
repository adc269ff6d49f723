"""A run's prompts D_U (the ``prompts`` section): one source, or a mix of several (``sources``), read once when the
config is loaded, so that T against the number of prompts is checked before any work; their paths are resolved
against the config file's folder like every other path of a run config.

An entry of ``sources`` is ``{source, layout?, limit?}``, or ``{sft: true, limit?}``: the prompts of the run's SFT
data D_S (``sft.data`` read with ``sft.layout`` and ``sft.limit``, its rows with an answer, each question once), as
the CREAM paper mixes them into D_U with the downstream tasks' train questions."""

from __future__ import annotations

from pathlib import Path

from cream_data.errors import CreamError
from cream_data.settings import INT64_MAX, shown
from cream_train.run.config_paths import looks_local

ENTRY_KEYS = ("layout", "limit", "sft", "source")  # the keys of one entry of prompts.sources


def count_prompts(cfg, base: Path, problems: list[str]):
    """The prompts table of the run config ``cfg`` (a RunConfig), loaded once; what is wrong with it (too few
    prompts for T subsets, no reference answers for method oracle) added to ``problems``. None when it does not
    load (the problem says why)."""
    try:
        table = load_prompt_sources(cfg.prompts, base, cfg.sft)
    except CreamError as e:
        problems.append(f"prompts.source{'s' if cfg.prompts.sources else ''}: {e}")
        return None
    need = cfg.iterations * (cfg.prompts.per_iteration or 1)
    if table.num_rows < need:
        problems.append(f"iterations: {cfg.iterations} disjoint subsets of {cfg.prompts.per_iteration or 1}+ prompts "
                        f"need {need} prompts, but prompts.source has {table.num_rows}")
    if cfg.method == "oracle" and table.num_rows and table["reference_answer"].null_count == table.num_rows:
        problems.append("method oracle: prompts.source has no reference answers (oracle needs them)")
    return table


def entry_problems(entry, where: str) -> list[str]:
    """What is wrong with one entry of ``prompts.sources`` (``where`` names it: ``prompts.sources[2]``)."""
    if not isinstance(entry, dict):
        return [f"{where}: got {shown(entry)}, expected a mapping {{source, layout, limit}} or {{sft: true, limit}}"]
    problems = []
    extra = sorted(set(entry) - set(ENTRY_KEYS))
    if extra:
        problems.append(f"{where}: unknown setting(s) {shown(', '.join(map(str, extra)), quote=False)} "
                        f"(known: {', '.join(ENTRY_KEYS)})")
    if "sft" in entry:
        if entry["sft"] is not True:
            problems.append(f"{where}.sft: got {shown(entry['sft'])}, expected true (the prompts of sft.data)")
        for key in ("source", "layout"):
            if key in entry:
                problems.append(f"{where}.{key}: not with sft: true (the SFT prompts are read from sft.data with "
                                "sft.layout)")
    elif not isinstance(entry.get("source"), str):
        return problems + [f"{where}.source: missing, expected a file, folder or Hub id (or sft: true)"]
    lim = entry.get("limit")
    if lim is not None and (not isinstance(lim, int) or isinstance(lim, bool) or not 1 <= lim <= INT64_MAX):
        problems.append(f"{where}.limit: got {shown(lim)}, expected a 64-bit integer >= 1 or null")
    return problems


def named_sources(cfg) -> list[str]:
    """Every source the prompts section of the run config ``cfg`` reads (``sft.data`` for an ``sft: true`` entry)."""
    if not cfg.prompts.sources:
        return [cfg.prompts.source]
    return [cfg.sft.data if e.get("sft") else e["source"] for e in cfg.prompts.sources
            if isinstance(e, dict) and (e.get("sft") or isinstance(e.get("source"), str))]


def uses_sft_prompts(cfg) -> bool:
    """Whether D_U includes the prompts of the SFT data (an ``sft: true`` entry)."""
    return any(isinstance(e, dict) and e.get("sft") for e in cfg.prompts.sources or ())


def load_prompt_sources(p, base: Path, sft=None):
    """The prompts table D_U of the prompts section ``p``: one source, or several concatenated in order (each with
    its own layout and limit; an ``sft: true`` entry reads the SFT section ``sft``'s data, see the module doc).

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


def resolved_source(base: Path, path: str) -> str:
    """A source as the config names it: a local path against the config's folder ``base``, a Hub id as it is."""
    return str((base / path).resolve()) if looks_local(path) else path
