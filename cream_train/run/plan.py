"""`cream run CONFIG --plan`: every stage of the run, whether it is done, and the command line that does its work —
computed as the run would compute it, with nothing run and nothing written.

A stage's status comes from the same fingerprints the loop uses (its settings, data, seeds and the fingerprints of
the stages it reads, chained), compared with ``RUN/manifest.json``:

    done      finished earlier with the same inputs, its outputs in place and whole: skipped
    reuse     finished with the same inputs in a ``--reuse-from`` run: linked from there
    resume    started earlier with the same inputs and interrupted, or finished but its outputs damaged since (the
              note says how): its finished parts are kept
    stale     finished earlier with other inputs (changed settings or an upstream stage): redone
    to run    never started

A DPO training stage's line also says the consistency C it weighs each pair by (``C = dataset mean of (tau+1)/2 over
the iteration's pairs …`` for method cream: :meth:`cream_train.run.config.RunConfig.trained_c`).

Each model stage's command is the stage's own ``cream`` command with the settings the run resolves (made by
:func:`cream_train.run.launch.stage_argv`, which the tests parse back through the real command line into an equal
config), so users on a cluster scheduler can copy them into their own jobs; paths under the current folder (or its
parent) are written relative to it. With ``nodes.launcher: srun`` a stage that spans machines is one ``srun …`` line
(its tasks fill in ``{SLURM_PROCID}``-style fields themselves, cream_train/run/slurm_task.py), written the same on a
login node as inside the allocation. Statuses downstream of a stage that has not run yet assume it will form pairs (a
pair-less iteration carries its model forward instead).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from cream_train.run.config import check_reuse_from
from cream_train.run.launch import Process, launch_commands, shell_line
from cream_train.run.manifest import Manifest
from cream_train.run.stage import Stage
from cream_train.run.stage_list import stage_list
from cream_train.run.walk import StageWalk

NO_COMMAND = "(cream run itself: reads the configured sources, no model)"
DPO_TRAININGS = ("train", "future-train")  # the stage kinds that train with the pairs' C


@dataclass(frozen=True)
class PlannedStage:
    name: str
    status: str  # done | reuse | resume | stale | to run
    fingerprint: str
    commands: tuple[str, ...]  # shell lines; empty for the run's own bookkeeping stages
    note: str = ""
    about: str = ""  # what the stage trains with, for a DPO training: its C


def plan_run(cfg, table, reuse_from: list[Path] | None = None, resume: bool = True) -> list[PlannedStage]:
    """The plan of the run ``cfg`` (a resolved RunConfig) over the prompts ``table``; nothing is written."""
    run = Path(cfg.run_dir)
    reuse = [check_reuse_from(r, run) for r in reuse_from or []]
    manifest = Manifest.open(run, writable=False)  # RUN/manifest.json when there is one; nothing is created
    walk = StageWalk(cfg, table, manifest, reuse_from=reuse, log=lambda *_: None)
    trained_c = cfg.trained_c()
    stages = []
    for stage in stage_list(walk):
        if stage.carried is not None:  # a carried model's evaluation: its source's, nothing to run
            manifest.record_carried(stage.name, stage.carried)  # (in memory, as the run records it)
            continue
        decision = walk.decide(stage)  # the loop's own decision, outputs checked on disk; fingerprints chained
        stages.append(PlannedStage(stage.name, decision.status, stage.fingerprint, tuple(commands(stage)),
                                   decision.note, trained_c if stage.kind in DPO_TRAININGS else ""))
    if not resume:  # --no-resume recomputes every stage
        stages = [replace(s, status="to run", note="--no-resume") for s in stages]
    return stages


def commands(stage: Stage) -> list[str]:
    """The shell lines that do ``stage``'s work (none for the run's own bookkeeping stages)."""
    if stage.argv is None:
        return []
    return [shell_line(_relative(p)) for p in launch_commands(stage.argv, stage.launcher, python="python",
                                                               cream=["cream"])]


def _relative(proc: Process) -> Process:
    """Paths under the current folder or beside it written relative to it (the lines run from where `cream run` was
    started); others stay absolute."""
    here = Path.cwd()

    def rel(a: str) -> str:
        if not os.path.isabs(a):
            return a
        r = os.path.relpath(a, here)
        return a if r.startswith(os.pardir + os.sep + os.pardir) else r

    return replace(proc, argv=[rel(a) for a in proc.argv])


def to_text(stages: list[PlannedStage]) -> str:
    """The plan as lines: ``status  stage  [note]  [what it trains with]`` then each command line indented
    (copyable as they are)."""
    width = max(len(s.name) for s in stages)
    lines = []
    for s in stages:
        lines.append(f"{s.status:<7} {s.name:<{width}}  {'  '.join(x for x in (s.note, s.about) if x)}".rstrip())
        lines += [f"    {c}" for c in s.commands] or [f"    {NO_COMMAND}"]
    todo = sum(s.status not in ("done", "reuse") for s in stages)
    lines.append(f"{len(stages)} stages: {len(stages) - todo} done or reused, {todo} to run")
    return "\n".join(lines)
