"""`cream inspect DIR`: the iteration report of a run directory (accuracy and ranking-consistency tables,
pair counts, plots), or summary statistics and PNG plots of one labeled folder (preferences and/or scores).
`cream inspect RUN_A RUN_B …`: a study comparing runs that differ in method and/or
training seed (see cream_data.reports.study)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import out


def inspect(
    paths: list[Path] = typer.Argument(..., metavar="DIR...",
                                       help="A run directory (of `cream run`), a labeled folder (the --out of "
                                            "`cream label`) or a preferences/scores table; or several run "
                                            "directories (one per method and seed) to compare."),
    plots: Optional[Path] = typer.Option(None, "--out",
                                         help="Where the Markdown, JSON and PNG plots go "
                                              "(default: RUN/report for a run, DIR/inspect otherwise, "
                                              "./study for several runs)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown",
                                            help="With several runs: also write the study tables into this "
                                                 "Markdown file between <!-- study:begin/end --> markers, "
                                                 "keeping the text around them (e.g. docs/RESULTS.md)."),
) -> None:
    """On a run directory: the paper's two tables (accuracy per task per model M0, M1, …; ranking consistency
    C, Kendall, Spearman, TopOrder between consecutive iterations), pairs and skips per iteration, and plots.
    On a labeled folder: pairs, skips by reason, consistency C, ties, agreement with the previous model,
    reward margins, and (from its scores) every two scorers' Kendall tau-b and top-pair agreement, each scorer
    against the oracle, the human-written answers' ranks, and whether C predicts the pairs the oracle calls right
    (a run directory: per iteration). On several run directories: both tables per method, paired accuracy
    differences with bootstrap intervals, and the oracle's verdict on each method's pairs. Writes Markdown + JSON
    and PNG plots, and prints the tables."""
    from cream_data.reports import run_report
    from cream_data.errors import CreamError
    from cream_data.tables.outputs import guard

    if plots is not None or len(paths) > 1:
        guard(plots or Path("study"), "inspect", run_report.is_report_output, what="report folder")
    if len(paths) > 1:
        from cream_data.reports.study import write_study

        result = write_study(paths, plots or Path("study"), markdown=markdown)
        out.print(result.markdown, markup=False, highlight=False, emoji=False)
        for name, p in result.files.items():
            out.print(f"{name}: {p}", highlight=False)
        return
    if markdown is not None:
        raise CreamError("--markdown: only with several run directories (a study)")
    path = paths[0]

    if run_report.is_run_dir(path):
        from cream_data.tables.io import WriteError

        try:
            result = run_report.write_run_report(path, plots)
        except WriteError as e:  # a read-only run directory: the report itself is still what was asked for
            out.print(run_report.to_markdown(run_report.run_report(path)), markup=False, highlight=False, emoji=False)
            return _unwritten(f"could not write {e.filename} or the report files after it ({e.reason})", plots)
        out.print(result.markdown, markup=False, highlight=False, emoji=False)
        for name, p in result.files.items():
            out.print(f"{name}: {p}", highlight=False)
        return

    from cream_data.reports import inspect as rep

    result = rep.inspect_folder(path, plots)
    _print(result.summary, rep)
    for name, p in result.files.items():
        out.print(f"{name}: {p}", highlight=False)
    if result.unwritten:
        _unwritten(result.unwritten_line(), plots)


def _unwritten(line: str, plots: Path | None) -> None:
    """After the summary: files that could not be written, in one line — an error when they were to go where
    ``--out`` said, a warning when they were to go to the default folder beside the data."""
    from cream_data.errors import CreamError

    if plots is not None:
        raise CreamError(f"--out {plots}: {line}")
    from rich.markup import escape

    from cli.common import log

    log.print(f"[yellow]warning:[/] {escape(line)}; pass --out DIR to write them elsewhere", highlight=False)


def _print(summary: dict, rep) -> None:
    from rich.markup import escape
    from rich.table import Table

    if "preferences" in summary:
        t = Table(title=f"preferences: {escape(summary['preferences']['path'])}", show_header=False)
        t.add_column("metric", style="bold")
        t.add_column("value")
        for k, v in rep.preference_rows(summary["preferences"]):
            t.add_row(k, escape(v))
        out.print(t)
    if "scores" in summary:
        # Compact for a terminal; summary.md has min and max too.
        t = Table(title=f"rewards per scorer: {escape(summary['scores']['path'])}")
        for h in ("scorer", "model", "kind", "rows", "null", "mean ± std"):
            t.add_column(h, overflow="fold")
        for g in summary["scores"]["groups"]:
            t.add_row(*map(escape, (g["scorer"], g["model"], g["reward_kind"], str(g["rows"]),
                                    str(g["null_or_nonfinite"]), f"{rep.fmt(g['mean'])} ± {rep.fmt(g['std'])}")))
        out.print(t)
    if summary.get("agreement"):
        from cream_data.reports.agreement_report import tables

        _print_tables(tables(summary["agreement"]))
    if summary.get("premise"):
        from cream_data.reports import premise_report as pr

        _print_tables(pr.tables(summary["premise"]))
        absent = pr.absent_line(summary["premise"])
        for line in [f"{pr.TITLE} {absent}"] if absent else [pr.counts_line(summary["premise"]), pr.NOTE]:
            out.print(line, markup=False, highlight=False, emoji=False)


def _print_tables(found: list) -> None:
    """Terminal tables from ``(key, title, header, rows)``: numbers and intervals stay on one line; names (the first
    column) are never squeezed. A table wider than the terminal is printed one row per line instead (``name: header
    value · header value …``, wrapped by the terminal), so no cell is cut."""
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    for _, title, header, rows in found:
        t = Table(title=title)
        names = max(len(r[0]) for r in rows)
        for i, h in enumerate(header):
            t.add_column(h, overflow="fold", no_wrap=i > 0, min_width=names if i == 0 else None)
        for row in rows:
            t.add_row(*map(escape, row))
        if Measurement.get(out, out.options.update_width(10_000), t).maximum <= out.size.width:
            out.print(t)
            continue
        out.print(title, markup=False, highlight=False, emoji=False)
        for row in rows:
            cells = " · ".join(f"{h} {v}" for h, v in zip(header[1:], row[1:]))
            out.print(f"  {row[0]}: {cells}", markup=False, highlight=False, emoji=False)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
