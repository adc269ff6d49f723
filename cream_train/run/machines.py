"""A run on several machines (``nodes: {num_machines: M, launcher: followers | srun, …}``) on a run directory that
all of them see (a shared file system).

Machine 0 is the run: it holds the run directory's lock, writes ``manifest.json``, runs the bookkeeping stages
(prompt split, SFT data), evaluation and the report, and its stages are the ones the manifest records. Every stage
that spans machines runs on all of them at once:

* sampling and scoring: machine r starts shards ``r*k … r*k+k-1`` of ``k*M`` (``data_parallel: k``); machine 0
  marks the stage done once every shard's manifest is there (reading the folder is the merge);
* training with ``launcher: accelerate`` or ``torchrun``: each machine starts its own launcher with its
  ``machine_rank``; they meet at ``main_process_ip:main_process_port`` and run one training (rank 0 saves).

How the machines get there (``nodes.launcher``):

* ``srun``: one `cream run` (the driver, machine 0) inside a Slurm allocation, and no other: each stage that spans
  machines is one Slurm job step (``srun --nodes M …``, cream_train/run/launch.py) whose tasks take their shard or
  machine rank from Slurm (cream_train/run/slurm_task.py); the step ends when every machine's part has, so nothing
  waits on a file. Needs ``srun`` on PATH and ``SLURM_JOB_ID`` (:func:`check_machines`).
* ``followers``: every machine runs the same `cream run` with its own ``machine_rank``. Machine r > 0
  (:func:`follow`) computes the same fingerprints, waits for machine 0 to start each stage (so a fresh start has
  cleared the old outputs), runs its part of the stages that span machines and waits for machine 0 to finish every
  stage before going on. It writes nothing but its heartbeat, its stage processes' outputs and its logs. Every
  machine's heartbeat (cream_train/run/heartbeat.py) bounds each wait: machine r stops within ``nodes.start_timeout``
  when machine 0 never shows up (absent, or the run directory not shared), and a machine waiting on another stops
  once that one's heartbeat has been still for ``nodes.alive_timeout``; each with one line. Rerun every machine to
  resume — finished stages and finished shards are kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from cream_data.errors import CreamError
from cream_data.progress import Progress
from cream_data.tables import io
from cream_train.run.heartbeat import Heartbeat, Pulse, sigterm_exits
from cream_train.run.loop import Log, Loop, RunSummary, inputs_fingerprint
from cream_train.run.manifest import Manifest

POLL = 2.0  # seconds between looks at the shared run directory (at most: a short timeout looks more often)


def check_machines(cfg, in_process: bool) -> None:
    """What the run's ``nodes`` need before anything starts, each refused with one line: stages as processes on
    several machines; under srun, a Slurm allocation with ``srun`` on PATH (``--plan`` and ``--check`` need
    neither: they never get here)."""
    nodes = cfg.nodes
    if in_process and nodes.num_machines > 1:
        raise CreamError(f"--in-process: nodes.num_machines is {nodes.num_machines}; a run on several machines "
                         "starts its stages as processes (leave out --in-process)")
    if nodes.launcher != "srun":
        return
    if not os.environ.get("SLURM_JOB_ID"):
        raise CreamError("nodes.launcher srun: not inside a Slurm allocation (SLURM_JOB_ID is unset); submit the run "
                         "with sbatch (examples/slurm/cream.sbatch) or start it in salloc; `cream run CONFIG --plan` "
                         "shows its srun lines anywhere")
    if shutil.which("srun") is None:
        raise CreamError("nodes.launcher srun: `srun` is not on PATH; run inside a Slurm allocation where srun is "
                         "installed, or use nodes.launcher followers")


def heartbeat(cfg, run: Path):
    """Machine 0's heartbeat while the run runs, where other machines follow it (else nothing)."""
    nodes = cfg.nodes
    if nodes.num_machines > 1 and nodes.launcher == "followers":
        return Heartbeat(run, 0, nodes.alive_timeout)
    return contextlib.nullcontext()


def wait_for_shards(folder: Path, name: str, log: Log, run: Path, nodes, poll: float = POLL) -> int:
    """Machine 0, after its own shard processes of stage ``name``: wait until every machine's shards have
    finished writing ``folder`` (it reads as a whole table); the rows of that table. Under srun the step that ran
    them has ended, so the table is whole. CreamError once another machine's heartbeat has been still for
    ``nodes.alive_timeout`` seconds."""
    if nodes.launcher == "srun":
        return int(io.read_manifest(folder).get("rows", 0))
    pulses = [Pulse(run, r) for r in range(1, nodes.num_machines)]
    poll = min(poll, nodes.alive_timeout / 4)
    said = False
    while True:
        try:
            return int(io.read_manifest(folder).get("rows", 0))
        except (CreamError, OSError):  # not whole yet (or a shared file system's passing error)
            for p in pulses:
                silent = p.silence()
                if silent > nodes.alive_timeout:
                    raise CreamError(
                        f"{name}: machine {p.rank}'s heartbeat ({p.path}) has not changed for {silent:.0f} s while "
                        f"machine 0 waits for its shards (nodes.alive_timeout {nodes.alive_timeout:g}); check that "
                        f"machine {p.rank} runs `cream run … --machine-rank {p.rank}` on this run directory (a "
                        "file system every machine shares), then rerun every machine: finished shards are kept"
                    ) from None
            if not said:
                log(f"  {name}: this machine's shards are done; waiting for the other machines' shards")
                said = True
            time.sleep(poll)


class _SharedManifest(Manifest):
    """Machine 0's manifest, read again on every look; never written from here."""

    def save(self) -> None:
        pass

    def reload(self) -> None:
        fresh = Manifest.open(self.path.parent)
        self.data.clear()
        self.data.update(fresh.data)


class Follower(Loop):
    """Machine r > 0: the same walk as machine 0, each stage waited for instead of recorded."""

    started = 0.0  # when this machine joined: a stop recorded by machine 0 after it ends this machine's run too

    def _open_manifest(self) -> Manifest:
        """Machine 0's manifest, once there (machine 0 creates the run; :meth:`_check_machine_0` bounds the wait)."""
        nodes = self.cfg.nodes
        self.poll = min(POLL, nodes.start_timeout / 4, nodes.alive_timeout / 4)
        self.machine0 = Pulse(self.run, 0)
        while not (self.run / "manifest.json").is_file():
            self._check_machine_0()
            time.sleep(self.poll)
        m = Manifest.open(self.run)
        return _SharedManifest(m.path, m.data)

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
                f"machine {rank}: no heartbeat from machine 0 in {self.run} within {nodes.start_timeout:g} s "
                f"({pulse.path} {state}; nodes.start_timeout); check that machine 0 runs `cream run` with this config "
                "now and that the run directory is on a file system both machines share")
        if pulse.seen and silent > nodes.alive_timeout:
            raise CreamError(
                f"machine {rank}: machine 0's heartbeat ({pulse.path}) has not changed for {silent:.0f} s "
                f"(nodes.alive_timeout {nodes.alive_timeout:g}); machine 0 stopped or lost the shared run directory: "
                "rerun every machine to resume")

    def stage(self, name: str, inputs: dict, outputs: list[Path], fn, prepare=None) -> str:
        fp = inputs_fingerprint(inputs)
        self.fps[name] = self.decide(name, fp, outputs).chained(fp)  # as machine 0 chains it
        if self._status(name, fp, outputs) == "done":
            self.skipped.append(name)
            return self.fps[name]
        section = self._section(name)
        if section is not None and self.stages.spans_machines(section) and not inputs.get("no_pairs"):
            self._wait(name, fp, outputs, ("running", "done"))
            if self._status(name, fp, outputs) != "done":
                rank = self.cfg.nodes.machine_rank
                self.log(f"[bold]▶ {name}[/] (machine {rank} of {self.cfg.nodes.num_machines})")
                self.runner.run(name, self.command(name), self.launcher(name), records=False)
                self.ran.append(name)
        self._wait(name, fp, outputs, ("done",))
        return self.fps[name]

    def evaluate(self, k: int) -> None:  # machine 0 evaluates; nothing downstream reads an evaluation
        pass

    def _section(self, name: str) -> str | None:
        """The section whose launch keys start stage ``name`` (None: a stage of machine 0's alone)."""
        kind = name.rsplit("-", 1)[0]
        if kind.startswith("train"):
            return "sft" if name == "train-M1" else "train"
        return {"sample": "sample", "anchor": "sample", "future-sample": "sample", "label": "label",
                "anchored": "label", "future-train": "train"}.get(kind)

    def _status(self, name: str, fp: str, outputs: list[Path]) -> str | None:
        """``done`` when machine 0's manifest decides stage ``name`` done as machine 0 does (:meth:`Manifest.decide`:
        its outputs checked on disk; a record of damaged outputs is one machine 0 will redo), ``running`` while machine
        0 runs it with these inputs, else None."""
        if self.manifest.decide(name, fp, outputs).status == "done":
            return "done"
        rec = self.manifest.data["stages"].get(name) or {}
        return "running" if rec.get("status") == "running" and rec.get("fingerprint") == fp else None

    def _wait(self, name: str, fp: str, outputs: list[Path], states: tuple[str, ...]) -> None:
        """Until machine 0's manifest shows stage ``name`` with this fingerprint in one of ``states``."""
        said = False
        while True:
            self.manifest.reload()
            if self._status(name, fp, outputs) in states:
                return
            stopped = self.manifest.data.get("stopped") or {}
            if stopped.get("time", 0) >= self.started:
                raise CreamError(f"machine 0 stopped the run ({stopped.get('error')}); rerun every machine to resume")
            self._check_machine_0()
            if not said:
                self.log(f"[dim]… {name}: waiting for machine 0[/]")
                said = True
            time.sleep(self.poll)

    def execute(self) -> RunSummary:
        t0 = time.time()
        self.walk()  # machine 0 evaluates and writes the report; this machine's part ends with the last training
        models = {f"M{k}": self.model(k) for k in range(self.cfg.iterations + 2)}
        return RunSummary(self.run, self.ran, self.skipped, models, None, time.time() - t0, self.reused)


def follow(cfg, table, *, log: Log, progress: Progress | None = None, reuse_from=None) -> RunSummary:
    """Machine ``cfg.nodes.machine_rank`` (> 0) of a multi-machine run."""
    from cream_train.run.stage_process import StageRunner

    run, nodes = Path(cfg.run_dir), cfg.nodes
    log(f"machine {nodes.machine_rank} of {nodes.num_machines}: following machine 0's run in {run}")
    started = time.time() - 5 * POLL  # machine 0 may have stopped just before this machine looked
    with sigterm_exits(), Heartbeat(run, nodes.machine_rank, nodes.alive_timeout):  # removed however this ends
        follower = Follower(cfg, table, log, reuse_from=reuse_from, progress=progress,
                            runner=StageRunner(run, log, progress, machine=nodes.machine_rank))
        follower.started = started
        return follower.execute()
