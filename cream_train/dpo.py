"""A small subclass of TRL's ``DPOTrainer`` (pinned: trl==1.16.0) that trains with the CREAM loss.

What it changes, and the TRL 1.16 internals it relies on:

- ``weight`` (the per-pair consistency C) survives TRL's column filtering (``_set_signature_columns_if_needed``)
  and its collator (:class:`WeightedPreferenceCollator` adds a ``weight`` tensor to each batch).
- Stored reference log-probs: the dataset carries ``ref_chosen_logps``/``ref_rejected_logps`` (the labeler's
  ``chosen_logp``/``rejected_logp``) and the trainer runs with ``precompute_ref_log_probs=True``, so TRL loads no
  reference model; ``_precompute_ref_logps`` returns the dataset untouched, so no reference forward runs either.
  Without stored values TRL's own handling applies (a frozen copy of the starting model, or the adapter-disabled
  base under LoRA, run each step through ``compute_ref_log_probs``).
- ``compute_loss``: one policy forward over ``[chosen; rejected]`` with TRL's fused LM head (per-token
  log-probs at completion positions, zeros elsewhere), summed per sequence, then :func:`cream_loss`.
  TRL's own ``_compute_loss`` has no per-pair weight, so it is replaced rather than extended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from cream_train.loss import cream_loss
from cream_train.nonfinite import NonFiniteGuard


@dataclass
class WeightedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator plus a float ``weight`` tensor of shape ``[batch]`` (one C per pair)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        batch["weight"] = torch.tensor([float(e["weight"]) for e in examples], dtype=torch.float32)
        return batch


class CreamDPOTrainer(NonFiniteGuard, DPOTrainer):
    """DPOTrainer with the consistency-regularized loss and (optionally) stored reference log-probs; a non-finite
    loss or gradient norm stops it (:class:`~cream_train.nonfinite.NonFiniteGuard`).

    ``stored_reference=True`` expects the train dataset to carry ``ref_chosen_logps``/``ref_rejected_logps`` and
    ``args.precompute_ref_log_probs=True``. ``reference_forwards`` counts reference-model batches actually run.
    """

    _tag_names = ["trl", "dpo", "cream"]

    def __init__(self, *args, stored_reference: bool = False, **kwargs):
        self.stored_reference = stored_reference
        self.reference_forwards = 0
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "weight" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "weight"]

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        if self.stored_reference and {"ref_chosen_logps", "ref_rejected_logps"} <= set(dataset.column_names):
            return dataset  # the labeler's log pi_{M_t}: nothing to compute, no reference model needed
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def compute_ref_log_probs(self, model, inputs):
        self.reference_forwards += 1
        return super().compute_ref_log_probs(model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        weight = inputs.pop("weight")  # never passed to the model
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                        use_cache=False, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)  # zero at non-completion positions
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # the collator stacks [chosen; rejected]

        if "ref_chosen_logps" in inputs:  # stored by the labeler, or precomputed by TRL
            ref_chosen = inputs["ref_chosen_logps"].to(logps)
            ref_rejected = inputs["ref_rejected_logps"].to(logps)
        else:
            ref_model = self.ref_model if self.ref_model is not None else self.model  # None under LoRA
            ref_chosen, ref_rejected = self.compute_ref_log_probs(ref_model, inputs)
            ref_chosen, ref_rejected = ref_chosen.to(logps), ref_rejected.to(logps)

        c = weight.to(logps)
        losses, chosen_rewards, rejected_rewards = cream_loss(
            chosen_logps, rejected_logps, ref_chosen, ref_rejected, c, self.beta)
        loss = losses.mean()
        self._log_pair_metrics(mode, chosen_rewards, rejected_rewards, c, chosen_logps, rejected_logps)
        return (loss, outputs) if return_outputs else loss

    def _log_pair_metrics(self, mode, chosen_rewards, rejected_rewards, c, chosen_logps, rejected_logps):
        gather = self.accelerator.gather_for_metrics
        cr, rr, c = gather(chosen_rewards), gather(rejected_rewards), gather(c)
        m = self._metrics[mode]
        m["rewards/chosen"].append(cr.mean().item())
        m["rewards/rejected"].append(rr.mean().item())
        m["rewards/accuracies"].append((cr > rr).float().mean().item())
        m["rewards/margins"].append((cr - rr).mean().item())
        m["consistency/mean_C"].append(c.mean().item())
        m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
