"""`cream`: the Typer app. Each command lives in its own module and imports heavy libraries lazily,
so `cream --help` starts fast and never imports torch."""

from __future__ import annotations

import errno
import importlib
import sys
from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from cli.common import log
from cli.options import CONFIG_PARAM, FLAG_ALIASES, flag_forms, normalize_flag
from cream_data.errors import CreamError

app = typer.Typer(
    name="cream",
    help="Consistency Regularized Self-Rewarding LMs: sample, label with self-rewards and consistency, "
    "train with consistency-weighted DPO, and run the whole loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # every flag also in its underscore form and under TRL's name (hidden from --help): cli/options.normalize_flag
    context_settings={"help_option_names": ["-h", "--help"], "token_normalize_func": normalize_flag},
)


def _version(value: bool) -> None:
    if value:
        from cream_data import installed_version

        typer.echo(f"cream {installed_version('cream')}")
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
from cli import browse as _browse  # noqa: E402
_browse.register(app)
from cli import eval as _eval  # noqa: E402
_eval.register(app)


def _click_exceptions() -> list:
    """The exception modules of the click that typer runs on: its vendored copy and/or the standalone package
    (which one depends on typer's version; both may be present)."""
    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            pass
    return found


_CLICK = _click_exceptions()
_NO_ARGS_HELP = tuple(m.NoArgsIsHelpError for m in _CLICK if hasattr(m, "NoArgsIsHelpError"))
_USAGE = tuple(m.UsageError for m in _CLICK)
_CLICK_ERROR = tuple(m.ClickException for m in _CLICK)
_ABORT = tuple({typer.Abort, *(m.Abort for m in _CLICK if hasattr(m, "Abort"))})
_NO_SUCH_OPTION = tuple(m.NoSuchOption for m in _CLICK)


class _Command(typer.core.TyperCommand):
    """A command that refuses one setting given under two of its names (``--lr`` and ``--learning-rate``, or
    ``--max-new-tokens`` and ``--max_new_tokens``), where the parser would let the last one win silently. A stage
    command's ``--config`` (added by cli/options.with_settings) is, like ``--help``, an option of the command but
    not one of its parameters (``params``: its settings and their companions)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.meta_params = [p for p in self.params if p.name == CONFIG_PARAM]
        self.params = [p for p in self.params if p.name != CONFIG_PARAM]

    def get_params(self, ctx):
        params = super().get_params(ctx)
        return [*params[:len(self.params)], *self.meta_params, *params[len(self.params):]]

    def parse_args(self, ctx, args):
        seen: dict[str, str] = {}
        for arg in args:
            if arg == "--":
                break
            if not arg.startswith("--") or len(arg) < 3:
                continue
            written = arg.split("=", 1)[0]
            name = normalize_flag(written[2:])
            if seen.setdefault(name, written) != written:
                trl = any(w[2:].replace("_", "-") in FLAG_ALIASES for w in (seen[name], written))
                why = "TRL's name and cream's for one setting" if trl else "two spellings of one option"
                raise _CLICK[0].UsageError(f"{seen[name]} and {written}: {why}; give one", ctx)
        return super().parse_args(ctx, args)


for _info in app.registered_commands:
    if _info.cls in (None, typer.core.TyperCommand):  # (typer fills its own class in)
        _info.cls = _Command


INTERRUPTED = "interrupted: finished parts are kept; rerun the same command to resume"
# OSErrors that come from the machine, not from cream: what to do about each.
_ENVIRONMENT = {
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "the disk is full; free space or choose another path",
    errno.EDQUOT: "your disk quota is used up; free space or choose another path",
    errno.EFBIG: "the file is larger than this file system allows; choose another path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "expected a file, found a folder; check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (`ulimit -n`)",
    errno.EIO: "the device reported a read/write error; check the disk",
}


LONG_WORD, LONG_LINE = 1024, 8192  # the most characters of one word (no path is longer) and of an error line


def _error(message: str) -> None:
    log.print(f"[bold red]error:[/] {escape(bounded(message))}", highlight=False)


def bounded(message: str) -> str:
    """One error line of bounded length, whatever value a message echoes (a click message quotes a flag's value
    whole; an OSError its file name): a word longer than LONG_WORD is shortened as a config value is
    (:func:`cream_data.settings.shown`), and the line cut at LONG_LINE characters. The messages cream writes itself
    shorten the values they echo already; this is the bound for every other one."""
    from cream_data.settings import shown

    def short(word: str) -> str:  # a path's closing colon stays after it
        tail = word[-1] if word[-1] in ":;,." else ""
        return shown(word[:len(word) - len(tail)], quote=False) + tail

    line = " ".join(short(w) if len(w) > LONG_WORD else w for w in message.split())
    return line if len(line) <= LONG_LINE else f"{line[:LONG_LINE]}… (cut at {LONG_LINE:,} characters)"


def _command_path(e: Exception, args: list[str]) -> str:
    """`cream CMD` for the command whose usage was wrong (click does not always attach its context)."""
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        return ctx.command_path
    names = {c.name for c in app.registered_commands}
    first = next((a for a in args if not a.startswith("-")), None)
    return f"cream {first}" if first in names else "cream"


def _no_such_option(e, args: list[str]) -> str:
    """``no such option --learnin-rate; did you mean --learning-rate / --lr?``: the option as the user wrote it
    (the parser reports it normalised) and the closest of the command's flags and their aliases (difflib)."""
    import difflib

    heads = [a.split("=", 1)[0] for a in args]
    wrote = next((h for h in heads if h.startswith("--") and "--" + normalize_flag(h[2:]) == e.option_name),
                 e.option_name)
    ctx = getattr(e, "ctx", None)
    flags = [o for p in (ctx.command.params if ctx is not None else ()) for o in [*p.opts, *p.secondary_opts]
             if o.startswith("--")]
    candidates = sorted({g[2:] for f in flags for g in flag_forms(f)})
    best = difflib.get_close_matches(wrote.lstrip("-").replace("_", "-"), candidates, n=1)
    if not best:
        return f"no such option {wrote}"
    canonical = FLAG_ALIASES.get(best[0])
    return f"no such option {wrote}; did you mean --{best[0]}{f' / --{canonical}' if canonical else ''}?"


def _empty_path(args: list[str]) -> str | None:
    """click reads an empty path (``--out ""``) as ``.``, the current folder: the user meant something else, so
    name the flag or argument instead of acting on (or complaining about) ``.``."""
    if "" not in args[1:]:
        return None
    command = getattr(typer.main.get_command(app), "commands", {}).get(args[0])
    paths = [p for p in getattr(command, "params", ()) if getattr(p.type_descriptor, "annotation", None) is Path]
    flags = {o: p for p in paths for o in p.opts if o.startswith("-")}
    for before, value in zip(args[1:], args[2:]):
        if value == "" and before in flags:
            return f"{before}: got an empty path, expected a file or folder"
    first = next((p for p in getattr(command, "params", ()) if p.param_type_name == "argument"), None)
    if args[1] == "" and first is not None and first in paths:
        return f"{first.name.upper()}: got an empty path, expected a file or folder"
    return None


def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point: user mistakes print one line on stderr and exit with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    from cream_data.processes import watch_parent

    watch_parent()  # a stage process of `cream run` ends with it
    empty = _empty_path(args)
    if empty:
        _error(empty)
        sys.exit(2)
    try:
        rv = app(args=args, prog_name="cream", standalone_mode=False)
    except CreamError as e:
        _error(str(e))
        sys.exit(e.exit_code)
    except _NO_ARGS_HELP as e:  # bare `cream`: typer has printed the help (or left it in the message)
        if e.format_message().strip():
            typer.echo(e.format_message())
        sys.exit(0)
    except _NO_SUCH_OPTION as e:
        _error(f"{_no_such_option(e, args)} (see `{_command_path(e, args)} --help`)")
        sys.exit(2)
    except _USAGE as e:
        _error(f"{e.format_message()} (see `{_command_path(e, args)} --help`)")
        sys.exit(2)
    except _CLICK_ERROR as e:
        _error(e.format_message())
        sys.exit(2)
    except _ABORT:
        log.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        log.print(INTERRUPTED, highlight=False)
        sys.exit(130)
    except OSError as e:
        if e.errno not in _ENVIRONMENT:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _error(f"{where}{e.strerror or e} ({_ENVIRONMENT[e.errno]})")
        sys.exit(2)
    if rv == 130:  # typer turns Ctrl-C into exit code 130
        log.print(INTERRUPTED, highlight=False)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
