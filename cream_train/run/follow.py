"""Machine r > 0 of a run on several machines under ``nodes.launcher: followers`` (cream_train/run/machines.py says
how such a run works): an executor of the same stages as machine 0 (cream_train/run/walk.py) that records nothing.

It walks the stages with the same fingerprints as machine 0 — the run's manifest opened read-only and read again on
every look — and for each one waits until machine 0 has started it (so a fresh start has cleared the old outputs),
runs its own part of a stage that spans machines (its shards, or its rank of a distributed training) and waits until
machine 0 has finished it. Evaluations are machine 0's alone. Every wait is bounded by machine 0's heartbeat.
"""

from __future__ import annotations

import time
from pathlib import Path

from cream_data.errors import CreamError
from cream_data.progress import Progress
from cream_train.run.config import check_reuse_from
from cream_train.run.heartbeat import Heartbeat, Pulse, sigterm_exits
from cream_train.run.layout import RunLayout
from cream_train.run.machines import POLL
from cream_train.run.manifest import Manifest
from cream_train.run.stage import EVALUATIONS, Stage
from cream_train.run.stage_list import stage_list
from cream_train.run.walk import Log, RunSummary, StageWalk


class Follower:
    """Machine r > 0: the same walk as machine 0, each stage waited for instead of recorded. ``started``: when this
    machine joined (a stop recorded by machine 0 after it ends this machine's run too)."""

    def __init__(self, cfg, table, log: Log, *, runner, started: float, reuse_from: list[Path] | None = None,
                 progress: Progress | None = None):
        self.cfg, self.log, self.runner, self.started = cfg, log, runner, started
        self.layout = RunLayout(cfg.run_dir)
        reuse = [check_reuse_from(r, self.layout.root) for r in reuse_from or []]
        nodes = cfg.nodes
        self.poll = min(POLL, nodes.start_timeout / 4, nodes.alive_timeout / 4)
        self.machine0 = Pulse(self.layout.root, 0)
        while not self.layout.manifest.is_file():  # machine 0 creates the run; _check_machine_0 bounds the wait
            self._check_machine_0()
            time.sleep(self.poll)
        self.manifest = Manifest.open(self.layout.root, writable=False)  # machine 0's, never written from here
        self.walk = StageWalk(cfg, table, self.manifest, reuse_from=reuse, log=log, progress=progress)
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def execute(self) -> RunSummary:
        t0 = time.time()
        for stage in stage_list(self.walk):  # this machine's part ends with the last training
            if stage.kind not in EVALUATIONS:  # machine 0 evaluates and writes the report
                self.do(stage)
        return RunSummary(self.layout.root, self.ran, self.skipped, self.walk.models(), None, time.time() - t0, [])

    def do(self, stage: Stage) -> None:
        """Wait for ``stage`` as machine 0 runs it, doing this machine's part of it when it spans machines."""
        self.walk.decide(stage)  # the fingerprints chain as machine 0 chains them
        if self._status(stage) == "done":
            self.skipped.append(stage.name)
            return
        section = stage.section
        if section is not None and stage.program is not None and self.walk.stages.spans_machines(section):
            self._wait(stage, ("running", "done"))
            if self._status(stage) != "done":
                rank = self.cfg.nodes.machine_rank
                self.log(f"[bold]▶ {stage.name}[/] (machine {rank} of {self.cfg.nodes.num_machines})")
                self.runner.run(stage.name, stage.argv, stage.launcher, records=False)
                self.ran.append(stage.name)
        self._wait(stage, ("done",))

    def _status(self, stage: Stage) -> str | None:
        """``done`` when machine 0's manifest decides ``stage`` done as machine 0 does (:meth:`Manifest.decide`: its
        outputs checked on disk; a record of damaged outputs is one machine 0 will redo), ``running`` while machine 0
        runs it with these inputs, else None."""
        if self.manifest.decide(stage).status == "done":
            return "done"
        rec = self.manifest.data["stages"].get(stage.name) or {}
        return "running" if rec.get("status") == "running" and rec.get("fingerprint") == stage.fingerprint else None

    def _wait(self, stage: Stage, states: tuple[str, ...]) -> None:
        """Until machine 0's manifest shows ``stage`` with its fingerprint in one of ``states``."""
        said = False
        while True:
            self.manifest.reload()
            if self._status(stage) in states:
                return
            stopped = self.manifest.data.get("stopped") or {}
            if stopped.get("time", 0) >= self.started:
                raise CreamError(f"machine 0 stopped the run ({stopped.get('error')}); rerun every machine to resume")
            self._check_machine_0()
            if not said:
                self.log(f"[dim]… {stage.name}: waiting for machine 0[/]")
                said = True
            time.sleep(self.poll)

    def _check_machine_0(self) -> None:
        """Whenever this machine waits on machine 0: CreamError (one line) when machine 0's heartbeat has not changed
        within nodes.start_timeout of this machine's start (machine 0 absent, or the run directory not the same
        folder on both machines), or has stood still for nodes.alive_timeout since. A run whose every stage is done
        needs no wait, so machine 0 may have finished before this machine looked."""
        pulse, nodes, rank = self.machine0, self.cfg.nodes, self.cfg.nodes.machine_rank
        silent = pulse.silence()
        if not pulse.seen and silent > nodes.start_timeout:
            state = "did not change" if pulse.last is not None else "never appeared"
            raise CreamError(
                f"machine {rank}: no heartbeat from machine 0 in {self.layout.root} within {nodes.start_timeout:g} s "
                f"({pulse.path} {state}; nodes.start_timeout); check that machine 0 runs `cream run` with this config "
                "now and that the run directory is on a file system both machines share")
        if pulse.seen and silent > nodes.alive_timeout:
            raise CreamError(
                f"machine {rank}: machine 0's heartbeat ({pulse.path}) has not changed for {silent:.0f} s "
                f"(nodes.alive_timeout {nodes.alive_timeout:g}); machine 0 stopped or lost the shared run directory: "
                "rerun every machine to resume")


def follow(cfg, table, *, log: Log, progress: Progress | None = None, reuse_from=None) -> RunSummary:
    """Machine ``cfg.nodes.machine_rank`` (> 0) of a multi-machine run."""
    from cream_train.run.stage_process import StageRunner

    run, nodes = Path(cfg.run_dir), cfg.nodes
    log(f"machine {nodes.machine_rank} of {nodes.num_machines}: following machine 0's run in {run}")
    started = time.time() - 5 * POLL  # machine 0 may have stopped just before this machine looked
    with sigterm_exits(), Heartbeat(run, nodes.machine_rank, nodes.alive_timeout):  # removed however this ends
        runner = StageRunner(run, log, progress, machine=nodes.machine_rank)
        try:
            return Follower(cfg, table, log, runner=runner, started=started, reuse_from=reuse_from,
                            progress=progress).execute()
        finally:
            runner.close()
