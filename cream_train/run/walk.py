"""The stages of a `cream run`, in order, as data: :class:`StageWalk`, the one definition of the procedure

    M0 ──SFT──▶ M1 ──(sample ▶ label ▶ train)──▶ M2 ──(…)──▶ … ──▶ M_{T+1}, eval after each model

that three executors consume: the run itself (cream_train/run/loop.py), its plan (plan.py: nothing run or written)
and the other machines of a run on several (follow.py). Iterating a walk yields each stage
(:class:`cream_train.run.stage.Stage`: its inputs, outputs, work and command line) once the ones before it have been
decided: the executor calls :meth:`StageWalk.decide` (:meth:`cream_train.run.manifest.Manifest.decide`, the one
decision) on each stage before asking for the next, so the fingerprints chain into the inputs downstream.

Some stages depend on what the run finds as it goes, which is why the list is walked rather than built at once: a
pair-less iteration carries M_t forward (stage_defs.train reads the preferences' manifest and records the carry), a
temporal iteration without anchored pairs has no future model (stage_defs_temporal), and a carried model's evaluation is
its source's (stage_defs_eval). The stage definitions are small functions in stage_defs.py, stage_defs_temporal.py and
stage_defs_eval.py; their paths come from the run's :class:`cream_train.run.layout.RunLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cream_data.progress import Progress
from cream_train.run.config import RunConfig
from cream_train.run.layout import RunLayout
from cream_train.run.manifest import Decision, Manifest
from cream_train.run.sections import Stages
from cream_train.run.stage import Stage, inputs_fingerprint

Log = Callable[[str], None]


@dataclass
class RunSummary:
    """What an executor hands back: the run directory, the stages it ran, skipped and reused, the models."""

    run_dir: Path
    ran: list[str]
    skipped: list[str]
    models: dict[str, str]
    report_md: str | None = None
    seconds: float = 0.0
    reused: list[str] = field(default_factory=list)


class StageWalk:
    """The stages of the run ``cfg`` (a resolved RunConfig) over the prompts ``table``, with what the run
    ``manifest`` says of carried models; ``reuse_from``: other runs (checked) whose finished stages may be linked.
    ``fps``: each decided stage's fingerprint as the stages downstream read it."""

    def __init__(self, cfg: RunConfig, table, manifest: Manifest, *, reuse_from: list[Path] = (),
                 log: Log = print, progress: Progress | None = None):
        self.cfg, self.table, self.manifest, self.log, self.progress = cfg, table, manifest, log, progress
        self.layout = RunLayout(cfg.run_dir)
        self.stages = Stages(cfg, self.layout.root)  # each stage's config: its section's settings + what the run owns
        self.reuse_from = list(reuse_from)
        self.fps: dict[str, str] = {}
        self._other_manifests: dict[Path, Manifest] = {}  # read once per run: the other runs do not change meanwhile

    # ------------------------------------------------------------------ the decision
    def decide(self, stage: Stage) -> Decision:
        """:meth:`Manifest.decide` for ``stage``, with the ``--reuse-from`` runs: the run runs by it, a plan prints it,
        another machine waits by it. The stages downstream then read its chained fingerprint."""
        decision = self.manifest.decide(stage, reuse=lambda: self._reuse_source(stage))
        self.fps[stage.name] = decision.chained(stage.fingerprint)
        return decision

    def _reuse_source(self, stage: Stage) -> tuple[Path, dict, list[Path]] | None:
        """(run, its stage record, its outputs) of the first ``--reuse-from`` run where ``stage`` is done (same
        fingerprint, outputs there and whole); None when none does."""
        for other in self.reuse_from:
            manifest = self._other_manifests.setdefault(other, Manifest.open(other, writable=False))
            srcs = [other / self.layout.relative(o) for o in stage.outputs]
            if manifest.decide(stage, outputs=srcs).status == "done":
                return other, manifest.data["stages"][stage.name], srcs
        return None

    # ------------------------------------------------------------------ models
    def model(self, k: int) -> str:
        """Path (or name) of M_k: M0 is the configured base model; later ones live under RUN/models/, but a model
        carried forward by a pair-less iteration is the one it copies (derived, not read from the manifest's paths)."""
        if k == 0:
            return self.cfg.model
        if self.manifest.carried_from(f"M{k}"):
            return self.model(k - 1)
        return str(self.layout.model(k))

    def parent(self, k: int) -> int | None:
        """The model M_k was trained from (None for M0). A model carried forward by a pair-less iteration has the
        same weights as the one it copies, so it keeps that model's parent: iteration t+1 then scores M_{t+1}
        against a real reference instead of against itself (all-zero DPO rewards, a loop that never learns)."""
        if k == 0:
            return None
        return self.parent(k - 1) if self.manifest.carried_from(f"M{k}") else k - 1

    def model_fp(self, k: int) -> str:
        """M0 by name and content (a base checkpoint changed in place redoes the run); later models by the
        fingerprint of the stage that trained them."""
        if k == 0:
            from cream_data.engines.models import content_id

            return inputs_fingerprint([self.cfg.model, content_id(self.cfg.model)])
        return self.fps[f"train-M{k}"]

    def models(self) -> dict[str, str]:
        """Every model of the run by name (M0 … M_{T+1})."""
        return {f"M{k}": self.model(k) for k in range(self.cfg.iterations + 2)}
