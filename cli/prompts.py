"""`cream prompts SOURCE --out DIR`: a prompts (or SFT) table from a file, a datasets folder or a Hub id."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from cli.common import out
from cli.options import Options, with_settings
from cream_data.inputs.prompts_config import PromptsConfig


@with_settings(PromptsConfig)
def prompts(
    source: str = typer.Argument(..., help="JSONL/JSON/CSV/TSV/Parquet file, a `datasets` folder, a cream table, "
                                           "or a Hub dataset id (NAME or NAME:CONFIG)."),
    out_dir: Path = typer.Option(..., "--out", help="Output table folder (or a .parquet file without --split-into)."),
    settings: Options = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `cream prompts` output at --out "
                                   "(never a folder or file of anything else)."),
) -> None:
    """Build a prompts table (conversational prompts, stable ids, reference answers) from a source."""
    from cream_data.errors import CreamError
    from cream_data.tables.io import write_table
    from cream_data.tables.outputs import guard
    from cream_data.inputs.prompts import load_prompts, load_sft, split_prompts

    cfg = settings.build(PromptsConfig)
    guard(out_dir, "prompts", is_prompts_output, overwrite=overwrite, what="table")
    if out_dir.exists() and (out_dir.is_file() or any(out_dir.iterdir())) and not overwrite:
        raise CreamError(f"--out {out_dir}: holds an earlier `cream prompts` table; pass --overwrite to replace it")
    sft, split_into = cfg.sft, cfg.split_into
    if sft:
        if split_into is not None or cfg.suffix:
            raise CreamError("--sft writes one SFT table: --split-into and --suffix do not apply")
        table = load_sft(source, layout=cfg.layout, fields=cfg.field_map(), limit=cfg.limit, split=cfg.split)
        kind = "sft"
    else:
        table = load_prompts(source, layout=cfg.layout, fields=cfg.field_map(), limit=cfg.limit, split=cfg.split,
                             suffix=cfg.suffix, dedupe=cfg.dedupe)
        kind = "prompts"
    if split_into is None:
        write_table(table, out_dir, kind)
        subsets = [table]
    else:
        if out_dir.suffix == ".parquet":
            raise CreamError(f"--out {out_dir}: --split-into writes a folder of subsets, not one .parquet file")
        subsets = split_prompts(table, split_into, cfg.seed)
        _write_subsets(subsets, out_dir)
    what = f"{table.num_rows} {'SFT examples' if sft else 'prompts'}"
    if not sft:
        n_ref = table.num_rows - table.column("reference_answer").null_count
        what += f" ({n_ref} with reference answers)"
    where = f"{len(subsets)} subsets of {', '.join(str(s.num_rows) for s in subsets)} in {out_dir}" \
        if split_into is not None else str(out_dir)
    out.print(f"wrote {what} from {table.column('source')[0].as_py() if table.num_rows else source} to {where}",
              highlight=False)


def is_prompts_output(path: Path) -> bool:
    """What `cream prompts` writes: a prompts/sft table (file or folder), or a folder of ``subset-K`` tables."""
    from cream_data.tables.outputs import has_table, only_entries

    return has_table(path, ("prompts", "sft")) or only_entries(
        path, lambda e: e.name.startswith("subset-") and has_table(e, ("prompts",)))


def _write_subsets(subsets: list, out_dir: Path) -> None:
    """DIR/subset-1 … DIR/subset-T, built in a hidden folder beside DIR and renamed into place at the end."""
    from cream_data.tables.io import replace_folder, staging_folder, write_table

    staging = staging_folder(out_dir)
    try:
        for k, sub in enumerate(subsets, 1):
            write_table(sub, staging / f"subset-{k}", "prompts")
        replace_folder(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def register(app: typer.Typer) -> None:
    app.command("prompts")(prompts)
