"""Training that shows itself: optimizer steps to cream's progress display, one log line per logging step, and the
trackers of ``report_to`` (TensorBoard, W&B) writing beside the output or under the run's ``logs/`` — never inside
the saved model folder. Wired into every trainer by :func:`show_training`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cream_data.processes import RUN_NAME_ENV, TRACKER_DIR_ENV
from cream_data.progress import Progress
from cream_train.config import TrainConfig

logger = logging.getLogger("cream.train")


def tracker_dir(cfg: TrainConfig) -> Path:
    """Where the trackers of ``report_to`` write: ``$CREAM_TRACKER_DIR`` (set by `cream run` for each stage
    process: ``RUN/logs/tb/<stage>``), else ``<out>.logs/`` beside the output. Never inside the model folder."""
    named = os.environ.get(TRACKER_DIR_ENV)
    out = Path(cfg.out)
    return Path(named) if named else out.with_name(out.name + ".logs")


def run_name(cfg: TrainConfig) -> str:
    """The tracker's run name: ``$CREAM_RUN_NAME`` (`cream run`: ``<run dir name>/<stage>``), else the output
    folder's name."""
    return os.environ.get(RUN_NAME_ENV) or Path(cfg.out).name


# what one logging step's line shows, in order: (the trainer's metric, its name in the line, its format)
LOG_LINE_KEYS = (("loss", "loss", ".4g"), ("rewards/margins", "margin", ".4g"),
                 ("rewards/accuracies", "accuracy", ".2f"), ("consistency/mean_C", "mean C", ".3f"),
                 ("learning_rate", "lr", ".3g"))


def _fmt(value, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def log_line(stage: str, step: int, total: int, logs: dict) -> str:
    """One logging step as one line: ``DPO step 3/8 (epoch 0.75): loss 0.6931, margin 0.0123, accuracy 0.50,
    mean C 0.740, lr 1e-06`` (SFT: loss and lr); the trainer's closing log as ``DPO training done: …``."""
    if "train_runtime" in logs:
        loss = f", mean loss {_fmt(logs['train_loss'])}" if "train_loss" in logs else ""
        return f"{stage} training done: {step} step(s) in {logs['train_runtime']:.1f} s{loss}"
    shown = ", ".join(f"{name} {_fmt(logs[k], spec)}" for k, name, spec in LOG_LINE_KEYS if k in logs)
    epoch = f" (epoch {logs['epoch']:.3g})" if isinstance(logs.get("epoch"), (int, float)) else ""
    return f"{stage} step {step}/{total}{epoch}: {shown}"


class TrainingReport:
    """Trainer callback (made a transformers ``TrainerCallback`` in :func:`show_training`): the optimizer steps
    done / total to ``progress`` as ``(what, done, total, 0)`` — at the start (0) and after each step — and each
    logging step as one :func:`log_line` on the ``cream.train`` logger. Only the world's process 0 reports."""

    def __init__(self, stage: str, progress: Progress | None):
        self.stage, self.progress = stage.upper(), progress
        self.what = f"{self.stage} training"
        self._reported = -1

    def _steps(self, state) -> None:
        if self.progress is None or not state.is_world_process_zero or state.global_step == self._reported:
            return
        self._reported = state.global_step
        self.progress(self.what, state.global_step, state.max_steps, 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._steps(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._steps(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            logger.info(log_line(self.stage, state.global_step, state.max_steps, logs))


TRACKERS = {"tensorboard": (("tensorboard", "tensorboardX"), "train"), "wandb": (("wandb",), "tracking")}  # extra


def check_tracker(cfg: TrainConfig) -> None:
    """A ``report_to`` whose package is missing: one line, before anything is loaded (transformers would raise
    from inside the trainer's construction)."""
    import importlib.util

    from cream_data.errors import install_extra, missing_package

    modules, extra = TRACKERS.get(cfg.report_to, ((), ""))
    if modules and not any(importlib.util.find_spec(m) for m in modules):
        raise missing_package(modules[0], f"--report-to {cfg.report_to}", install_extra(extra))


def show_training(trainer, cfg: TrainConfig, progress: Progress | None) -> None:
    """Swap transformers' PrinterCallback (a raw metrics dict printed per logging step on every local rank 0) for
    :class:`TrainingReport`, and point the trackers at :func:`tracker_dir` (TensorBoard defaults to
    ``output_dir/runs/`` — inside the model; W&B to ``./wandb``). A ``TENSORBOARD_LOGGING_DIR`` or ``WANDB_DIR``
    set by the user wins."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    for shown in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(shown)
    trainer.add_callback(type("CreamTrainingReport", (TrainingReport, TrainerCallback), {})(cfg.stage, progress))
    if cfg.report_to == "none":
        return
    logs = tracker_dir(cfg)
    if trainer.accelerator.is_main_process:
        logs.mkdir(parents=True, exist_ok=True)
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(logs)
    if cfg.report_to == "wandb":
        os.environ.setdefault("WANDB_DIR", str(logs))
