"""`cream sample PROMPTS --model M --n N --out DIR`: N responses per prompt, resumable and sharded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out, parse_shard
from cli.options import Options, with_settings
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
    from cream_data.engines.models import check_device
    from cream_data.stages.sample import sample as run_sample

    cfg = settings.build(SampleConfig)
    check_device(cfg.device)
    with _Progress() as bar:
        summary = run_sample(prompts, cfg, out_dir, shard=parse_shard(shard), overwrite=overwrite,
                             progress=bar.update)
    where = f" (shard {summary.shard[0]}/{summary.shard[1]})" if summary.shard else ""
    reasons = ", ".join(f"{v} {k}" for k, v in summary.finish_reasons.items() if v)
    rate = summary.tokens / summary.generate_seconds if summary.generate_seconds else 0.0
    written = summary.prompts_sampled * cfg.n
    out.print(f"sampled {summary.prompts_sampled} prompts x {cfg.n} ({summary.prompts_skipped} already done){where}: "
              f"wrote {written} responses{f' ({reasons})' if reasons else ''}; {summary.rows} responses on disk; "
              f"{summary.tokens} tokens at {rate:.0f} tok/s -> {out_dir}", highlight=False)


class _Progress:
    """A rich progress bar on stderr with prompts/s and generated tokens/s (only on a terminal: elsewhere even a
    transient bar leaves an empty line behind)."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rates]}"), TimeElapsedColumn(), console=log,
                                  transient=True, disable=not log.is_terminal)
        self._progress.__enter__()
        self._task = None
        self._tokens = 0
        self._start_done = 0
        return self

    def update(self, done: int, total: int, tokens: int) -> None:
        if self._task is None:
            self._t0, self._start_done = time.perf_counter(), done
            self._task = self._progress.add_task("sample", total=total, completed=done, rates="")
            return
        self._tokens += tokens
        dt = max(time.perf_counter() - self._t0, 1e-9)
        rates = f"{(done - self._start_done) / dt:.2f} prompts/s  {self._tokens / dt:.0f} tok/s"
        self._progress.update(self._task, completed=done, rates=rates)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
