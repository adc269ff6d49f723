"""`cream`: the Typer app. Each command lives in its own module and imports heavy libraries lazily,
so `cream --help` starts fast and never imports torch."""

from __future__ import annotations

import sys
from typing import Optional

import click
import typer

from rich.markup import escape

from cli.common import log
from cream_data.errors import CreamError

app = typer.Typer(
    name="cream",
    help="Consistency Regularized Self-Rewarding LMs: sample, label with self-rewards and consistency, "
    "train with consistency-weighted DPO, and run the whole loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cream {version('cream')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """cream: CREAM self-rewarding alignment, from one stage up to the whole iterated loop."""


# Commands: one module each; each adds itself with `register(app)`.
from cli import train as _train  # noqa: E402
_train.register(app)
from cli import publish as _publish  # noqa: E402
_publish.register(app)
from cli import sample as _sample  # noqa: E402
_sample.register(app)
from cli import prompts as _prompts  # noqa: E402
_prompts.register(app)
from cli import label as _label  # noqa: E402
_label.register(app)
from cli import run as _run  # noqa: E402
_run.register(app)
from cli import sql as _sql  # noqa: E402
_sql.register(app)
from cli import inspect as _inspect  # noqa: E402
_inspect.register(app)
from cli import eval as _eval  # noqa: E402
_eval.register(app)


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point: user mistakes print one line on stderr and exit with code 2."""
    try:
        rv = app(args=argv, prog_name="cream", standalone_mode=False)
    except CreamError as e:
        log.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
    except click.exceptions.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "cream"
        log.print(f"[bold red]error:[/] {escape(e.format_message())} (see `{cmd} --help`)", highlight=False)
        sys.exit(2)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        log.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        log.print("interrupted")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
