"""`cream sql [PATH] "SELECT …"`: read-only DuckDB over every table of a run, a table folder or a file."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Optional

import typer

from cli.common import out

TABLE_ROWS = 50  # rows shown by the rich table unless --limit says otherwise


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def sql(
    path_or_query: str = typer.Argument(..., metavar="[PATH]",
                                        help="A run dir, a table folder or a Parquet file (default: the current dir)."),
    query: Optional[str] = typer.Argument(None, metavar="SQL", show_default=False,
                                          help='One read-only statement, e.g. "SELECT count(*) FROM preferences".'),
    format: Format = typer.Option(Format.table, "--format", help="table (rich), csv, or json (an array of records)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0,
                                        help=f"At most this many rows (default: {TABLE_ROWS} for table, all for csv/json)."),
) -> None:
    """Query every table under PATH with DuckDB, read-only.

    Views are named by table kind (prompts, responses, scores, preferences, eval, sft). A run's tables of
    one kind (one per iteration) form one view with an `iteration` column, and every row says which table it came
    from in `table_path` (relative to PATH: iter-1/preferences, lab-spearman/preferences): GROUP BY table_path
    keeps two label folders apart.
    """
    from cream_data.tables import sql as sqllib

    path = path_or_query if query is not None else "."
    text = query if query is not None else path_or_query
    if format is Format.table and limit is None:
        limit = TABLE_ROWS
    table, truncated = sqllib.query(path, text, limit=limit)
    if format is Format.csv:
        sys.stdout.write(sqllib.to_csv(table))
    elif format is Format.json:
        sys.stdout.write(sqllib.to_json(table) + "\n")
    else:
        _print_table(table, truncated, sqllib.cell_text)


def _print_table(table, truncated: bool, cell_text) -> None:
    from rich.table import Table

    t = Table(show_lines=False, header_style="bold")
    for name in table.column_names:
        t.add_column(name, overflow="fold", max_width=60)
    for row in table.to_pylist():
        t.add_row(*(_short(cell_text(v)) for v in row.values()))
    out.print(t)
    more = " (more rows not shown: raise --limit)" if truncated else ""
    out.print(f"{table.num_rows} row(s){more}", style="dim", highlight=False)


def _short(s: str, n: int = 200) -> str:
    from rich.markup import escape

    return escape(s if len(s) <= n else s[: n - 1] + "…")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)

