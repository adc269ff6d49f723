"""`cream run`: the whole CREAM procedure from one config, resumable stage by stage.

The stages are data (cream_train/run/walk.py: :class:`StageWalk` yields each :class:`cream_train.run.stage.Stage`
in order); :class:`Loop` is the executor that runs them, on machine 0 of a run (the others follow it:
cream_train/run/follow.py; ``--plan`` prints the same stages: plan.py).

Each stage records in ``RUN/manifest.json`` a fingerprint of its inputs (its settings and the fingerprints of the
stages it reads), its status, timings and outputs. A rerun skips a stage whose fingerprint matches a finished
record and whose outputs are in place and whole (:meth:`Manifest.decide`); an interrupted or since damaged stage
resumes (sampling and scoring keep their whole parts; training restarts and publishes its checkpoint atomically); a
stage whose inputs changed is redone, and so is everything downstream, because their fingerprints chain. Each model
stage runs as its own ``cream …`` process started by its launcher (cream_train/run/stage_process.py), or, in process,
as its ``work``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cream_data.processes import merge, record
from cream_data.progress import Progress
from cream_data.tables import io
from cream_data.tables.outputs import aside_path, remove, replacing
from cream_train.run.config import RunConfig, check_reuse_from
from cream_train.run.machines import wait_for_shards
from cream_train.run.manifest import Decision, Manifest, is_run_output, link_outputs, versions
from cream_train.run.stage import Stage, inputs_fingerprint
from cream_train.run.stage_list import stage_list
from cream_train.run.walk import Log, RunSummary, StageWalk

CARRIED = {"eval": "its evaluation is reused", "harness": "its harness results are reused"}


class Loop:
    """Runs the stages of a run, in order. ``runner``: a :class:`cream_train.run.stage_process.StageRunner` that starts
    each model stage as its own ``cream …`` process (what `cream run` does); None runs every stage in this process."""

    def __init__(self, cfg: RunConfig, prompts_table, log: Log, reuse_from: list[Path] | None = None,
                 resume: bool = True, progress: Progress | None = None, runner=None):
        self.cfg, self.log, self.runner = cfg, log, runner
        run = Path(cfg.run_dir)
        reuse = [check_reuse_from(r, run) for r in reuse_from or []]
        run.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest.open(run)
        if not resume and self.manifest.data["stages"]:
            # start afresh: forget every stage, so each one replaces its outputs as it runs
            log(f"[yellow]--no-resume:[/] recomputing all {len(self.manifest.data['stages'])} stage(s) of {run}")
            self.manifest.forget_all()
        self.walk = StageWalk(cfg, prompts_table, self.manifest, reuse_from=reuse, log=log, progress=progress)
        self.run = self.walk.layout.root
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.reused: list[str] = []

    def do(self, stage: Stage) -> None:
        """Skip, reuse, resume or run ``stage``, as :meth:`StageWalk.decide` says.

        Replace, then remove: a stage whose inputs changed keeps its old outputs (and caches) aside until its new
        ones are complete; when the redo fails or is interrupted they are moved back and its old manifest record
        restored, so the run holds what it held before (outputs.replacing)."""
        if stage.carried is not None:
            return self._carried(stage)
        name, paths = stage.name, [*stage.outputs, *stage.caches]
        for p in paths:  # old outputs a redo killed meanwhile left aside: the manifest describes what is in place
            remove(aside_path(Path(p)))
        decision = self.walk.decide(stage)
        if decision.status == "done":
            self.skipped.append(name)
            self.log(f"[dim]✓ {name}: done earlier, skipped[/]")
            return
        if decision.status == "reuse":
            return self._reuse(stage, decision.source)
        if decision.note:
            self.log(f"[yellow]{name}: recorded as done, but {decision.note}; redoing it and what reads it[/]")
        # interrupted: resume; damaged since it finished, or other inputs: redo whole (replace, then remove). A
        # damaged stage's readers are redone anyway, and a whole redo needs nothing of the damaged folder (whose
        # rows may name a model by the path the run had before it was moved).
        same_inputs = decision.status == "resume" and not decision.note
        old = self.manifest.data["stages"].get(name)
        with replacing([] if same_inputs else paths) as moved:
            try:
                self._run(stage, decision)
            except BaseException:
                if moved:  # the old outputs come back, and so does the record that describes them
                    self.manifest.restore(name, old)
                    self.log(f"[yellow]{name}: the redo did not finish; its earlier outputs are kept[/]")
                raise

    def _run(self, stage: Stage, decision: Decision) -> None:
        """Mark ``stage`` running, do its work, record it done."""
        name, resume = stage.name, decision.status == "resume"
        self.manifest.record_running(name, stage.fingerprint, stage.inputs, decision.redone)
        self.log(f"[bold]▶ {name}[/]{' (resuming)' if resume else ''}")
        t0 = time.time()
        info = self._work(stage, resume)
        if self.runner is not None and name in self.runner.commands:
            info["commands"] = self.runner.commands[name]
        self.manifest.record_done(name, time.time() - t0, stage.outputs, info)
        self.ran.append(name)
        self.log(f"  {name} finished in {time.time() - t0:.1f}s → {', '.join(str(o) for o in stage.outputs)}")

    def _work(self, stage: Stage, resume: bool) -> dict:
        """The work of ``stage`` and its manifest record: the run's own work; its command's call in this process;
        or, with a runner, its own ``cream …`` started as the processes of its launcher (their records merged)."""
        if stage.program is None:
            return stage.work(resume) or {}
        if self.runner is None:
            rec = record(stage.program, stage.work(resume))
        else:
            rec = merge(stage.program, self.runner.run(stage.name, stage.argv, stage.launcher))
            if self.cfg.nodes.num_machines > 1 and stage.shards_into is not None:
                rec["rows_all_machines"] = wait_for_shards(stage.shards_into, stage.name, self.log, self.run,
                                                           self.cfg.nodes)
        if stage.summary is not None:
            self.log(stage.summary(rec))
        return {**rec, **stage.extra}

    def _reuse(self, stage: Stage, found: tuple[Path, dict, list[Path]]) -> None:
        """Take a finished stage with the same fingerprint from another run (``--reuse-from``), as hard links.

        Equal fingerprints mean equal inputs all the way up the chain (settings, data, upstream stages, seeds),
        so the outputs are what this run would compute: e.g. the prompt split, M1 and the iteration-1 samples
        are the same for every method. Tables keep the producing run's paths in their ``model`` columns.
        """
        other, rec, srcs = found
        link_outputs(srcs, list(stage.outputs))
        self.manifest.record_reused(stage.name, rec, other)
        self.reused.append(stage.name)
        self.log(f"[dim]↺ {stage.name}: reused from {other}[/]")

    def _carried(self, stage: Stage) -> None:
        """The evaluation of a model carried forward: its source's stands (the report marks the row)."""
        self.manifest.record_carried(stage.name, stage.carried)
        for out in stage.outputs:
            if out.exists():
                shutil.rmtree(out)
        self.log(f"[dim]= {stage.name}: M{stage.k} is {stage.carried['carried_from']} carried forward; "
                 f"{CARRIED[stage.kind]}[/]")

    def execute(self) -> RunSummary:
        """Every stage, in order; the run's settings first, its report last."""
        import yaml

        t0, cfg = time.time(), self.cfg
        io.atomic_write_bytes(self.walk.layout.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        self.manifest.begin(method=cfg.method, iterations=cfg.iterations, seeds={"seed": cfg.seed},
                            versions=versions(), config_fp=inputs_fingerprint(cfg.to_dict()))
        try:
            for stage in stage_list(self.walk):
                self.do(stage)
        except BaseException as e:  # said in the manifest: the other machines of the run stop waiting
            self.manifest.mark_stopped(str(e) or type(e).__name__)
            raise
        from cream_data.reports.run_report import write_run_report

        report_md = write_run_report(self.run).markdown
        self.manifest.mark_finished()
        return RunSummary(self.run, self.ran, self.skipped, self.walk.models(), report_md, time.time() - t0,
                          self.reused)


def run(config_path: str | Path, *, log: Log = print, overrides: dict | None = None,
        reuse_from: list[Path] | None = None, resume: bool = True, progress: Progress | None = None,
        in_process: bool = False, mapping: dict | None = None) -> RunSummary:
    """The run of ``config_path``: each model stage as its own ``cream …`` process (its log under RUN/logs/), or,
    ``in_process``, every stage in this one (tests, debugging; the launch keys are then not used). ``mapping``: the
    config's settings, given instead of read from ``config_path`` (:func:`~cream_train.run.config.load_run_config`)."""
    from cream_train.run.config import load_run_config
    from cream_train.run.follow import follow
    from cream_train.run.machines import check_machines, heartbeat

    from cream_data.tables.outputs import guard, locked

    cfg, _base, table = load_run_config(config_path, overrides, machine_checks=None if in_process else "start",
                                        mapping=mapping)
    check_machines(cfg, in_process)  # several machines: processes; srun: inside a Slurm allocation
    if cfg.nodes.machine_rank > 0:  # another machine of a multi-machine run: its shards, machine 0's bookkeeping
        return follow(cfg, table, log=log, progress=progress, reuse_from=reuse_from)
    run_dir = guard(cfg.run_dir, "run", is_run_output, flag="run_dir", what="run directory")
    runner = None
    if not in_process:
        from cream_train.run.stage_process import StageRunner

        runner = StageRunner(run_dir, log, progress)
    try:
        with locked(run_dir, flag="run_dir", log=log), heartbeat(cfg, run_dir):  # followers: machine 0 is alive
            return Loop(cfg, table, log, reuse_from=reuse_from, resume=resume, progress=progress,
                        runner=runner).execute()
    finally:
        if runner is not None:
            runner.close()
