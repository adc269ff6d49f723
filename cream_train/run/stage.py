"""One stage of a `cream run` as data: :class:`Stage`, what the walk (cream_train/run/walk.py) yields and the three
executors consume — the run (cream_train/run/loop.py), its plan (plan.py) and the other machines of a run on several
(follow.py).

A stage names its kind (``sample``, ``label``, ``train``, …) and index, its inputs (hashed into its fingerprint),
its outputs (paths of the run's :class:`cream_train.run.layout.RunLayout`), the work that makes them in this process,
and, for a model stage, the ``cream …`` command line that does the same work as a process of its own, with the
launcher its section's launch keys say to start it with. The map from a kind to its section is here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from cream_data.hashing import json_hash
from cream_train.run.launch import SHARDED, Launcher

# The section whose settings (and launch keys) a stage of each kind takes; the kinds not here (the run's own
# bookkeeping, evaluations) are started as one process on machine 0.
SECTIONS = {"sample": "sample", "anchor": "sample", "future-sample": "sample", "label": "label", "anchored": "label",
            "sft": "sft", "train": "train", "future-train": "train", "probe-sample": "sample", "probe": "label"}
CHECKPOINTS = ("sft", "train", "future-train")  # the kinds whose output is a model checkpoint (every other: tables)
EVALUATIONS = ("eval", "harness")  # machine 0's alone: nothing downstream reads an evaluation


def inputs_fingerprint(obj) -> str:
    """A stage's fingerprint: 16 hex digits of sha256 over its inputs as sorted JSON (chained through upstream fps)."""
    return json_hash(obj)


@dataclass(frozen=True)
class Stage:
    """A stage of the run.

    ``kind`` and ``k``: what it is and its iteration t (sample, label, anchor, …) or its model's index k (sft and
    train make M_k, eval evaluates it). ``inputs``: its settings, data and the (chained) fingerprints of the stages it
    reads; their hash is its :attr:`fingerprint`. ``outputs``: what it writes (all under the run directory);
    ``caches``: what else a fresh start must not find (kept on resume, set aside on a redo).

    ``program``: the `cream` command that does its work (sample, label, train, eval, harness: as
    :mod:`cream_data.processes` records it); ``command()`` makes that command's argv and launcher, to start it as
    processes of its own. ``work(resume)``: the same work in this process, returning the command's summary (which
    :func:`cream_data.processes.record` makes the stage's record). The run's own stages (prompts, SFT data, a model
    carried forward: ``program`` None) have only ``work``, which returns their record itself; a carried model's
    stage keeps the ``command`` of the training it stands in for (a plan shows it). ``extra``: record fields known
    when the stage is made; ``summary(record)``: a line the run logs once it is done.

    ``carried``: an evaluation of a model carried forward by a pair-less iteration: the record that stands for it
    (the evaluation of the model it copies); such a stage has no work and is no stage of a plan."""

    name: str
    kind: str
    k: int | None
    inputs: dict
    outputs: tuple[Path, ...]
    work: Callable[[bool], Any] | None = None
    program: str | None = None
    command: Callable[[], tuple[list[str], Launcher]] | None = field(default=None, repr=False)
    caches: tuple[Path, ...] = ()
    extra: dict = field(default_factory=dict)
    summary: Callable[[dict], str] | None = field(default=None, repr=False)
    carried: dict | None = None

    @property
    def section(self) -> str | None:
        """The run config section whose launch keys start it (None: machine 0 runs it in one process)."""
        return SECTIONS.get(self.kind)

    @property
    def checkpoint(self) -> bool:
        """Whether its output is a model checkpoint (else tables)."""
        return self.kind in CHECKPOINTS

    @cached_property
    def fingerprint(self) -> str:
        return inputs_fingerprint(self.inputs)

    @cached_property
    def _command_line(self) -> tuple[list[str] | None, Launcher | None]:
        return self.command() if self.command is not None else (None, None)

    @property
    def argv(self) -> list[str] | None:
        """Its command line after ``cream`` (``["sample", PROMPTS, "--out", DIR, …]``) with the settings the run
        resolves; None for the run's bookkeeping stages, which read the configured sources. Made when first asked
        for."""
        return self._command_line[0]

    @property
    def launcher(self) -> Launcher:
        """How its command starts: its section's launch keys; one process for the others."""
        return self._command_line[1] or Launcher()

    @property
    def shards_into(self) -> Path | None:
        """The table that a sampling or scoring stage's shard processes write together (its last output: the
        responses, or the preferences); machine 0 waits for it to read whole on a run on several machines."""
        return self.outputs[-1] if self.program in SHARDED else None
