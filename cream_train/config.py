"""One frozen config per training stage, validated on construction; the resolved config is saved with the output.

Each field's help text lives in its ``metadata["help"]`` so the CLI and YAML configs share one description.
Validation reports every problem at once as ``field: got X, expected Y``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from cream_data.errors import CreamError
from cream_train.loss import METHODS

REPORT_TO = ("none", "tensorboard", "wandb")
REFERENCE = ("auto", "stored", "computed")
STAGES = ("dpo", "sft")
LONG_PAIRS = ("drop", "truncate")


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


def _positive(x: float) -> bool:
    """Finite and > 0 (NaN and infinity are refused)."""
    return math.isfinite(x) and x > 0


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by both stages."""

    data: str = _f("", "Input table (a Parquet file or table folder).")
    model: str = _f("", "Starting model: local checkpoint folder, Hub id or 'smollm2-135m-instruct'.")
    out: str = _f("", "Output checkpoint folder (written atomically).")
    lr: float = _f(1e-6, "Peak learning rate (cosine schedule with warm-up).")
    epochs: float = _f(1.0, "Training epochs.")
    max_steps: Optional[int] = _f(None, "Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = _f(4, "Pairs (DPO) or examples (SFT) per device per micro-batch.")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    warmup_ratio: float = _f(0.1, "Fraction of steps spent warming the learning rate up.")
    weight_decay: float = _f(0.0, "AdamW weight decay (the CREAM authors use 0.01).")
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this (> 0: the norm is also checked for NaN/inf).")
    max_length: Optional[int] = _f(2048, "Longest templated prompt + response in tokens (SFT truncates longer "
                                   "examples; DPO: see long_pairs) (None: no limit).")
    lora: bool = _f(False, "Train a LoRA adapter (peft) and merge it into the saved checkpoint.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    lora_target: str = _f("all-linear", "LoRA target modules (comma list or 'all-linear').")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    seed: int = _f(0, "Random seed.")
    report_to: str = _f("none", "Where to log metrics: none, tensorboard or wandb.")
    logging_steps: int = _f(1, "Log metrics every this many steps.")
    overwrite: bool = _f(False, "Replace an existing output folder.")

    def _problems(self) -> list[str]:
        p = []
        for name in ("data", "model", "out"):
            if not str(getattr(self, name)).strip():
                p.append(f"{name}: got an empty value, expected a path or name")
        for name in ("lr", "epochs"):
            if not _positive(getattr(self, name)):
                p.append(f"{name}: got {getattr(self, name)}, expected a finite number > 0")
        if self.max_steps is not None and self.max_steps < 1:
            p.append(f"max_steps: got {self.max_steps}, expected >= 1 or unset")
        for name in ("batch_size", "grad_accum", "lora_r", "lora_alpha", "logging_steps"):
            if getattr(self, name) < 1:
                p.append(f"{name}: got {getattr(self, name)}, expected >= 1")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            p.append(f"weight_decay: got {self.weight_decay}, expected a finite number >= 0")
        if not _positive(self.max_grad_norm):
            p.append(f"max_grad_norm: got {self.max_grad_norm}, expected a finite number > 0")
        if not 0 <= self.warmup_ratio < 1:
            p.append(f"warmup_ratio: got {self.warmup_ratio}, expected in [0, 1)")
        if not 0 <= self.lora_dropout < 1:
            p.append(f"lora_dropout: got {self.lora_dropout}, expected in [0, 1)")
        if self.max_length is not None and self.max_length < 2:
            p.append(f"max_length: got {self.max_length}, expected >= 2 or unset")
        if self.report_to not in REPORT_TO:
            p.append(f"report_to: got {self.report_to!r}, expected one of {', '.join(REPORT_TO)}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range (transformers.set_seed)
            p.append(f"seed: got {self.seed}, expected 0 <= seed < 2**32")
        return p

    def __post_init__(self):
        problems = self._problems()
        if problems:
            err = CreamError(f"{type(self).__name__}: " + "; ".join(problems))
            err.problems = problems  # each "field: got X, expected Y": `cream run --check` names the section
            raise err

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **asdict(self)}

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)


@dataclass(frozen=True)
class DPOTrainConfig(TrainConfig):
    """``cream train PREFERENCES --stage dpo``: consistency-weighted DPO from M_t, reference M_t."""

    method: str = _f("cream", "cream (per-pair C), cream-avg (table mean C) or dpo (C = 1).")
    beta: float = _f(0.1, "DPO temperature beta.")
    reference: str = _f(
        "auto",
        "Reference log-probs: auto (stored ones when the table's model and template_hash match the starting "
        "model, else computed), stored (require them) or computed (a reference model forward each step).",
    )
    split: Optional[str] = _f(None, "Split of a published dataset (a Hub id or a `cream publish` folder) to train "
                              "on, e.g. iter_2 (default: all its splits, in iteration order).")
    long_pairs: str = _f(
        "drop",
        "Pairs whose templated prompt + chosen or prompt + rejected exceeds max_length: drop (as the CREAM authors; "
        "the stored reference log-probs stay valid) or truncate (train on the first max_length tokens; the stored "
        "log-probs are of the full responses, so the reference is then computed).",
    )

    stage = "dpo"

    def _problems(self) -> list[str]:
        p = super()._problems()
        if self.method not in METHODS:
            p.append(f"method: got {self.method!r}, expected one of {', '.join(METHODS)}")
        if not _positive(self.beta):
            p.append(f"beta: got {self.beta}, expected a finite number > 0")
        if self.reference not in REFERENCE:
            p.append(f"reference: got {self.reference!r}, expected one of {', '.join(REFERENCE)}")
        if self.split is not None and not str(self.split).strip():
            p.append("split: got an empty value, expected a split name such as iter_2 or train")
        if self.long_pairs not in LONG_PAIRS:
            p.append(f"long_pairs: got {self.long_pairs!r}, expected one of {', '.join(LONG_PAIRS)}")
        return p


@dataclass(frozen=True)
class SFTTrainConfig(TrainConfig):
    """``cream train DATA --stage sft``: supervised fine-tuning on prompt/completion conversations."""

    lr: float = _f(2e-5, "Peak learning rate (cosine schedule with warm-up).")
    limit: Optional[int] = _f(None, "Use at most this many SFT examples.")

    stage = "sft"

    def _problems(self) -> list[str]:
        p = super()._problems()
        if self.limit is not None and self.limit < 1:
            p.append(f"limit: got {self.limit}, expected >= 1 or unset")
        return p
