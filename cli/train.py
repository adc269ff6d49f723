"""`cream train DATA --model M --out DIR`: consistency-weighted DPO (default) or SFT (`--stage sft`).

Runs the same under `accelerate launch` (DDP, DeepSpeed ZeRO, FSDP): every rank runs this command.

What it shows, on stderr (rank 0 only): the optimizer steps as a bar of the one progress display (cli/progress.py:
with its ETA, on a terminal; under `cream run`, progress lines the run draws as its own bar), the trainer's notes and
warnings, and one line per logging step (loss; DPO: reward margin, accuracy, mean C; lr) — not transformers' raw
metrics dicts. Stdout holds the one result line. The notes and warnings of reading the inputs are held until training
starts: input that is refused gives one line, the error, not a note about reading it first.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
import typer
from rich.markup import escape

from cli.common import log, out
from cli.options import Options, with_settings
from cli.progress import Bars


class _OneLineWarnings(logging.Handler):
    """Each record of the trainer's logger as one line on stderr: warnings flagged, notes (INFO: also the
    per-logging-step lines) as they are. Held until :meth:`let_through` (training has started): the inputs are still
    being checked until then, and a refused input must give the user one line, its error."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.held: list[logging.LogRecord] | None = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)
            return
        text = escape(" ".join(record.getMessage().split()))
        log.print(f"[yellow]warning:[/] {text}" if record.levelno >= logging.WARNING else text, highlight=False)

    def let_through(self) -> None:
        """Print what was held, and every record from now on as it comes (not ``release``: a Handler's lock)."""
        held, self.held = self.held or [], None
        for record in held:
            self.emit(record)


@contextmanager
def _warnings_to_stderr():
    """The trainer's log as one-line records on stderr (:class:`_OneLineWarnings`); the records held when the
    command fails with a user error (CreamError) are dropped, those of any other end printed."""
    from cream_data.errors import CreamError

    logger = logging.getLogger("cream.train")
    handler = _OneLineWarnings()
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    except CreamError:
        handler.held = None
        raise
    finally:
        handler.let_through()
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _on_start(handler: _OneLineWarnings, update):
    """The progress callback: its first step (training has started) lets the held log records through."""
    def progress(*args, **kwargs):
        handler.let_through()
        update(*args, **kwargs)

    return progress


def register(app: typer.Typer) -> None:
    from cream_train.config import DPOTrainConfig as D
    from cream_train.config import SFTTrainConfig as S

    @app.command("train")
    @with_settings(D, S, skip=("out",), which=lambda c: f"--stage {c.stage}")
    def train(
        data: str = typer.Argument(..., help="DPO: a preferences table (Parquet file or folder), a `cream label "
                                   "--out` folder (its preferences/), a folder written by `cream publish` or a Hub "
                                   "dataset id (owner/name); or a standard preference dataset (TRL's prompt/chosen/"
                                   "rejected, text or message lists, implicit prompt too) as a .parquet/.jsonl/.json/"
                                   ".csv file, a data or save_to_disk folder or a Hub id (one --split; C = 1, reference "
                                   "computed; docs/DATASETS.md). SFT: an sft table or any source the SFT loader "
                                   "accepts."),
        model: str = typer.Option(..., "--model", help=D.help("model")),
        out_dir: str = typer.Option(..., "--out", help=D.help("out")),
        stage: str = typer.Option("dpo", "--stage", metavar="[dpo|sft]", help="dpo (consistency-weighted DPO) or "
                                  "sft."),
        settings: Options = None,
    ) -> None:
        """Train M_t+1 from M_t on a preferences table with the CREAM loss (or SFT with --stage sft)."""
        from cream_train.config import config_class

        cfg = settings.build(config_class(stage, "--stage"), data=data, model=model, out=out_dir)
        from cream_data.jsonfile import check_input

        check_input(data, "a table (a Parquet file or folder), a data file or a Hub dataset id")

        from cream_train.train import train as run

        from contextlib import nullcontext

        from cream_data.tables.outputs import locked
        from cream_train.lineage import check_output

        check_output(cfg.out, cfg.overwrite)
        # Every rank of a distributed launch runs this command; rank 0 writes the checkpoint and holds the lock.
        with locked(cfg.out) if _is_main_process() else nullcontext(), _warnings_to_stderr() as notes, \
                Bars("steps") as bars:
            result = run(cfg, progress=_on_start(notes, bars.update))
        if _is_main_process():
            from cream_data.processes import write_result

            write_result("train", result)
            m = result.metrics
            shown = {k: m[k] for k in ("train_loss", "rewards/accuracies", "rewards/margins", "consistency/mean_C",
                                       "global_step") if k in m}
            out.print(f"{escape(str(result.out))}\t" + "\t".join(f"{k}={v:.4g}" for k, v in shown.items()),
                      highlight=False)


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
