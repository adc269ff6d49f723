"""The training half of cream as Python functions, for notebooks and scripts (docs/API.md).

    from cream_train import api

    m = api.train("work/labeled", model="smollm2-135m-instruct", out="work/M1", lr=1e-6, max_steps=10)
    r = api.run("examples/demo.yaml")            # the whole loop; or a mapping: api.run({...}, out="runs/x")
    r.report["accuracy"]                          # the run's report as data

:func:`train` is `cream train`: its settings are the command's flags as keyword arguments (TRL's names too,
``learning_rate`` for ``lr``), built into the same :class:`~cream_train.config.DPOTrainConfig` or
:class:`~cream_train.config.SFTTrainConfig` the command builds, so a bad value raises the same CreamError with the
keyword in the place of the flag. :func:`run` is `cream run`, from a YAML path or the same settings as a mapping.

Importing this module imports neither torch nor TRL: :func:`train` imports them when it runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from cream_data.api import PathLike, settings_doc, settings_from
from cream_train.config import DPOTrainConfig, SFTTrainConfig, config_class


@dataclass(frozen=True)
class Trained:
    """What :func:`train` wrote: the checkpoint folder ``out`` (weights, tokenizer, cream_lineage.json), the
    ``stage`` (dpo or sft), the trainer's final ``metrics`` (train_loss; DPO: rewards/margins,
    rewards/accuracies, consistency/mean_C, …), the ``reference`` DPO used (stored or computed; "" for SFT) and
    the ``precision`` it trained in."""

    out: Path
    stage: str
    metrics: dict[str, Any]
    reference: str
    precision: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did: the run directory, the stages it ran, skipped (done earlier) and reused (from
    ``reuse_from``), the models (M0, M1, … → checkpoint path), the report's Markdown and, read from the run
    directory when first asked for, the ``report`` as data (:func:`cream_data.api.report`)."""

    run_dir: Path
    models: dict[str, str]
    ran: list[str]
    skipped: list[str]
    reused: list[str]
    seconds: float
    report_md: str | None

    @cached_property
    def report(self) -> dict:
        from cream_data.reports.run_report import run_report

        return run_report(self.run_dir)


def train(data: PathLike, *, model: PathLike, out: PathLike, stage: str = "dpo", progress=None,
          **settings) -> Trained:
    """`cream train DATA --model M --out OUT [--stage sft]`: consistency-weighted DPO (``stage="dpo"``) from M on a
    preferences table (a Parquet file or folder, a `cream label` folder, a `cream publish` folder or a Hub dataset
    id), or SFT (``stage="sft"``) on an sft table or any source the SFT loader reads, into the checkpoint folder
    ``out`` (written atomically; ``overwrite=True`` replaces one). ``progress(what, done, total, extra)``: called
    as optimizer steps finish. The trainer's notes go to the ``cream.train`` logger."""
    from cream_data.jsonfile import check_input
    from cream_data.tables.outputs import locked
    from cream_train.lineage import check_output
    from cream_train.train import train as run_train

    cls = config_class(stage)
    other = SFTTrainConfig if cls is DPOTrainConfig else DPOTrainConfig
    own = {f.name for f in fields(cls)}
    cfg = settings_from(cls, settings, data=os.fspath(data), model=os.fspath(model), out=os.fspath(out),
                        elsewhere={f.name: f"only with stage {other.stage}" for f in fields(other) if f.name not in own})
    check_input(cfg.data, "a table (a Parquet file or folder), a data file or a Hub dataset id")
    check_output(cfg.out, cfg.overwrite)
    with locked(cfg.out):
        result = run_train(cfg, progress=progress)
    return Trained(Path(result.out), cfg.stage, dict(result.metrics), result.reference, dict(result.precision))


train.__doc__ += "\n\n    Settings (keyword arguments; some only with one stage):\n\n" + settings_doc(DPOTrainConfig,
                                                                                                 SFTTrainConfig) + "\n"


def run(config, *, out: PathLike | None = None, method: str | None = None, seed: int | None = None,
        reuse_from: list[PathLike] | None = None, resume: bool = True, in_process: bool = False,
        base: PathLike | None = None, log=print, progress=None) -> RunResult:
    """`cream run CONFIG.yaml`: the whole CREAM loop (M0 → SFT → M1 → (sample → label → train) × T, each model
    evaluated), resumable: a rerun skips finished stages and finishes an interrupted one.

    ``config``: a YAML file's path, or its settings as a mapping (or a :class:`~cream_train.run.config.RunConfig`),
    whose relative paths are against ``base`` (default: the current folder) and whose run directory is its
    ``run_dir`` or ``out``. ``out``, ``method``, ``seed``, ``reuse_from`` and ``resume`` are the command's flags.
    Each model stage runs as its own ``cream …`` process (its log under RUN/logs/), or, ``in_process=True``, in
    this one. ``log(message)``: the run's progress lines (default print)."""
    from cream_train.run.config import RunConfig, check_reuse_from
    from cream_train.run.loop import run as run_loop

    overrides = {k: v for k, v in (("method", method), ("seed", seed),
                                   ("run_dir", str(Path(out).resolve()) if out else None)) if v is not None}
    mapping = None
    if isinstance(config, RunConfig):
        config = config.to_dict()
    if isinstance(config, dict):
        mapping, config = _plain(config), Path(base or ".").resolve() / "<mapping>"
        if not mapping.get("run_dir") and out is None:
            from cream_data.errors import CreamError

            raise CreamError("run_dir: a run config given as a mapping needs run_dir (or out=) to name its run "
                             "directory")
    for r in reuse_from or []:  # before the run directory is made, as the command checks them
        check_reuse_from(r)
    summary = run_loop(Path(config), log=log, overrides=overrides, reuse_from=[Path(r) for r in reuse_from] if reuse_from else None,
                       resume=resume, progress=progress, in_process=in_process, mapping=mapping)
    return RunResult(Path(summary.run_dir), dict(summary.models), list(summary.ran), list(summary.skipped),
                     list(summary.reused), summary.seconds, summary.report_md)


def _plain(value):
    """A mapping as YAML would hold it: paths as strings, tuples as lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
