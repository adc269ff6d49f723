"""Run one training stage: read the table, build TRL's trainer, train into ``DIR.tmp-…``, save, rename.

The output is a standard Hugging Face checkpoint (``AutoModelForCausalLM`` + tokenizer with its chat template;
LoRA adapters are merged in) plus ``cream_train_config.json`` (the resolved config) and ``cream_lineage.json``.
Under ``accelerate launch`` every rank runs this same function; rank 0 writes the files and renames the folder.
Both stages' trainers carry :class:`~cream_train.nonfinite.NonFiniteGuard`: a NaN/inf loss or gradient norm stops
the run, and the staging folder is removed, so nothing is published.

Training shows itself (:class:`TrainingReport`, world process 0 only): the optimizer steps done / total go to cream's
progress callback (the rich bar with its ETA in `cream train`; progress lines the parent draws under `cream run`),
and each logging step is one line on the ``cream.train`` logger (loss; DPO: reward margin, accuracy, mean C; lr)
instead of transformers' raw metrics dict on stdout. The trackers of ``report_to`` (TensorBoard, W&B) write under
:func:`tracker_dir` — ``<out>.logs/`` beside the output, or what `cream run` names in ``$CREAM_TRACKER_DIR``
(``RUN/logs/tb/<stage>``) — never inside the saved model folder; the run is named by :func:`run_name`.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cream_data.errors import CreamError
from cream_data.progress import Progress
from cream_train import lineage as lin
from cream_train.config import DPOTrainConfig, SFTTrainConfig, TrainConfig
from cream_train.nonfinite import NonFiniteGuard
from cream_train.precision import Precision, cast_checkpoint, precision_of
from cream_train.training_report import check_tracker, run_name, show_training

logger = logging.getLogger("cream.train")


@dataclass
class TrainResult:
    out: Path
    metrics: dict[str, Any]
    reference: str  # "stored" | "computed" (DPO) or "" (SFT)
    precision: dict[str, str] = field(default_factory=dict)  # Precision.record(): what the run held and computed in


def train(cfg: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Train ``cfg`` (its stage from its type); ``progress(what, done, total, 0)`` follows the optimizer steps."""
    if isinstance(cfg, DPOTrainConfig):
        return train_dpo(cfg, progress)
    if isinstance(cfg, SFTTrainConfig):
        return train_sft(cfg, progress)
    raise TypeError(f"cfg: got {type(cfg).__name__}, expected DPOTrainConfig or SFTTrainConfig")


def _common_args(cfg: TrainConfig, out_dir: Path, precision: Precision) -> dict[str, Any]:
    """TrainingArguments shared by both stages. bf16/fp16 switch on accelerate's autocast (and fp16's loss scaler):
    over fp32 weights that is mixed precision; over bf16 weights (precision pure) autocast changes nothing."""
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
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,  # > 0: transformers skips the norm (and NonFiniteGuard's check) at 0
        max_length=cfg.max_length,
        **{checkpointing_arg(): cfg.gradient_checkpointing},  # TRL defaults it on
        bf16=precision.compute == "bf16",
        fp16=precision.compute == "fp16",
        # On a CPU-only machine, `use_cpu` makes accelerate run multi-process launches as DDP over gloo
        # (without it, each process of a torchrun / `accelerate launch --multi_gpu` launch trains alone).
        use_cpu=not on_gpu,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],  # written under tracker_dir(cfg)
        run_name=run_name(cfg),
        save_strategy="no",  # the checkpoint is saved once, at the end, then renamed into place
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        disable_tqdm=True,  # no tqdm bar: TrainingReport feeds cream's own display (see training_report.show_training)
    )


def checkpointing_arg() -> str:
    """The TrainingArguments field that turns activation checkpointing on: ``activation_checkpointing`` from
    transformers 5.23 (where ``gradient_checkpointing`` is a deprecated alias), ``gradient_checkpointing`` before
    (5.17–5.22 have no other: the GPU images' stack and vLLM 0.33's transformers < 5.21)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


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


def _load_policy(path: str, precision: Precision):
    """The policy with its weights in the master dtype (fp32 under mixed precision, as TRL's own scripts load it)."""
    from transformers import AutoModelForCausalLM

    from cream_data.engines.model_loading import from_pretrained
    from cream_data.engines.model_refs import ModelRef
    from cream_data.engines.models import torch_dtype

    ref = ModelRef(path, path, "local" if Path(path).is_dir() else "hub")
    return from_pretrained(AutoModelForCausalLM, ref, dtype=torch_dtype(precision.master))


def _final_metrics(trainer, train_output) -> dict[str, Any]:
    """The last logged value of every metric, plus the run's mean training loss."""
    last: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        last.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    last["train_loss"] = train_output.training_loss
    last["global_step"] = trainer.state.global_step
    return last


def _run(cfg: TrainConfig, make_trainer, *, method: str | None, extra: dict, counts: dict | None = None,
         progress: Progress | None = None) -> TrainResult:
    """Train into a staging folder, save checkpoint + tokenizer + lineage there, then rename it to ``cfg.out``.

    ``counts`` (what was trained on, e.g. pairs kept and dropped) go into the metrics and the lineage."""
    out = lin.check_output(cfg.out, cfg.overwrite)
    tmp = lin.staging_dir(out)
    trainer = None
    precision = precision_of(cfg)
    try:
        trainer = make_trainer(tmp, precision)
        show_training(trainer, cfg, progress)
        if trainer.accelerator.is_main_process:
            logger.info(f"{cfg.stage} training precision: {precision.describe()}")
        _warn_if_warmup_eats_the_run(cfg, trainer)
        train_output = trainer.train()
        metrics = {**_final_metrics(trainer, train_output), **(counts or {})}
        _save_checkpoint(trainer, tmp, merge_lora=cfg.lora, precision=precision)
        acc = trainer.accelerator
        if acc.is_main_process:
            config = cfg.to_dict()
            lin.io.atomic_write_json(tmp / lin.CONFIG_FILE, config)
            info = {**extra, **(counts or {})}
            lin.io.atomic_write_json(tmp / lin.LINEAGE_FILE, lin.lineage(
                parent_model=info.pop("parent_model"), data=cfg.data, fingerprint=info.pop("fingerprint"),
                stage=cfg.stage, method=method, config=config, metrics=metrics, extra=info))
            lin.publish(tmp, out)
        acc.wait_for_everyone()
    except BaseException:  # a CreamError from NonFiniteGuard too
        if trainer is None or trainer.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # no half-written output
        raise
    return TrainResult(out, metrics, extra.get("reference", ""), precision.record())


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


def _save_checkpoint(trainer, folder: Path, *, merge_lora: bool, precision: Precision) -> None:
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
        cast = cast_checkpoint(folder, precision.save)
        if cast:
            logger.info(f"saved the weights in {precision.save} (save_dtype {precision.save}; trained with "
                        f"{precision.master} weights): {cast} tensors cast, updates below {precision.save}'s spacing "
                        "are lost in the saved checkpoint")


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
    counts: dict[str, int]  # pairs trained on, dropped and truncated for being longer than max_length
    path: Path | None = None  # the table read (None: a published dataset, fingerprinted by its rows)


def prepare_dpo(cfg: DPOTrainConfig) -> DPOData:
    """Read and check the preferences, apply the long-pair policy (warn with the count) and decide where the
    reference log-probs come from (warn on fallback)."""
    from cream_data.engines import models
    from cream_train import prefs

    source = prefs.resolve_preferences(cfg.data, cfg.split)
    if source.note:
        logger.info(source.note)
    table = source.table
    prefs.check_preferences(table, cfg.method, str(cfg.data))
    ref = models.resolve(cfg.model)
    tok = models.load_tokenizer(ref)
    weights = prefs.weights_for(table, cfg.method)  # before any drop: cream-avg's C is the mean over all pairs formed
    lengths = prefs.token_lengths(table, tok)
    long = [i for i, row in enumerate(lengths) if prefs.too_long(row, cfg.max_length)]
    drop, n = cfg.long_pairs == "drop", table.num_rows
    what = (f"longer than max_length {cfg.max_length} tokens (templated prompt + chosen or prompt + rejected, "
            f"--long-pairs {cfg.long_pairs})")
    if drop and len(long) == n:
        raise CreamError(f"{cfg.data}: all {n} pairs are {what}; nothing to train on (raise --max-length, or "
                         "--long-pairs truncate)")
    # a dropped pair is never truncated, so only under `truncate` does length decide about the stored log-probs
    problem = ("--reference computed was asked for" if cfg.reference == "computed"
               else prefs.stored_reference_problem(table, ref.name, tok, lengths, None if drop else cfg.max_length,
                                                   _label_inputs(source.path).get("model_ids")))
    if problem and cfg.reference == "stored":
        raise CreamError(f"{cfg.data}: cannot use the stored reference log-probs: {problem}")
    if problem and cfg.reference == "auto":
        logger.warning(f"{cfg.data}: computing reference log-probs with the starting model, because the stored "
                       f"ones do not apply: {problem}")
    stored = problem is None
    if stored:
        _warn_if_other_numerics(cfg, _label_inputs(source.path).get("dtype"))
    if long:
        logger.warning(f"{cfg.data}: {'dropped' if drop else 'truncating'} {len(long)} of {n} pairs {what}")
    if drop and long:
        keep = sorted(set(range(n)) - set(long))
        table, weights = table.take(keep), [weights[i] for i in keep]
    counts = {"pairs": table.num_rows, "pairs_dropped_long": len(long) if drop else 0,
              "pairs_truncated": 0 if drop else len(long)}
    return DPOData(ref, tok, table, weights, stored, prefs.to_dataset(table, weights, stored), counts, source.path)


def _label_inputs(data) -> dict:
    """What `cream label` recorded of its inputs in a preferences folder's manifest (content ids of the models, the
    dtype they ran in); empty for a bare file or a published dataset."""
    from cream_data.tables import io

    path = Path(data) if data is not None else None
    if path is None or not (path.is_dir() and (path / io.MANIFEST).is_file()):
        return {}
    return io.read_manifest(path).get("inputs") or {}


def _warn_if_other_numerics(cfg: DPOTrainConfig, label_dtype: str | None) -> None:
    """Stored log-probs computed in another dtype than this training computes in: the step-0 margin is then not 0
    but a per-token bias times the pairs' length difference (fp32-stored vs bf16-trained: ~0.0014 nats per token,
    bench/bf16_reference.py). Said in one line; `cream label --dtype` equal to the training's removes it."""
    import torch

    compute = Precision.of(cfg, "cuda" if torch.cuda.is_available() else "cpu").compute
    if label_dtype and label_dtype != compute:
        logger.warning(f"{cfg.data}: the stored reference log-probs were computed in {label_dtype}, this training "
                       f"computes in {compute}: the DPO margins start off 0 by a small length-dependent bias; label "
                       f"with --dtype {compute} (label.dtype) or train with --reference computed to match")


def build_dpo_trainer(cfg: DPOTrainConfig, data: DPOData, output_dir: Path, *, ref_model=None,
                      precision: Precision | None = None):
    """TRL's trainer, our subclass: stored reference → ``precompute_ref_log_probs`` with nothing to compute."""
    from trl import DPOConfig

    from cream_train.dpo import CreamDPOTrainer, WeightedPreferenceCollator

    tok = data.tokenizer
    precision = precision or precision_of(cfg)
    args = DPOConfig(**_common_args(cfg, output_dir, precision), beta=cfg.beta, precompute_ref_log_probs=data.stored)
    return CreamDPOTrainer(
        model=_load_policy(data.ref.path, precision), ref_model=ref_model, args=args, train_dataset=data.dataset,
        processing_class=tok,
        data_collator=WeightedPreferenceCollator(pad_token_id=tok.pad_token_id, max_length=cfg.max_length),
        peft_config=_peft_config(cfg), stored_reference=data.stored,
    )


def train_dpo(cfg: DPOTrainConfig, progress: Progress | None = None) -> TrainResult:
    """Consistency-weighted DPO of ``cfg.model`` (M_t) on a preferences table, reference M_t."""
    lin.check_output(cfg.out, cfg.overwrite)  # fail before any loading
    check_tracker(cfg)
    data = prepare_dpo(cfg)
    mean_c = sum(data.weights) / len(data.weights)
    return _run(cfg, lambda tmp, p: build_dpo_trainer(cfg, data, tmp, precision=p), method=cfg.method, extra={
        "parent_model": data.ref.name, "fingerprint": lin.data_fingerprint(data.path, data.table),
        "reference": "stored" if data.stored else "computed", "mean_C": mean_c}, counts=data.counts,
        progress=progress)


# ------------------------------------------------------------------------------------------------ SFT
@dataclass
class SFTData:
    """What an SFT run trains on, decided before any model is loaded."""

    ref: Any  # ModelRef of the starting model M0
    tokenizer: Any
    table: Any  # the sft pa.Table
    dataset: Any  # datasets.Dataset for TRL


def prepare_sft(cfg: SFTTrainConfig) -> SFTData:
    """Read and check the SFT table and resolve the starting model and its tokenizer."""
    from cream_data.engines import models
    from cream_train import sft

    table = sft.load_sft_table(cfg.data, cfg.limit)
    ref = models.resolve(cfg.model)
    return SFTData(ref, models.load_tokenizer(ref), table, sft.to_dataset(table))


def build_sft_trainer(cfg: SFTTrainConfig, data: SFTData, output_dir: Path, *, precision: Precision | None = None):
    """TRL's SFTTrainer (loss on the completion only) with :class:`~cream_train.nonfinite.NonFiniteGuard`."""
    from trl import SFTConfig, SFTTrainer

    precision = precision or precision_of(cfg)
    args = SFTConfig(**_common_args(cfg, output_dir, precision), completion_only_loss=True, packing=False)
    guarded = type("CreamSFTTrainer", (NonFiniteGuard, SFTTrainer), {})
    return guarded(model=_load_policy(data.ref.path, precision), args=args, train_dataset=data.dataset,
                   processing_class=data.tokenizer, peft_config=_peft_config(cfg))


def train_sft(cfg: SFTTrainConfig, progress: Progress | None = None) -> TrainResult:
    """Supervised fine-tuning of ``cfg.model`` (M0) on prompt/completion conversations, loss on the answer."""
    lin.check_output(cfg.out, cfg.overwrite)
    check_tracker(cfg)
    data = prepare_sft(cfg)
    return _run(cfg, lambda tmp, p: build_sft_trainer(cfg, data, tmp, precision=p), method=None, extra={
        "parent_model": data.ref.name, "fingerprint": lin.data_fingerprint(cfg.data, data.table),
        "examples": data.table.num_rows}, progress=progress)
