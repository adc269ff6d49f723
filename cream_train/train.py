"""Run one training stage: read the table, build TRL's trainer, train into ``DIR.tmp-…``, save, rename.

The output is a standard Hugging Face checkpoint (``AutoModelForCausalLM`` + tokenizer with its chat template;
LoRA adapters are merged in) plus ``cream_train_config.json`` (the resolved config) and ``cream_lineage.json``.
Under ``accelerate launch`` every rank runs this same function; rank 0 writes the files and renames the folder.
"""

from __future__ import annotations

import math

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cream_data.errors import CreamError
from cream_train import lineage as lin
from cream_train.config import DPOTrainConfig, SFTTrainConfig, TrainConfig

logger = logging.getLogger("cream.train")


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]
    reference: str  # "stored" | "computed" (DPO) or "" (SFT)
    trainer: Any = field(default=None, repr=False)


def train(cfg: TrainConfig) -> TrainResult:
    if isinstance(cfg, DPOTrainConfig):
        return train_dpo(cfg)
    if isinstance(cfg, SFTTrainConfig):
        return train_sft(cfg)
    raise TypeError(f"cfg: got {type(cfg).__name__}, expected DPOTrainConfig or SFTTrainConfig")


def _common_args(cfg: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by both stages; bf16 on GPU, fp32 on CPU."""
    import torch

    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(out_dir),
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        max_length=cfg.max_length,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5's name; TRL defaults it on
        bf16=on_gpu,
        # On a CPU-only machine, `use_cpu` makes accelerate run multi-process launches as DDP over gloo
        # (without it, each process of a torchrun / `accelerate launch --multi_gpu` launch trains alone).
        use_cpu=not on_gpu,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        save_strategy="no",  # the checkpoint is saved once, at the end, then renamed into place
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        disable_tqdm=True,
    )


def _peft_config(cfg: TrainConfig):
    if not cfg.lora:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        from cream_data.errors import missing_package

        raise missing_package("peft", "--lora") from None
    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",")]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, task_type="CAUSAL_LM")


def _load_policy(path: str):
    import torch
    from transformers import AutoModelForCausalLM

    from cream_data.engines.models import default_dtype

    dtype = default_dtype("cuda" if torch.cuda.is_available() else "cpu")
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def _final_metrics(trainer, train_output) -> dict[str, Any]:
    """The last logged value of every metric, plus the run's mean training loss."""
    last: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        last.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    last["train_loss"] = train_output.training_loss
    last["global_step"] = trainer.state.global_step
    return last


def _run(cfg: TrainConfig, make_trainer, *, method: str | None, extra: dict) -> TrainResult:
    """Train into a staging folder, save checkpoint + tokenizer + lineage there, then rename it to ``cfg.out``."""
    out = lin.check_output(cfg.out, cfg.overwrite)
    tmp = lin.staging_dir(out)
    trainer = None
    try:
        trainer = make_trainer(tmp)
        _warn_if_warmup_eats_the_run(cfg, trainer)
        train_output = trainer.train()
        metrics = _final_metrics(trainer, train_output)
        _save_checkpoint(trainer, tmp, merge_lora=cfg.lora)
        acc = trainer.accelerator
        if acc.is_main_process:
            config = cfg.to_dict()
            lin.io.atomic_write_json(tmp / lin.CONFIG_FILE, config)
            info = dict(extra)
            lin.io.atomic_write_json(tmp / lin.LINEAGE_FILE, lin.lineage(
                parent_model=info.pop("parent_model"), data=cfg.data, fingerprint=info.pop("fingerprint"),
                stage=cfg.stage, method=method, config=config, metrics=metrics, extra=info))
            lin.publish(tmp, out)
        acc.wait_for_everyone()
    except BaseException:
        if trainer is None or trainer.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # no half-written output
        raise
    return TrainResult(out, metrics, extra.get("reference", ""), trainer)


def optimizer_steps(n_examples: int, batch_size: int, grad_accum: int, world: int, epochs: float,
                    max_steps: int | None) -> int:
    """Optimizer steps the Trainer will take (its own rounding: batches per epoch, then accumulation)."""
    if max_steps:
        return max_steps
    batches = math.ceil(n_examples / (batch_size * world))
    return max(1, math.ceil(math.ceil(batches / grad_accum) * epochs))


def _warn_if_warmup_eats_the_run(cfg: TrainConfig, trainer) -> None:
    """The scheduler warms up for ceil(ratio x steps) steps starting at lr 0: a 1-step run does not learn."""
    steps = optimizer_steps(len(trainer.train_dataset), cfg.batch_size, cfg.grad_accum,
                            trainer.accelerator.num_processes, cfg.epochs, cfg.max_steps)
    warmup = math.ceil(cfg.warmup_ratio * steps)
    if steps - warmup < 1:
        logger.warning(f"{cfg.data}: only {steps} optimizer step(s), {warmup} of them warm-up starting at "
                       "learning rate 0: this run will barely change the model; use a smaller --batch-size, "
                       "more data or epochs, or --warmup-ratio 0")


def _save_checkpoint(trainer, folder: Path, *, merge_lora: bool) -> None:
    acc = trainer.accelerator
    if merge_lora:
        acc.wait_for_everyone()
        if acc.is_main_process:
            # A merged, plain checkpoint loads in AutoModelForCausalLM and vLLM without peft.
            acc.unwrap_model(trainer.model).merge_and_unload().save_pretrained(folder, safe_serialization=True)
    else:
        trainer.save_model(str(folder))  # gathers DDP / ZeRO / FSDP weights; every rank must call it
    if acc.is_main_process:
        trainer.processing_class.save_pretrained(folder)
        (folder / "training_args.bin").unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ DPO
@dataclass
class DPOData:
    """What a DPO run trains on, decided before any model is loaded."""

    ref: Any  # ModelRef of the starting model M_t
    tokenizer: Any
    table: Any  # the preferences pa.Table
    weights: list[float]  # the C of each pair under the method
    stored: bool  # reference log-probs come from the table
    dataset: Any  # datasets.Dataset for TRL


def prepare_dpo(cfg: DPOTrainConfig) -> DPOData:
    """Read and check the preferences, and decide where the reference log-probs come from (warn on fallback)."""
    from cream_data.engines import models
    from cream_train import prefs

    table = prefs.load_preferences(cfg.data)
    prefs.check_preferences(table, cfg.method, str(cfg.data))
    ref = models.resolve(cfg.model)
    tok = models.load_tokenizer(ref)
    weights = prefs.weights_for(table, cfg.method)
    problem = ("--reference computed was asked for" if cfg.reference == "computed"
               else prefs.stored_reference_problem(table, ref.name, tok, cfg.max_length))
    if problem and cfg.reference == "stored":
        raise CreamError(f"{cfg.data}: cannot use the stored reference log-probs: {problem}")
    if problem and cfg.reference == "auto":
        logger.warning(f"{cfg.data}: computing reference log-probs with the starting model, because the stored "
                       f"ones do not apply: {problem}")
    stored = problem is None
    return DPOData(ref, tok, table, weights, stored, prefs.to_dataset(table, weights, stored))


def build_dpo_trainer(cfg: DPOTrainConfig, data: DPOData, output_dir: Path, *, ref_model=None):
    """TRL's trainer, our subclass: stored reference → ``precompute_ref_log_probs`` with nothing to compute."""
    from trl import DPOConfig

    from cream_train.dpo import CreamDPOTrainer, WeightedPreferenceCollator

    tok = data.tokenizer
    args = DPOConfig(**_common_args(cfg, output_dir), beta=cfg.beta, precompute_ref_log_probs=data.stored)
    return CreamDPOTrainer(
        model=_load_policy(data.ref.path), ref_model=ref_model, args=args, train_dataset=data.dataset,
        processing_class=tok,
        data_collator=WeightedPreferenceCollator(pad_token_id=tok.pad_token_id, max_length=cfg.max_length),
        peft_config=_peft_config(cfg), stored_reference=data.stored,
    )


def train_dpo(cfg: DPOTrainConfig) -> TrainResult:
    """Consistency-weighted DPO of ``cfg.model`` (M_t) on a preferences table, reference M_t."""
    lin.check_output(cfg.out, cfg.overwrite)  # fail before any loading
    data = prepare_dpo(cfg)
    mean_c = sum(data.weights) / len(data.weights)
    return _run(cfg, lambda tmp: build_dpo_trainer(cfg, data, tmp), method=cfg.method, extra={
        "parent_model": data.ref.name, "fingerprint": lin.data_fingerprint(cfg.data, data.table),
        "reference": "stored" if data.stored else "computed", "pairs": data.table.num_rows, "mean_C": mean_c})


# ------------------------------------------------------------------------------------------------ SFT
def train_sft(cfg: SFTTrainConfig) -> TrainResult:
    """Supervised fine-tuning of ``cfg.model`` (M0) on prompt/completion conversations, loss on the answer."""
    from cream_data.engines import models
    from cream_train import sft

    lin.check_output(cfg.out, cfg.overwrite)
    table = sft.load_sft_table(cfg.data, cfg.limit)
    ref = models.resolve(cfg.model)
    tok = models.load_tokenizer(ref)
    dataset = sft.to_dataset(table)

    def make_trainer(tmp: Path):
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**_common_args(cfg, tmp), completion_only_loss=True, packing=False)
        return SFTTrainer(model=_load_policy(ref.path), args=args, train_dataset=dataset, processing_class=tok,
                          peft_config=_peft_config(cfg))

    return _run(cfg, make_trainer, method=None, extra={
        "parent_model": ref.name, "fingerprint": lin.data_fingerprint(cfg.data, table), "examples": table.num_rows})
