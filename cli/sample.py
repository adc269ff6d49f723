"""`cream sample PROMPTS --model M --n N --out DIR`: N responses per prompt, resumable and sharded."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from cli.common import log, out, parse_shard
from cli.options import Options, with_settings
from cli.progress import Bars
from cream_data.stages.sample_config import SampleConfig


@with_settings(SampleConfig)
def sample(
    prompts: Path = typer.Argument(..., help="Prompts table: a .parquet file or a table folder (from `cream prompts`)."),
    out_dir: Path = typer.Option(..., "--out", help="Output responses table folder; a rerun into it resumes."),
    settings: Options = None,
    shard: Optional[str] = typer.Option(None, "--shard", help="i/k: this process takes shard i of k (default: "
                                        "RANK/WORLD_SIZE under accelerate launch); reading the folder merges."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run with other settings in --out."),
) -> None:
    """Sample N responses per prompt from the model (step 1 of a CREAM iteration) into a responses table."""
    from cream_data.processes import write_result
    from cream_data.stages.sample import check_before_sampling, sample as run_sample

    cfg = settings.build(SampleConfig)
    check_before_sampling(prompts, cfg)
    with Bars("prompts") as bar:
        summary = run_sample(prompts, cfg, out_dir, shard=parse_shard(shard), overwrite=overwrite,
                             progress=bar.update)
    write_result("sample", summary)
    for note in summary.notes:
        log.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    where = f" (shard {summary.shard[0]}/{summary.shard[1]})" if summary.shard else ""
    reasons = ", ".join(f"{v} {k}" for k, v in summary.finish_reasons.items() if v)
    rate = summary.tokens / summary.generate_seconds if summary.generate_seconds else 0.0
    written = summary.prompts_sampled * cfg.n
    out.print(f"sampled {summary.prompts_sampled} prompts x {cfg.n} ({summary.prompts_skipped} already done){where}: "
              f"wrote {written} responses{f' ({reasons})' if reasons else ''}; {summary.rows} responses on disk; "
              f"{summary.tokens} tokens at {rate:.0f} tok/s -> {out_dir}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
