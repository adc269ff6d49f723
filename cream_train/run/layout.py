"""Where each thing of a run lives in its directory: :class:`RunLayout`, the one place that spells a run's paths
(the stages, the executors, the stage configs and the heartbeats all ask it; none writes a path by hand).

    RUN/
      config.yaml, manifest.json      the settings as run; every stage's record (cream_train/run/manifest.py)
      logs/, logs/tb/<stage>/         each stage process's log; a training stage's tracker
      .machines/<rank>.alive          the heartbeats of a run on several machines
      prompts/subset-<t>/             D_U^t: iteration t's prompts
      prompts/probe/                  the held-out probe prompts (prompts.probe > 0), never in a subset
      sft/                            the SFT conversations (M0 → M1)
      models/M<k>/                    M1 … M_{T+1}
      iter-<t>/responses/             M_t's samples
      iter-<t>/scores/, preferences/  their scores and pairs (and the label stage's caches logps/, rm/)
      iter-<t>/anchor/responses/      method temporal: M1's samples, the past the rejected side is anchored to
      iter-<t>/anchored/…             … the pairs the future model trains on (scores/, preferences/, caches)
      iter-<t>/future/model/, responses/   … the temporary future model and its samples
      iter-<t>/probe/…                M_t's samples of the probe prompts and their scores (responses/, scores/,
                                      human/, preferences/, caches): a diagnostic, never trained on
      eval/M<k>/, eval-harness/M<k>/  the evaluations of M_k
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cream_data.tables.iterations import iteration_dir
from cream_data.vocab import PROBE_FOLDER


@dataclass(frozen=True)
class RunLayout:
    """The paths of the run directory ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ the run's own files
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def tracker(self, stage: str) -> Path:
        """Where a training stage's tracker (TensorBoard) writes."""
        return self.logs / "tb" / stage

    def heartbeat(self, rank: int) -> Path:
        """Machine ``rank``'s heartbeat (hidden: the run directory's guard ignores the folder)."""
        return self.root / ".machines" / f"{rank}.alive"

    def relative(self, path: Path) -> str:
        """``path`` as the manifest records a stage's output: relative to the run directory."""
        return str(Path(path).relative_to(self.root))

    # ------------------------------------------------------------------ data and models
    def prompts_subset(self, t: int) -> Path:
        return self.root / "prompts" / f"subset-{t}"

    @property
    def probe_prompts(self) -> Path:
        """The probe prompts (``prompts.probe``): set aside from D_U before the split, the same every iteration."""
        return self.root / "prompts" / PROBE_FOLDER

    @property
    def sft_data(self) -> Path:
        return self.root / "sft"

    def model(self, k: int) -> Path:
        """Where M_k (k >= 1) is trained to (a model carried forward has no folder of its own)."""
        return self.root / "models" / f"M{k}"

    # ------------------------------------------------------------------ iteration t
    def iteration(self, t: int) -> Path:
        return self.root / iteration_dir(t)

    def responses(self, t: int) -> Path:
        return self.iteration(t) / "responses"

    def labels(self, t: int, kind: str = "label") -> Path:
        """Where a label stage writes (its ``--out``): iteration t's folder, or (``kind`` anchored, method temporal)
        its anchored/ folder, or (``kind`` probe) its probe/ folder."""
        return self.iteration(t) / kind if kind in ("anchored", PROBE_FOLDER) else self.iteration(t)

    def human(self, t: int, kind: str = "label") -> Path:
        """The human-written answers' scores of a label stage (``label.human_answers``; always for the probe)."""
        return self.labels(t, kind) / "human"

    def scores(self, t: int, kind: str = "label") -> Path:
        return self.labels(t, kind) / "scores"

    def preferences(self, t: int, kind: str = "label") -> Path:
        return self.labels(t, kind) / "preferences"

    def label_caches(self, t: int, kind: str = "label") -> tuple[Path, Path]:
        """The label stage's caches (log-probs, reward-model scores): kept across a resume, set aside on a redo."""
        return self.labels(t, kind) / "logps", self.labels(t, kind) / "rm"

    def anchor(self, t: int) -> Path:
        """Method temporal: M1's samples of iteration t's prompts."""
        return self.iteration(t) / "anchor" / "responses"

    def future_model(self, t: int) -> Path:
        """Method temporal: the temporary future model of iteration t."""
        return self.iteration(t) / "future" / "model"

    def future_responses(self, t: int) -> Path:
        return self.iteration(t) / "future" / "responses"

    def probe_responses(self, t: int) -> Path:
        """M_t's samples of the probe prompts."""
        return self.labels(t, PROBE_FOLDER) / "responses"

    # ------------------------------------------------------------------ evaluations
    def eval(self, k: int) -> Path:
        return self.root / "eval" / f"M{k}"

    def harness(self, k: int) -> Path:
        return self.root / "eval-harness" / f"M{k}"
