"""`cream run`: the whole CREAM procedure from one config, resumable stage by stage.

    M0 ──SFT──▶ M1 ──(sample ▶ label ▶ train)──▶ M2 ──(…)──▶ … ──▶ M_{T+1}, eval after each model

Each stage records in ``RUN/manifest.json`` a fingerprint of its inputs (its settings and the fingerprints of the
stages it reads), its status, timings and outputs. A rerun skips a stage whose fingerprint matches a finished
record and whose outputs are in place and whole (:meth:`Manifest.decide`); an interrupted or since damaged stage
resumes (sampling and scoring keep their whole parts; training restarts and publishes its checkpoint atomically); a
stage whose inputs changed is redone, and so is everything downstream, because their fingerprints chain.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cream_data.processes import merge, record
from cream_data.tables import io
from cream_data.progress import Progress
from cream_data.tables.outputs import aside_path, remove, replacing
from cream_train.run.config import RunConfig
from cream_train.run.manifest import Decision, Manifest, is_run_output, link_outputs, table_problem, versions
from cream_train.run.loop_commands import StageCommands
from cream_train.run.loop_eval import EvalStages
from cream_train.run.loop_temporal import TemporalStages
from cream_train.run.sections import Stages, fingerprinted

Log = Callable[[str], None]


def inputs_fingerprint(obj) -> str:
    """A stage's fingerprint: 16 hex digits of sha256 over its inputs as sorted JSON (chained through upstream fps)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RunSummary:
    run_dir: Path
    ran: list[str]
    skipped: list[str]
    models: dict[str, str]
    report_md: str | None = None
    seconds: float = 0.0
    reused: list[str] = field(default_factory=list)


class Loop(StageCommands, TemporalStages, EvalStages):
    """The stages of a run, in order. ``runner``: a :class:`cream_train.run.stage_process.StageRunner` that starts each
    model stage as its own ``cream …`` process (what `cream run` does); None runs every stage in this process."""

    def __init__(self, cfg: RunConfig, prompts_table, log: Log, reuse_from: list[Path] | None = None,
                 resume: bool = True, progress: Progress | None = None, runner=None):
        from cream_train.run.config import check_reuse_from

        self.cfg, self.prompts_table, self.log, self.progress = cfg, prompts_table, log, progress
        self.runner = runner
        self.run = Path(cfg.run_dir)
        self.reuse_from = [check_reuse_from(r, self.run) for r in reuse_from or []]
        self.manifest = self._open_manifest()
        if not resume and self.manifest.data["stages"]:
            # start afresh: forget every stage, so each one replaces its outputs as it runs
            log(f"[yellow]--no-resume:[/] recomputing all {len(self.manifest.data['stages'])} stage(s) of {self.run}")
            self.manifest.data["stages"], self.manifest.data["models"] = {}, {}
            self.manifest.data.pop("carried", None)
            self.manifest.save()
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.reused: list[str] = []
        self._other_manifests: dict[Path, Manifest] = {}  # read once per run: the other runs do not change meanwhile
        self.fps: dict[str, str] = {}
        self.stages = Stages(cfg, self.run)  # each stage's config: its section's settings + what the run owns

    def _open_manifest(self) -> Manifest:
        self.run.mkdir(parents=True, exist_ok=True)
        return Manifest.open(self.run)

    # ------------------------------------------------------------------ stage bookkeeping
    def stage(self, name: str, inputs: dict, outputs: list[Path], fn: Callable[[bool], dict | None],
              prepare: Callable[[bool], list[Path]] | None = None) -> str:
        """Skip, reuse, resume or run stage ``name``: ``fn(resume)`` does the work and returns its manifest record;
        ``prepare(resume)`` names what a fresh start must not find besides the outputs (its caches).

        Replace, then remove: a stage whose inputs changed keeps its old outputs (and caches) aside until its new
        ones are complete; when the redo fails or is interrupted they are moved back and its old manifest record
        restored, so the run holds what it held before (outputs.replacing)."""
        fp = inputs_fingerprint(inputs)
        self.fps[name] = fp
        paths = [*outputs, *((prepare and prepare(False)) or [])]
        for p in paths:  # old outputs a redo killed meanwhile left aside: the manifest describes what is in place
            remove(aside_path(Path(p)))
        decision = self.decide(name, fp, outputs)
        self.fps[name] = decision.chained(fp)  # what the stages downstream read
        if decision.status == "done":
            self.skipped.append(name)
            self.log(f"[dim]✓ {name}: done earlier, skipped[/]")
            return self.fps[name]
        if decision.status == "reuse":
            self._reuse(name, decision.source, outputs)
            return self.fps[name]
        if decision.note:
            self.log(f"[yellow]{name}: recorded as done, but {decision.note}; redoing it and what reads it[/]")
        # interrupted: resume; damaged since it finished, or other inputs: redo whole (replace, then remove). A
        # damaged stage's readers are redone anyway, and a whole redo needs nothing of the damaged folder (whose
        # rows may name a model by the path the run had before it was moved).
        same_inputs = decision.status == "resume" and not decision.note
        stages, old = self.manifest.data["stages"], self.manifest.data["stages"].get(name)
        with replacing([] if same_inputs else paths) as moved:
            try:
                self._run_stage(name, fp, inputs, outputs, fn, decision)
            except BaseException:
                if moved:  # the old outputs come back, and so does the record that describes them
                    stages[name] = old
                    self.manifest.data["stages"] = {k: v for k, v in stages.items() if v is not None}
                    self.manifest.save()
                    self.log(f"[yellow]{name}: the redo did not finish; its earlier outputs are kept[/]")
                raise
        return self.fps[name]

    def _run_stage(self, name: str, fp: str, inputs: dict, outputs: list[Path], fn, decision: Decision) -> None:
        """Mark stage ``name`` running, do its work, record it done."""
        resume = decision.status == "resume"
        rec = {"status": "running", "fingerprint": fp, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "inputs": {k: v for k, v in inputs.items() if k.endswith("_fp")},
               **({"redone": decision.redone} if decision.redone else {})}
        self.manifest.data["stages"][name] = rec
        self.manifest.save()
        self.log(f"[bold]▶ {name}[/]{' (resuming)' if resume else ''}")
        t0 = time.time()
        info = fn(resume) or {}
        if self.runner is not None and name in self.runner.commands:
            info["commands"] = self.runner.commands[name]
        rec.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(time.time() - t0, 2),
                   outputs=[str(Path(o).relative_to(self.run)) for o in outputs], **info)
        self.manifest.save()
        self.ran.append(name)
        self.log(f"  {name} finished in {time.time() - t0:.1f}s → {', '.join(str(o) for o in outputs)}")

    def decide(self, name: str, fp: str, outputs: list[Path]) -> Decision:
        """:meth:`Manifest.decide` here, with the ``--reuse-from`` runs: the loop runs by it, ``--plan`` prints it."""
        return self.manifest.decide(name, fp, outputs, lambda: self._reuse_source(name, fp, outputs))

    def _reuse(self, name: str, found: tuple[Path, dict, list[Path]], outputs: list[Path]) -> None:
        """Take a finished stage with the same fingerprint from another run (``--reuse-from``), as hard links.

        Equal fingerprints mean equal inputs all the way up the chain (settings, data, upstream stages, seeds),
        so the outputs are what this run would compute: e.g. the prompt split, M1 and the iteration-1 samples
        are the same for every method. Tables keep the producing run's paths in their ``model`` columns.
        """
        other, rec, srcs = found
        link_outputs(srcs, outputs)
        self.manifest.data["stages"][name] = {**rec, "reused_from": str(other)}
        self.manifest.save()
        self.reused.append(name)
        self.log(f"[dim]↺ {name}: reused from {other}[/]")

    def _reuse_source(self, name: str, fp: str, outputs: list[Path]) -> tuple[Path, dict, list[Path]] | None:
        """(run, its stage record, its outputs) of the first ``--reuse-from`` run where this stage is done (same
        fingerprint, outputs there and whole); None when none does."""
        for other in self.reuse_from:
            manifest = self._other_manifests.setdefault(other, Manifest.open(other))
            srcs = [other / Path(o).relative_to(self.run) for o in outputs]
            if manifest.decide(name, fp, srcs).status == "done":
                return other, manifest.data["stages"][name], srcs
        return None

    # ------------------------------------------------------------------ models
    def model(self, k: int) -> str:
        """Path (or name) of M_k: M0 is the configured base model; later ones live under RUN/models/, but a model
        carried forward by a pair-less iteration is the one it copies (derived, not read from the manifest's paths)."""
        if k == 0:
            return self.cfg.model
        if f"M{k}" in self.manifest.data.get("carried", {}):
            return self.model(k - 1)
        return str(self.run / "models" / f"M{k}")

    def parent(self, k: int) -> int | None:
        """The model M_k was trained from (None for M0). A model carried forward by a pair-less iteration has the
        same weights as the one it copies, so it keeps that model's parent: iteration t+1 then scores M_{t+1}
        against a real reference instead of against itself (all-zero DPO rewards, a loop that never learns)."""
        if k == 0:
            return None
        carried = self.manifest.data.get("carried", {})
        return self.parent(k - 1) if f"M{k}" in carried else k - 1

    def model_fp(self, k: int) -> str:
        """M0 by name and content (a base checkpoint changed in place redoes the run); later models by the
        fingerprint of the stage that trained them."""
        if k == 0:
            from cream_data.engines.models import content_id

            return inputs_fingerprint([self.cfg.model, content_id(self.cfg.model)])
        return self.fps[f"train-M{k}"]

    # ------------------------------------------------------------------ a stage's command and its processes
    def _work(self, name: str, command: str, call: Callable[[], object]) -> dict:
        """The work of stage ``name`` and its manifest record: ``call()`` in this process, or, with a runner, the
        stage's own ``cream COMMAND`` started as the processes of its launcher (their records merged)."""
        if self.runner is None:
            return record(command, call())
        argv = self.command(name)
        rec = merge(command, self.runner.run(name, argv, self.launcher(name)))
        if self.cfg.nodes.num_machines > 1 and command in ("sample", "label"):
            from cream_train.run.machines import wait_for_shards

            out = Path(argv[argv.index("--out") + 1])
            rec["rows_all_machines"] = wait_for_shards(out if command == "sample" else out / "preferences", name,
                                                       self.log, self.run, self.cfg.nodes)
        return rec

    # ------------------------------------------------------------------ stages
    def prompts(self) -> None:
        from cream_data.tables.fingerprint import table_fingerprint
        from cream_data.inputs.prompts import split_prompts

        cfg = self.cfg
        outs = [self.run / "prompts" / f"subset-{t}" for t in range(1, cfg.iterations + 1)]
        inputs = {"table_fp": table_fingerprint(self.prompts_table), "T": cfg.iterations, "seed": cfg.seed,
                  "per_iteration": cfg.prompts.per_iteration}

        def go(_resume):
            subsets = split_prompts(self.prompts_table, cfg.iterations, seed=cfg.seed)
            for out, sub in zip(outs, subsets):
                if cfg.prompts.per_iteration:
                    sub = sub.slice(0, cfg.prompts.per_iteration)
                io.write_table(sub, out, "prompts")
            return {"rows": [s.num_rows if not cfg.prompts.per_iteration else min(s.num_rows, cfg.prompts.per_iteration)
                             for s in subsets]}

        self.stage("prompts", inputs, outs, go)

    def sft(self) -> None:
        from cream_data.tables.fingerprint import table_fingerprint
        from cream_data.inputs.prompts import load_sft
        from cream_train.train import train

        s = self.cfg.sft
        table = load_sft(s.data, layout=s.layout, limit=s.limit)
        tcfg = self.stages.sft(self.model(0))
        data_out = self.run / "sft"
        self.stage("sft-data", {"table_fp": table_fingerprint(table)}, [data_out],
                   lambda _r: (io.write_table(table, data_out, "sft"), {"rows": table.num_rows})[1])
        out = self.run / "models" / "M1"
        inputs = {"data_fp": self.fps["sft-data"], "model_fp": self.model_fp(0), "seed": self.cfg.seed,
                  **fingerprinted(s)}

        def go(_resume):
            return self._work("train-M1", "train", lambda: train(tcfg, progress=self.progress))

        self.fps["train-M1"] = self.stage("train-M1", inputs, [out], go)

    def sample(self, t: int) -> None:
        """M_t samples iteration t's prompts."""
        self._sample(f"sample-{t}", t, self.stages.sample(t, self.model(t)), self.model_fp(t),
                     self.run / f"iter-{t}" / "responses")

    def _sample(self, name: str, t: int, scfg, model_fp: str, out: Path) -> None:
        from cream_data.stages.sample import sample

        prompts = self.run / "prompts" / f"subset-{t}"
        inputs = {"prompts_fp": self.fps["prompts"], "model_fp": model_fp, **fingerprinted(self.cfg.sample),
                  "seed": scfg.seed}
        if name != f"sample-{t}":
            inputs["stage"] = name.rsplit("-", 1)[0]  # anchor / future-sample: other draws than M_t's

        def go(resume):
            return self._work(name, "sample",
                              lambda: sample(prompts, scfg, out, overwrite=not resume, progress=self.progress))

        self.stage(name, inputs, [out], go)

    def label(self, t: int, kind: str = "label") -> None:
        """Score iteration t's responses and pair them (``kind`` anchored: method temporal's pairs for the future
        model, in iter-t/anchored/)."""
        from cream_data.rewards.judge import template_hash
        from cream_data.stages.label import judge_template_text, label

        lab = self.cfg.label
        it = self.run / f"iter-{t}"
        out = it / "anchored" if kind == "anchored" else it
        outs = [out / "scores", out / "preferences"]
        name = f"{kind}-{t}"
        # every method also scores with M_{t-1} (and M_{t-2}) so consistency is reported for all of them;
        # M_{t-1} is M_t's parent: after a pair-less iteration, the model M_t was carried from is skipped
        ref = self.parent(t)
        prev_ref = self.parent(ref)
        lcfg = self._label_config(t, kind)
        inputs = {"responses_fp": self.fps[f"sample-{t}"], "model_fp": self.model_fp(t),
                  **{f"{p}_fp": self.fps[f"{p}-{t}"] for p in ("anchor", "future-sample") if f"{p}-{t}" in self.fps
                     and (p == "anchor" or lcfg.chosen_from)},
                  "ref_fp": self.model_fp(ref), "prev_ref_fp": self.model_fp(prev_ref) if prev_ref is not None else None,
                  "reward": self.cfg.reward, **fingerprinted(lab), **self.cfg.label_pairing(),
                  "judge_template_fp": template_hash(judge_template_text(lcfg)) if lab.judge_template else None}
        if lab.reward_model:  # its content is an input too: a reward model retrained in place redoes the stage
            from cream_data.engines.models import content_id

            inputs["reward_model_id"] = content_id(lab.reward_model)

        def go(_resume):
            return self._work(name, "label",
                              lambda: label(it / "responses", lcfg, out, log=self.log, progress=self.progress))

        self.stage(name, inputs, outs, go, prepare=lambda _resume: [out / "logps", out / "rm"])  # its caches

    def train(self, t: int) -> None:
        from cream_train.train import train

        tr = self.cfg.train
        prefs = self.run / f"iter-{t}" / "preferences"
        out = self.run / "models" / f"M{t + 1}"
        inputs = {"prefs_fp": self.fps[f"label-{t}"], "model_fp": self.model_fp(t), "method": self.cfg.train_method,
                  "seed": self.cfg.seed, **fingerprinted(tr)}

        manifest = io.read_manifest(prefs) if not table_problem(prefs) else {}  # none (yet, or damaged): `--plan`
        if manifest.get("rows") == 0:
            # Nothing to learn from (e.g. a judge whose scores never parse): M_{t+1} = M_t, said loudly.
            skipped = {k: v for k, v in (manifest.get("summary", {}).get("skipped") or {}).items() if v}

            def carry(_resume):
                self.log(f"[yellow]warning:[/] iteration {t} produced no preference pairs (skipped: {skipped}); "
                         f"M{t + 1} = M{t} (carried: same weights, same reference M{self.parent(t)}). More prompts, "
                         "a larger sample.n or longer judge outputs may help")
                return {"no_pairs": True, "skipped": skipped, "carried_from": f"M{t}"}

            self.fps[f"train-M{t + 1}"] = self.stage(f"train-M{t + 1}", {**inputs, "no_pairs": True}, [], carry)
            self.manifest.data["models"][f"M{t + 1}"] = self.model(t)
            self.manifest.data.setdefault("carried", {})[f"M{t + 1}"] = f"M{t}"
            self.manifest.save()
            return
        self.manifest.data["models"].pop(f"M{t + 1}", None)
        self.manifest.data.get("carried", {}).pop(f"M{t + 1}", None)

        def go(_resume):
            return {**self._work(f"train-M{t + 1}", "train",
                                 lambda: train(self.stages.train(t, self.model(t)), progress=self.progress)),
                    "pairs": manifest.get("rows", 0)}

        self.fps[f"train-M{t + 1}"] = self.stage(f"train-M{t + 1}", inputs, [out], go)

    # ------------------------------------------------------------------ the procedure
    def walk(self) -> None:
        """Every stage, in order (each one skipped, reused, resumed or run by :meth:`stage`)."""
        self.prompts()
        if self.should_eval(0):
            self.evaluate(0)
        self.sft()
        if self.should_eval(1):
            self.evaluate(1)
        for t in range(1, self.cfg.iterations + 1):
            self.sample(t)
            if self.cfg.method == "temporal":  # past-anchored pairs, a future model, its samples (docs/REWARDS.md)
                self.anchor(t)
                self.label(t, "anchored")
                self.future_train(t)
                self.future_sample(t)
            self.label(t)
            self.train(t)
            if self.should_eval(t + 1):
                self.evaluate(t + 1)

    def execute(self) -> RunSummary:
        t0 = time.time()
        cfg = self.cfg
        import yaml

        io.atomic_write_bytes(self.run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        self.manifest.data.update(method=cfg.method, iterations=cfg.iterations, seeds={"seed": cfg.seed},
                                  versions=versions(), config_fp=inputs_fingerprint(cfg.to_dict()))
        for mark in ("stopped", "finished"):  # `finished` comes back when this run ends (cream publish reads it)
            self.manifest.data.pop(mark, None)
        self.manifest.save()
        try:
            self.walk()
        except BaseException as e:  # said in the manifest: the other machines of the run stop waiting
            self.manifest.data["stopped"] = {"time": time.time(), "error": str(e) or type(e).__name__}
            self.manifest.save()
            raise
        from cream_data.reports.run_report import write_run_report

        report_md = write_run_report(self.run).markdown
        self.manifest.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest.save()
        models = {f"M{k}": self.model(k) for k in range(cfg.iterations + 2)}
        return RunSummary(self.run, self.ran, self.skipped, models, report_md, time.time() - t0, self.reused)


def run(config_path: str | Path, *, log: Log = print, overrides: dict | None = None,
        reuse_from: list[Path] | None = None, resume: bool = True, progress: Progress | None = None,
        in_process: bool = False) -> RunSummary:
    """The run of ``config_path``: each model stage as its own ``cream …`` process (its log under RUN/logs/), or,
    ``in_process``, every stage in this one (tests, debugging; the launch keys are then not used)."""
    from cream_train.run.machines import check_machines, follow, heartbeat
    from cream_train.run.config import load_run_config

    from cream_data.tables.outputs import guard, locked

    cfg, _base, table = load_run_config(config_path, overrides, machine_checks=None if in_process else "start")
    check_machines(cfg, in_process)  # several machines: processes; srun: inside a Slurm allocation
    if cfg.nodes.machine_rank > 0:  # another machine of a multi-machine run: its shards, machine 0's bookkeeping
        return follow(cfg, table, log=log, progress=progress, reuse_from=reuse_from)
    run_dir = guard(cfg.run_dir, "run", is_run_output, flag="run_dir", what="run directory")
    runner = None
    if not in_process:
        from cream_train.run.stage_process import StageRunner

        runner = StageRunner(run_dir, log, progress)
    with locked(run_dir, flag="run_dir", log=log), heartbeat(cfg, run_dir):  # followers: machine 0 is alive
        return Loop(cfg, table, log, reuse_from=reuse_from, resume=resume, progress=progress, runner=runner).execute()
