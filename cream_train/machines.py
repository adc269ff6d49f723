"""A run on several machines (``nodes: {num_machines: M, …}``): every machine runs the same `cream run` with its own
``machine_rank`` on a run directory that all of them see (a shared file system).

Machine 0 is the run: it holds the run directory's lock, writes ``manifest.json``, runs the bookkeeping stages
(prompt split, SFT data), evaluation and the report, and its stages are the ones the manifest records. Every stage
that spans machines runs on all of them at once:

* sampling and scoring: machine r starts shards ``r*k … r*k+k-1`` of ``k*M`` (``data_parallel: k``); machine 0
  marks the stage done once every shard's manifest is there (reading the folder is the merge);
* training with ``launcher: accelerate`` or ``torchrun``: each machine starts its own launcher with its
  ``machine_rank``; they meet at ``main_process_ip:main_process_port`` and run one training (rank 0 saves).

Machine r > 0 (:func:`follow`) computes the same fingerprints, waits for machine 0 to start each stage (so a
fresh start has cleared the old outputs), runs its part of the stages that span machines and waits for machine 0
to finish every stage before going on. It writes nothing but its stage processes' outputs and its logs
(``RUN/logs/``). If a machine fails, the others wait: let the scheduler stop the job (``srun --kill-on-bad-exit``)
and rerun it — finished stages and finished shards are kept.
"""

from __future__ import annotations

import time
from pathlib import Path

from cream_data.errors import CreamError
from cream_data.progress import Progress
from cream_data.tables import io
from cream_train.loop import Log, Loop, RunSummary, inputs_fingerprint
from cream_train.run_manifest import Manifest

POLL = 2.0  # seconds between looks at the shared run directory


def wait_for_shards(folder: Path, name: str, log: Log, poll: float = POLL) -> int:
    """Machine 0, after its own shard processes of stage ``name``: wait until every machine's shards have
    finished writing ``folder`` (it reads as a whole table); the rows of that table."""
    said = False
    while True:
        try:
            return int(io.read_manifest(folder).get("rows", 0))
        except CreamError:
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

    poll = POLL
    started = 0.0  # when this machine joined: a stop recorded by machine 0 after it ends this machine's run too

    def _open_manifest(self) -> Manifest:
        while not (self.run / "manifest.json").is_file():  # machine 0 creates the run
            time.sleep(self.poll)
        m = Manifest.open(self.run)
        return _SharedManifest(m.path, m.data)

    def stage(self, name: str, inputs: dict, outputs: list[Path], fn, prepare=None) -> str:
        fp = inputs_fingerprint(inputs)
        self.fps[name] = fp
        if self._status(name, fp) == "done":
            self.skipped.append(name)
            return fp
        section = self._section(name)
        if section is not None and self.stages.spans_machines(section) and not inputs.get("no_pairs"):
            self._wait(name, fp, ("running", "done"))
            if self._status(name, fp) != "done":
                rank = self.cfg.nodes.machine_rank
                self.log(f"[bold]▶ {name}[/] (machine {rank} of {self.cfg.nodes.num_machines})")
                self.runner.run(name, self.command(name), self.launcher(name), records=False)
                self.ran.append(name)
        self._wait(name, fp, ("done",))
        return fp

    def evaluate(self, k: int) -> None:  # machine 0 evaluates; nothing downstream reads an evaluation
        pass

    def _section(self, name: str) -> str | None:
        """The section whose launch keys start stage ``name`` (None: a stage of machine 0's alone)."""
        kind = name.rsplit("-", 1)[0]
        if kind.startswith("train"):
            return "sft" if name == "train-M1" else "train"
        return {"sample": "sample", "anchor": "sample", "future-sample": "sample", "label": "label",
                "anchored": "label", "future-train": "train"}.get(kind)

    def _status(self, name: str, fp: str) -> str | None:
        rec = self.manifest.data["stages"].get(name) or {}
        return rec.get("status") if rec.get("fingerprint") == fp else None

    def _wait(self, name: str, fp: str, states: tuple[str, ...]) -> None:
        """Until machine 0's manifest shows stage ``name`` with this fingerprint in one of ``states``."""
        said = False
        while True:
            self.manifest.reload()
            if self._status(name, fp) in states:
                return
            stopped = self.manifest.data.get("stopped") or {}
            if stopped.get("time", 0) >= self.started:
                raise CreamError(f"machine 0 stopped the run ({stopped.get('error')}); rerun every machine to resume")
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
    from cream_train.stage_process import StageRunner

    run = Path(cfg.run_dir)
    log(f"machine {cfg.nodes.machine_rank} of {cfg.nodes.num_machines}: following machine 0's run in {run}")
    follower = Follower(cfg, table, log, reuse_from=reuse_from, progress=progress,
                        runner=StageRunner(run, log, progress, machine=cfg.nodes.machine_rank))
    follower.started = time.time() - 5 * POLL  # machine 0 may have stopped just before this machine looked
    return follower.execute()
