"""`cream eval --model M --tasks … [--limit K] [--data-dir DIR] --out DIR`: greedy benchmark accuracy;
`cream eval --model M --harness TASKS --out DIR`: the same benchmarks through lm-evaluation-harness."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out

ALL_TASKS = "arc_easy,arc_challenge,openbookqa,siqa,gsm8k"  # = cream_data.stages.evaluate.TASKS (kept light: no import)


def eval_cmd(
    model: str = typer.Option(..., "--model", help="Model: checkpoint folder, Hub id, or smollm2-135m-instruct."),
    out_dir: Path = typer.Option(..., "--out", help="Output eval table folder; a rerun into it skips finished tasks."),
    tasks: str = typer.Option(ALL_TASKS, "--tasks", help="Comma-separated tasks."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate the first K examples of each task, in file "
                                        "order (the same K for every model)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Read the benchmarks from a local folder laid "
                                            "out like ../shared/data instead of the Hugging Face Hub."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="Cap on generated tokens per answer (512 leaves "
                                       "room for step-by-step reasoning; lower it for a quick CPU look, at the cost "
                                       "of answers cut before 'Answer:')."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generate call (length-sorted)."),
    label: Optional[str] = typer.Option(None, "--label", help="Display name in reports, e.g. M1."),
    device: Optional[str] = typer.Option(None, "--device", help="Torch device (default cuda if available)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an evaluation with other settings in --out."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code."),
    extract: str = typer.Option("cream", "--extract", help="Answer extraction: cream (robust: last 'Answer:' "
                                "marker, the item's own option letters, numbers compared as numbers) or authors "
                                "(the CREAM authors' rules, flaws included, to set numbers beside the paper's; "
                                "see docs/EVALUATION.md)."),
    harness: Optional[str] = typer.Option(None, "--harness", help="Run these comma-separated tasks through "
                                          "lm-evaluation-harness instead (its prompts and metrics: acc, acc_norm, "
                                          "exact_match); --limit, --data-dir, --batch-size, --device apply. Needs "
                                          "`pip install 'cream[harness]'`."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", help="--harness: worked examples before each "
                                              "question (default: each task's own, 0; 5 for gsm8k)."),
    engine: str = typer.Option("hf", "--engine", help="--harness: the harness's model backend, hf or vllm (GPU)."),
) -> None:
    """Greedy accuracy on ARC-Easy/Challenge, OpenBookQA, SIQA (option letter) and GSM8K (final number)."""
    if harness is not None:
        from cream_data.stages.harness import HarnessConfig
        from cream_data.errors import CreamError

        if tasks != ALL_TASKS:
            raise CreamError("--tasks names the paper-protocol tasks; with --harness name the tasks there "
                             "(--harness arc_easy,gsm8k)")
        hcfg = HarnessConfig(tasks=tuple(t.strip() for t in harness.split(",") if t.strip()), num_fewshot=num_fewshot,
                             limit=limit, data_dir=None if data_dir is None else str(data_dir), batch_size=batch_size,
                             device=device, engine=engine, label=label, trust_remote_code=trust_remote_code)
        return _harness(model, hcfg, out_dir, overwrite)
    from cream_data.stages.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), limit=limit,
                     data_dir=None if data_dir is None else str(data_dir), max_new_tokens=max_new_tokens,
                     batch_size=batch_size, label=label, device=device, trust_remote_code=trust_remote_code,
                     extract=extract)
    with _Progress() as bar:
        summary = evaluate(model, cfg, out_dir, overwrite=overwrite, progress=bar.update)
    out.print(results_table(summary))
    skipped = f" ({', '.join(summary.tasks_skipped)} already done)" if summary.tasks_skipped else ""
    rate = summary.tokens / summary.generate_seconds if summary.generate_seconds else 0.0
    out.print(f"evaluated {summary.model}{skipped}: {summary.tokens} tokens at {rate:.0f} tok/s in "
              f"{summary.seconds:.1f} s -> {out_dir}", highlight=False)


def _harness(model: str, cfg, out_dir: Path, overwrite: bool) -> None:
    """`cream eval --harness`: lm-eval's own progress bars and a line per task on stderr, the table at the end."""
    from cream_data.stages.harness import evaluate_harness

    summary = evaluate_harness(model, cfg, out_dir, overwrite=overwrite, log=lambda m: log.print(m, highlight=False))
    out.print(harness_table(summary))
    skipped = f" ({', '.join(summary.tasks_skipped)} already done)" if summary.tasks_skipped else ""
    out.print(f"evaluated {summary.model} with lm-eval {summary.version}{skipped} in {summary.seconds:.1f} s "
              f"-> {out_dir}", highlight=False)


def harness_table(summary):
    """lm-evaluation-harness metrics per task (percent ± standard error) as a rich table."""
    from rich.table import Table

    title = f"{summary.label + ': ' if summary.label else ''}{summary.model} (lm-evaluation-harness)"
    table = Table(title=title, title_justify="left")
    for name, justify in (("task", "left"), ("source", "left"), ("shots", "right"), ("n", "right"),
                          ("metric", "left"), ("value", "right"), ("± stderr", "right")):
        table.add_column(name, justify=justify)
    for r in summary.rows:
        metric = r["metric"] if r["filter"] == "none" else f"{r['metric']} ({r['filter']})"
        stderr = "" if r["stderr"] is None else f"{100 * r['stderr']:.2f}"
        table.add_row(r["task"], r["source"], str(r["num_fewshot"]), str(r["n"]), metric, f"{100 * r['value']:.2f}",
                      stderr)
    return table


def results_table(summary):
    """Per-task accuracy and the average over tasks as a rich table."""
    from rich.table import Table

    title = f"{summary.label + ': ' if summary.label else ''}{summary.model}"
    table = Table(title=title, title_justify="left")
    for name, justify in (("task", "left"), ("n", "right"), ("correct", "right"), ("accuracy", "right"),
                          ("no answer", "right"), ("cut at cap", "right")):
        table.add_column(name, justify=justify)
    for task, acc in summary.accuracy.items():
        table.add_row(task, str(summary.n[task]), str(summary.correct[task]), f"{100 * acc:.2f}",
                      str(summary.n[task] - summary.extracted[task]), str(summary.truncated[task]))
    table.add_section()
    table.add_row("average", str(sum(summary.n.values())), str(sum(summary.correct.values())),
                  f"{100 * summary.average:.2f}", "", "")
    return table


class _Progress:
    """A rich progress bar on stderr per task, with tokens/s."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=log,
                                  transient=True)
        self._progress.__enter__()
        self._bars: dict[str, int] = {}
        return self

    def update(self, task: str, done: int, total: int, tokens: int) -> None:
        if task not in self._bars:
            self._t0, self._tokens = time.perf_counter(), 0
            self._bars[task] = self._progress.add_task(task, total=total, completed=done, rate="")
            return
        self._tokens += tokens
        rate = f"{self._tokens / max(time.perf_counter() - self._t0, 1e-9):.0f} tok/s"
        self._progress.update(self._bars[task], completed=done, rate=rate)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
