"""`cream prompts SOURCE --out DIR`: a prompts (or SFT) table from a source, written as a table or as ``--split-into``
disjoint subsets (one per iteration). The command (cli/prompts.py) and the Python API (cream_data/api.py) both call
:func:`write_prompts`; the command prints what it returns."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cream_data.errors import CreamError
from cream_data.inputs.prompts_config import PromptsConfig
from cream_data.tables.io import replace_folder, staging_folder, write_table
from cream_data.tables.outputs import guard, has_table, only_entries


@dataclass(frozen=True)
class PromptsWritten:
    """What :func:`write_prompts` wrote: the whole table, its kind (prompts or sft) and the subsets written (the
    table itself without ``split_into``)."""

    table: pa.Table
    kind: str
    subsets: list[pa.Table]


def is_prompts_output(path: Path) -> bool:
    """What `cream prompts` writes: a prompts/sft table (file or folder), or a folder of ``subset-K`` tables."""
    return has_table(path, ("prompts", "sft")) or only_entries(
        path, lambda e: e.name.startswith("subset-") and has_table(e, ("prompts",)))


def write_prompts(source: str, cfg: PromptsConfig, out_dir: str | Path, *, overwrite: bool = False) -> PromptsWritten:
    """Read ``source`` by ``cfg`` and write its prompts (or SFT) table at ``out_dir``, or, with ``cfg.split_into``,
    the folders ``out_dir/subset-1`` … ``subset-T``. An ``out_dir`` holding anything but an earlier `cream prompts`
    output is refused, and so is an earlier output unless ``overwrite``."""
    from cream_data.inputs.prompts import load_prompts, load_sft, split_prompts  # looked up when called

    out_dir = Path(out_dir)
    guard(out_dir, "prompts", is_prompts_output, overwrite=overwrite, what="table")
    if out_dir.exists() and (out_dir.is_file() or any(out_dir.iterdir())) and not overwrite:
        raise CreamError(f"--out {out_dir}: holds an earlier `cream prompts` table; pass --overwrite to replace it")
    if cfg.sft:
        if cfg.split_into is not None or cfg.suffix:
            raise CreamError("--sft writes one SFT table: --split-into and --suffix do not apply")
        table = load_sft(source, layout=cfg.layout, fields=cfg.field_map(), limit=cfg.limit, split=cfg.split)
        kind = "sft"
    else:
        table = load_prompts(source, layout=cfg.layout, fields=cfg.field_map(), limit=cfg.limit, split=cfg.split,
                             suffix=cfg.suffix, dedupe=cfg.dedupe)
        kind = "prompts"
    if cfg.split_into is None:
        write_table(table, out_dir, kind)
        return PromptsWritten(table, kind, [table])
    if out_dir.suffix == ".parquet":
        raise CreamError(f"--out {out_dir}: --split-into writes a folder of subsets, not one .parquet file")
    subsets = split_prompts(table, cfg.split_into, cfg.seed)
    _write_subsets(subsets, out_dir)
    return PromptsWritten(table, kind, subsets)


def _write_subsets(subsets: list[pa.Table], out_dir: Path) -> None:
    """DIR/subset-1 … DIR/subset-T, built in a hidden folder beside DIR and renamed into place at the end."""
    staging = staging_folder(out_dir)
    try:
        for k, sub in enumerate(subsets, 1):
            write_table(sub, staging / f"subset-{k}", "prompts")
        replace_folder(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
