"""`cream browse SOURCE --out pairs.html`: the pairs of a run, a labeled folder or a preferences table as one static
HTML page to read side by side (no server; see cream_data.reports.browse)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import out


def browse(
    source: Path = typer.Argument(..., metavar="SOURCE",
                                  help="A run directory (of `cream run`), a labeled folder (the --out of "
                                       "`cream label`) or a preferences table (a Parquet file or table folder)."),
    page: Path = typer.Option(Path("pairs.html"), "--out",
                              help="The HTML file to write (a new file, or a page `cream browse` wrote before)."),
) -> None:
    """Write one self-contained HTML page of the pairs: each prompt with its responses side by side (every
    sampled response when the responses table is at hand, else the chosen and the rejected), chosen and rejected
    marked, every scorer's reward and rank, C, weight and Kendall tau, the oracle's verdict, the judge's output and
    the human-written answer where the tables have them, and the iteration and method of a run.

    The page opens from disk in any browser, with no server and no network: its script, style and data are
    inside it. Filter by iteration, C range, scorers agree/disagree (every scorer ranks the chosen first and the
    rejected last, or not), oracle right/wrong and text; sort by prompt id, iteration, C or margin. The filters
    live in the URL hash, so a link opens a filtered view: pairs.html#cmin=0.5&agree=disagree&q=tulips
    (keys t, cmin, cmax, agree, oracle, q, sort). Rows are drawn a batch at a time as you scroll, so a page of
    10,000 pairs opens at once."""
    from cream_data.reports.browse import browse as write_browser

    result = write_browser(source, page)
    out.print(f"{result.pairs:,} pairs: {result.out} ({result.bytes / 1e6:.1f} MB)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("browse")(browse)
