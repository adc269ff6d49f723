"""`cream publish DIR --repo-id user/name [--dry-run]`: share labeled tables as a Hugging Face Hub dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import out


def publish(
    source: Path = typer.Argument(..., help="A cream run directory or a labeled folder (preferences/, scores/, …)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repository, owner/name."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build the repository folder and list it; upload nothing."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private (a new one only)."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Where to build the repository folder, outside SOURCE (default: a temporary folder; "
        "with --dry-run, a new folder beside SOURCE)."),
    license: Optional[str] = typer.Option(
        None, "--license", help="Hub licence id for the card (overrides the licence found from the prompt sources)."),
    exclude: Optional[list[Path]] = typer.Option(
        None, "--exclude", help="Leave out the tables at or under this path, relative to SOURCE (repeatable): e.g. "
        "one of two label folders of the same iteration, which would otherwise be refused."),
    allow_unfinished: bool = typer.Option(
        False, "--allow-unfinished", help="Publish a run directory whose run has not finished (refused otherwise: "
        "its split names change as iterations end); a one-line warning says which stages are not done."),
) -> None:
    """Publish preferences, scores and responses as a Hub dataset with a card carrying lineage and statistics.

    The upload is huggingface_hub's (create_repo, then upload_folder, which retries network errors itself); if it
    still fails, rerun the same command: files the Hub already holds are not sent again.

    Each split holds one table: two label folders of one iteration (`--out lab` and a re-pairing
    `--out lab-spearman`) are refused, naming both; pick one with --exclude. A split's preferences, scores and
    responses must be of one labeling: a table replaced by another labeling's, or responses rewritten after
    labeling, is refused, naming the first key where they disagree."""
    from cream_data.publish.hub import publish as run

    result = run(source, repo_id, dry_run=dry_run, private=private, out=out_dir, license=license,
                 exclude=exclude or (), allow_unfinished=allow_unfinished)
    if result.warning:
        from rich.markup import escape

        from cli.common import log

        log.print(f"[yellow]warning:[/] {escape(result.warning)}", highlight=False)
    total = sum(size for _, size in result.files)
    for path, size in result.files:
        out.print(f"{size:>12,d}  {path}", highlight=False)
    out.print(f"{total:>12,d}  total, {len(result.files)} files", highlight=False)
    if result.url is None:
        out.print(f"dry run: nothing uploaded; repository folder: {result.folder}", highlight=False)
    else:
        if result.folder is not None:
            out.print(f"repository folder: {result.folder}", highlight=False)
        out.print(result.url, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
