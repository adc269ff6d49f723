"""One frozen config per training stage, validated on construction; the resolved config is saved with the output.

Each field holds its default, type, allowed values and help text (:func:`cream_data.settings.setting`): the
`cream train` options (cli/options.py) and the ``train:`` / ``sft:`` sections of a `cream run` config
(cream_train/run/sections.py) are derived from them. Validation reports every problem at once, each named by its field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from cream_data.settings import (Check, Settings, at_least, dtype_setting, finite_above, finite_at_least, setting,
                                 within)
from cream_data.vocab import LONG_PAIRS, PRECISIONS, REFERENCES, REPORT_TO, SAVE_DTYPES, TRAIN_METHODS, TRAIN_STAGES

STAGES = TRAIN_STAGES
_GIVEN = Check(lambda v: bool(str(v).strip()), "a path or name")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings shared by both stages."""

    data: str = setting("", help="Input table (a Parquet file or table folder).", check=_GIVEN)
    model: str = setting("", help="Starting model: local checkpoint folder, Hub id or 'smollm2-135m-instruct'.",
                         check=_GIVEN)
    out: str = setting("", help="Output checkpoint folder (written atomically).", check=_GIVEN)
    lr: float = setting(1e-6, help="Peak learning rate (cosine schedule with warm-up).", check=finite_above(0))
    epochs: float = setting(1.0, help="Training epochs.", check=finite_above(0))
    max_steps: Optional[int] = setting(None, help="Stop after this many optimizer steps (overrides epochs).",
                                       check=at_least(1))
    batch_size: int = setting(4, help="Pairs (DPO) or examples (SFT) per device per micro-batch.", check=at_least(1))
    grad_accum: int = setting(1, help="Gradient accumulation steps.", check=at_least(1))
    warmup_ratio: float = setting(0.1, help="Fraction of steps spent warming the learning rate up.",
                                  check=within(0, 1))
    weight_decay: float = setting(0.0, help="AdamW weight decay (the CREAM authors use 0.01).",
                                  check=finite_at_least(0))
    max_grad_norm: float = setting(1.0, help="Clip the gradient norm to this (> 0: the norm is also checked for "
                                   "NaN/inf).", check=finite_above(0))
    max_length: Optional[int] = setting(2048, help="Longest templated prompt + response in tokens (SFT truncates "
                                        "longer examples; DPO: see long_pairs) (None: no limit).", check=at_least(2))
    lora: bool = setting(False, flag="--lora/--no-lora",
                         help="Train a LoRA adapter (peft) and merge it into the saved checkpoint.")
    lora_r: int = setting(16, help="LoRA rank.", check=at_least(1))
    lora_alpha: int = setting(32, help="LoRA alpha.", check=at_least(1))
    lora_dropout: float = setting(0.05, help="LoRA dropout.", check=within(0, 1))
    lora_target: str = setting("all-linear", help="LoRA target modules (comma list or 'all-linear').")
    gradient_checkpointing: bool = setting(False, flag="--gradient-checkpointing/--no-gradient-checkpointing",
                                           help="Recompute activations in backward to save memory.")
    dtype: str = dtype_setting("Compute dtype: auto (bf16 on a CUDA GPU, fp32 on CPU), bf16, fp16 or fp32. Under "
                               "precision mixed (the default) the weights stay fp32 and this is the autocast dtype.")
    precision: str = setting("mixed", choices=PRECISIONS, help=(
        "mixed: fp32 master weights, forward and backward under bf16/fp16 autocast (fp16 with loss scaling), as "
        "TRL and DeepSpeed train; pure: the weights themselves in dtype (pure bf16: at lr 1e-6 most updates round "
        "away). DeepSpeed/FSDP apply their own mixed-precision settings (docs/CONFIG.md)."))
    save_dtype: str = setting("master", choices=SAVE_DTYPES, help=(
        "dtype of the saved checkpoint: master (the weights training held: fp32 under mixed, so an iteration's small "
        "updates survive the save), or a cast to bf16, fp16 or fp32."))
    seed: int = setting(0, help="Random seed.", check=within(0, 2**32, expected="0 <= seed < 2**32"))
    report_to: str = setting("none", choices=REPORT_TO, help="Where to log metrics: none, tensorboard or wandb.")
    logging_steps: int = setting(1, help="Log metrics every this many steps.", check=at_least(1))
    overwrite: bool = setting(False, help="Replace an existing output folder.")

    stage = ""  # dpo | sft (a class attribute, not a setting)

    @property
    def what(self) -> str:  # the error's prefix
        return type(self).__name__

    def _problems(self) -> list[tuple[str, str]]:
        if self.precision == "pure" and self.dtype == "fp16":
            return [("precision", "pure with {dtype} fp16 is not supported (fp16 needs loss scaling over fp32 master "
                     "weights); use {precision} mixed, or {dtype} bf16")]
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, **super().to_dict()}


@dataclass(frozen=True)
class DPOTrainConfig(TrainConfig):
    """``cream train PREFERENCES --stage dpo``: consistency-weighted DPO from M_t, reference M_t."""

    method: str = setting("cream", choices=TRAIN_METHODS,
                          help="cream (each pair's stored weight: the C of the label stage's --scope, by default "
                          "the dataset mean of (tau+1)/2, the paper's), cream-avg (the table's mean weight, taken "
                          "here) or dpo (C = 1).")
    beta: float = setting(0.1, help="DPO temperature beta.", check=finite_above(0))
    reference: str = setting("auto", choices=REFERENCES, help=(
        "Reference log-probs: auto (stored ones when the table's model and template_hash match the starting "
        "model, else computed), stored (require them) or computed (a reference model forward each step)."))
    split: Optional[str] = setting(None, help="Split of a published dataset (a Hub id or a `cream publish` folder) to "
                                   "train on, e.g. iter_2 (default: all its splits, in iteration order); of a "
                                   "standard preference dataset, e.g. train_prefs (default: its only split, else "
                                   "train).",
                                   check=Check(lambda v: bool(str(v).strip()), "a split name such as iter_2 or train"))
    long_pairs: str = setting("drop", choices=LONG_PAIRS, help=(
        "Pairs whose templated prompt + chosen or prompt + rejected exceeds max_length: drop (as the CREAM authors; "
        "the stored reference log-probs stay valid) or truncate (train on the first max_length tokens; the stored "
        "log-probs are of the full responses, so the reference is then computed)."))

    stage = "dpo"


@dataclass(frozen=True)
class SFTTrainConfig(TrainConfig):
    """``cream train DATA --stage sft``: supervised fine-tuning on prompt/completion conversations."""

    lr: float = setting(2e-5, help="Peak learning rate (cosine schedule with warm-up).", check=finite_above(0))
    limit: Optional[int] = setting(None, help="Use at most this many SFT examples.", check=at_least(1))

    stage = "sft"


def config_class(stage: str, name: str = "stage") -> type[TrainConfig]:
    """The settings class of training stage ``stage`` (dpo or sft); another value is a CreamError naming it as
    ``name`` (the command's ``--stage``, the Python API's ``stage``)."""
    from cream_data.errors import CreamError
    from cream_data.settings import shown

    if stage not in STAGES:
        raise CreamError(f"{name}: got {shown(stage)}, expected dpo or sft")
    return DPOTrainConfig if stage == "dpo" else SFTTrainConfig
