"""`cream train DATA --model M --out DIR`: consistency-weighted DPO (default) or SFT (`--stage sft`).

Runs the same under `accelerate launch` (DDP, DeepSpeed ZeRO, FSDP): every rank runs this command.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Optional

import typer
from rich.markup import escape

from cli.common import log, out


class _OneLineWarnings(logging.Handler):
    """Each record of the trainer's logger as one line on stderr: warnings flagged, notes (INFO) as they are."""

    def emit(self, record: logging.LogRecord) -> None:
        text = escape(" ".join(record.getMessage().split()))
        log.print(f"[yellow]warning:[/] {text}" if record.levelno >= logging.WARNING else text, highlight=False)


@contextmanager
def _warnings_to_stderr():
    logger = logging.getLogger("cream.train")
    handler = _OneLineWarnings(logging.INFO)
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def register(app: typer.Typer) -> None:
    from cream_train.config import DPOTrainConfig as D
    from cream_train.config import SFTTrainConfig as S

    @app.command("train")
    def train(
        data: str = typer.Argument(..., help="DPO: a preferences table (Parquet file or folder), a `cream label "
                                   "--out` folder (its preferences/), a folder written by `cream publish` or a Hub "
                                   "dataset id (owner/name). SFT: an sft table or any source the SFT loader accepts."),
        model: str = typer.Option(..., "--model", help=D.help("model")),
        out_dir: str = typer.Option(..., "--out", help=D.help("out")),
        stage: str = typer.Option("dpo", "--stage", help="dpo (consistency-weighted DPO) or sft."),
        method: str = typer.Option("cream", "--method", help=D.help("method")),
        beta: float = typer.Option(0.1, "--beta", help=D.help("beta")),
        lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate [default: 1e-6 for dpo, "
                                           "2e-5 for sft]."),
        epochs: float = typer.Option(1.0, "--epochs", help=D.help("epochs")),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help=D.help("max_steps")),
        batch_size: int = typer.Option(4, "--batch-size", help=D.help("batch_size")),
        grad_accum: int = typer.Option(1, "--grad-accum", help=D.help("grad_accum")),
        warmup_ratio: float = typer.Option(0.1, "--warmup-ratio", help=D.help("warmup_ratio")),
        weight_decay: float = typer.Option(D.weight_decay, "--weight-decay", help=D.help("weight_decay")),
        max_grad_norm: float = typer.Option(D.max_grad_norm, "--max-grad-norm", help=D.help("max_grad_norm")),
        max_length: Optional[int] = typer.Option(2048, "--max-length", help=D.help("max_length")),
        long_pairs: str = typer.Option(D.long_pairs, "--long-pairs", help=D.help("long_pairs")),
        split: Optional[str] = typer.Option(None, "--split", help=D.help("split")),
        reference: str = typer.Option("auto", "--reference", help=D.help("reference")),
        lora: bool = typer.Option(False, "--lora/--no-lora", help=D.help("lora")),
        lora_r: int = typer.Option(16, "--lora-r", help=D.help("lora_r")),
        lora_alpha: int = typer.Option(32, "--lora-alpha", help=D.help("lora_alpha")),
        lora_dropout: float = typer.Option(0.05, "--lora-dropout", help=D.help("lora_dropout")),
        lora_target: str = typer.Option("all-linear", "--lora-target", help=D.help("lora_target")),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing/--no-gradient-checkpointing",
                                                    help=D.help("gradient_checkpointing")),
        seed: int = typer.Option(0, "--seed", help=D.help("seed")),
        report_to: str = typer.Option("none", "--report-to", help=D.help("report_to")),
        limit: Optional[int] = typer.Option(None, "--limit", help=S.help("limit")),
        overwrite: bool = typer.Option(False, "--overwrite", help=D.help("overwrite")),
    ) -> None:
        """Train M_t+1 from M_t on a preferences table with the CREAM loss (or SFT with --stage sft)."""
        from cream_data.errors import CreamError

        common = dict(data=data, model=model, out=out_dir, epochs=epochs, max_steps=max_steps,
                      batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=warmup_ratio,
                      weight_decay=weight_decay, max_grad_norm=max_grad_norm, max_length=max_length,
                      lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                      lora_target=lora_target, gradient_checkpointing=gradient_checkpointing, seed=seed,
                      report_to=report_to, overwrite=overwrite)
        if lr is not None:
            common["lr"] = lr
        if stage == "dpo":
            cfg = D(method=method, beta=beta, reference=reference, long_pairs=long_pairs, split=split, **common)
        elif stage == "sft":
            if split is not None:
                raise CreamError("--split: only for --stage dpo (a published preferences dataset)")
            cfg = S(limit=limit, **common)
        else:
            raise CreamError(f"--stage: got {stage!r}, expected dpo or sft")

        from cream_train.train import train as run

        from contextlib import nullcontext

        from cream_data.tables.outputs import locked
        from cream_train.lineage import check_output

        check_output(cfg.out, cfg.overwrite)
        # Every rank of a distributed launch runs this command; rank 0 writes the checkpoint and holds the lock.
        with locked(cfg.out) if _is_main_process() else nullcontext(), _warnings_to_stderr():
            result = run(cfg)
        if _is_main_process():
            m = result.metrics
            shown = {k: m[k] for k in ("train_loss", "rewards/accuracies", "rewards/margins", "consistency/mean_C",
                                       "global_step") if k in m}
            out.print(f"{escape(str(result.out))}\t" + "\t".join(f"{k}={v:.4g}" for k, v in shown.items()),
                      highlight=False)


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0
