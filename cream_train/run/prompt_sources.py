"""A run's prompts D_U (the ``prompts`` section): one source, or a mix of several (``sources``), read once when the
config is loaded, so that T against the number of prompts is checked before any work; their paths are resolved
against the config file's folder like every other path of a run config."""

from __future__ import annotations

from pathlib import Path

from cream_data.errors import CreamError
from cream_train.run.config_paths import looks_local


def count_prompts(cfg, base: Path, problems: list[str]):
    """The prompts table of the run config ``cfg`` (a RunConfig), loaded once; what is wrong with it (too few
    prompts for T subsets, no reference answers for method oracle) added to ``problems``. None when it does not
    load (the problem says why)."""
    try:
        table = load_prompt_sources(cfg.prompts, base)
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


def load_prompt_sources(p, base: Path):
    """The prompts table D_U of the prompts section ``p``: one source, or several concatenated in order (each with
    its own layout and limit).

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
