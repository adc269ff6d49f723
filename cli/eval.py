"""`cream eval --model M --tasks … [--limit K] [--data-dir DIR] --out DIR`: greedy benchmark accuracy;
`cream eval --model M --harness TASKS --out DIR`: the same benchmarks through lm-evaluation-harness."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import log, out
from cli.options import Options, with_settings
from cli.progress import Bars
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.harness_config import HarnessConfig


def _which(cls) -> str:
    return "--harness" if cls is HarnessConfig else "the paper protocol, i.e. without --harness"


@with_settings(EvalConfig, HarnessConfig, which=_which)
def eval_cmd(
    model: str = typer.Option(..., "--model", help="Model: checkpoint folder, Hub id, or smollm2-135m-instruct."),
    out_dir: Path = typer.Option(..., "--out", help="Output eval table folder; a rerun into it skips finished tasks."),
    settings: Options = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an evaluation with other settings in --out."),
    harness: Optional[str] = typer.Option(None, "--harness", help="Run these comma-separated tasks through "
                                          "lm-evaluation-harness instead (its prompts and metrics: acc, acc_norm, "
                                          "exact_match). Needs `pip install -e '.\\[harness]'` in the cream checkout."),
) -> None:
    """Greedy accuracy on ARC-Easy/Challenge, OpenBookQA, SIQA (option letter) and GSM8K (final number)."""
    if harness is not None:
        from cream_data.errors import CreamError

        if "tasks" in settings.given:
            raise CreamError("--tasks names the paper-protocol evaluation's tasks; with --harness name them there "
                             "(--harness arc_easy,gsm8k)")
        hcfg = settings.build(HarnessConfig, flags={"tasks": "--harness"},
                              tasks=tuple(t.strip() for t in harness.split(",") if t.strip()))
        return _harness(model, hcfg, out_dir, overwrite)
    from cream_data.stages.evaluate import evaluate

    cfg = settings.build(EvalConfig)
    with Bars("questions") as bar:
        summary = evaluate(model, cfg, out_dir, overwrite=overwrite, progress=bar.update)
    from cream_data.processes import write_result

    write_result("eval", summary)
    out.print(results_table(summary))
    skipped = f" ({', '.join(summary.tasks_skipped)} already done)" if summary.tasks_skipped else ""
    rate = summary.tokens / summary.generate_seconds if summary.generate_seconds else 0.0
    out.print(f"evaluated {summary.model}{skipped}: {summary.tokens} tokens at {rate:.0f} tok/s in "
              f"{summary.seconds:.1f} s -> {out_dir}", highlight=False)


class _FirstLineHeld:
    """The harness's log on stderr, its first line (``harness: loading M …``) held until the second (the model
    loaded) or the end: a model that cannot be loaded gives one line, its error, not a note that it was loading."""

    def __init__(self):
        self.held: list[str] | None = []

    def __call__(self, message: str) -> None:
        if self.held is not None and not self.held:
            self.held.append(message)
            return
        self.let_through()
        log.print(message, highlight=False)

    def let_through(self) -> None:
        for message in self.held or []:
            log.print(message, highlight=False)
        self.held = None


def _harness(model: str, cfg, out_dir: Path, overwrite: bool) -> None:
    """`cream eval --harness`: lm-eval's own progress bars and a line per task on stderr, the table at the end."""
    from cream_data.errors import CreamError
    from cream_data.stages.harness import evaluate_harness

    say = _FirstLineHeld()
    try:
        summary = evaluate_harness(model, cfg, out_dir, overwrite=overwrite, log=say)
    except CreamError:
        say.held = None  # the error is the one line
        raise
    finally:
        say.let_through()
    from cream_data.processes import write_result

    write_result("harness", summary)
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


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
