"""`cream prompts SOURCE --out DIR`: a prompts (or SFT) table from a file, a datasets folder or a Hub id."""

from __future__ import annotations

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
    from cream_data.stages.prompts import write_prompts

    cfg = settings.build(PromptsConfig)
    written = write_prompts(source, cfg, out_dir, overwrite=overwrite)
    table, sft, subsets = written.table, cfg.sft, written.subsets
    what = f"{table.num_rows} {'SFT examples' if sft else 'prompts'}"
    if not sft:
        n_ref = table.num_rows - table.column("reference_answer").null_count
        what += f" ({n_ref} with reference answers)"
    where = f"{len(subsets)} subsets of {', '.join(str(s.num_rows) for s in subsets)} in {out_dir}" \
        if cfg.split_into is not None else str(out_dir)
    out.print(f"wrote {what} from {table.column('source')[0].as_py() if table.num_rows else source} to {where}",
              highlight=False)


def register(app: typer.Typer) -> None:
    app.command("prompts")(prompts)
