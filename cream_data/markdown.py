"""Markdown tables, one way everywhere (run report, study, `cream inspect`, scorer agreement, dataset card)."""

from __future__ import annotations


def escape(cell) -> str:
    """A cell's text with ``|`` escaped, so it cannot split the row."""
    return str(cell).replace("|", "\\|")


def table(header: list, rows: list[list]) -> list[str]:
    """The lines of a Markdown table (header, separator, rows) followed by one blank line.

    >>> table(["a", "b"], [[1, "x|y"]])
    ['| a | b |', '| --- | --- |', '| 1 | x\\\\|y |', '']
    """
    line = lambda cells: "| " + " | ".join(escape(c) for c in cells) + " |"  # noqa: E731
    return [line(header), "|" + " --- |" * len(header)] + [line(r) for r in rows] + [""]
