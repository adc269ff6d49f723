"""What a published dataset gives a plain TRL user: TRL's reference columns, and the card's honest "Training with TRL".

``cream publish`` writes the labeler's stored log-probs twice in the ``preferences`` config: as cream's
``chosen_logp``/``rejected_logp`` and, with the same float64 values, under the names TRL's ``DPOTrainer`` reads for
precomputed reference log-probs, ``ref_chosen_logps``/``ref_rejected_logps`` (:func:`add_trl_reference`). Both are
log pi_{M_t}(y|x) summed over the response tokens, computed by the model that labeled the split with its chat
template (``cream_train.prefs`` states when they are a valid reference). cream's own readers drop the copies again
(:func:`without_trl_reference`), so a published table reads back as the table that was published.

Plain TRL (checked against :data:`TRL_TESTED`) does not train what cream trains on these columns:

- ``weight`` (the consistency C) is not one of the columns ``DPOTrainer`` keeps, so it is dropped, and TRL 1.16's
  sigmoid loss has no per-pair weight (its ``label_smoothing`` is one number, and unused by ``sigmoid``): plain TRL
  trains unweighted DPO. CREAM's loss per pair is ``C·(−log σ(βh)) + (1−C)·(−log σ(−βh))`` (cream_train.loss).
- ``precompute_ref_log_probs=False`` (the default) loads a reference model and runs it every step;
  ``precompute_ref_log_probs=True`` runs ``_precompute_ref_logps`` (a reference pass over the dataset) whatever the
  dataset holds, then refuses to add its columns beside ours ("duplicated columns").

:data:`SNIPPET` is the few lines the card shows to train with CREAM's loss on stock TRL: a ``DPOTrainer`` subclass
that keeps ``weight`` through TRL's column filter and collator, skips the reference pass when the reference columns
are there, and computes the C-weighted loss. tests/test_publish.py runs the block as the card prints it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

TRL_TESTED = "1.16.0"  # the TRL version the card's snippet and statements were checked against
TRL_REFERENCE = {"chosen_logp": "ref_chosen_logps", "rejected_logp": "ref_rejected_logps"}  # ours -> TRL's


def _stored_complete(table: pa.Table) -> bool:
    return all(c in table.column_names and table.column(c).null_count == 0 for c in TRL_REFERENCE)


def add_trl_reference(splits: Sequence) -> bool:
    """Add TRL's reference columns (copies of ``chosen_logp``/``rejected_logp``, float64) to every preferences split
    (objects with a ``table``), in place, when every split has the stored log-probs of every pair; else add none (a
    null would fail TRL's collator, and the splits of a config share one set of columns). Returns whether added."""
    if not splits or not all(_stored_complete(s.table) for s in splits):
        return False
    for s in splits:
        t = s.table
        for ours, theirs in TRL_REFERENCE.items():
            t = t.append_column(pa.field(theirs, pa.float64(), nullable=False), pc.cast(t.column(ours), pa.float64()))
        s.table = t
    return True


def without_trl_reference(table: pa.Table) -> pa.Table:
    """A published preferences table as cream wrote it: TRL's copies of the stored log-probs dropped."""
    return table.drop_columns([c for c in TRL_REFERENCE.values() if c in table.column_names])


SNIPPET = '''import torch
import torch.nn.functional as F
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer


class CreamLossDPOTrainer(DPOTrainer):
    """Per pair C * DPO + (1 - C) * reversed DPO, C = `weight`; the stored reference log-probs when present."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        collate = self.data_collator  # TRL's collator keeps only its own keys: add each pair's C
        self.data_collator = lambda rows: {**collate(rows), "weight": torch.tensor([r["weight"] for r in rows])}

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()  # the columns TRL keeps; `weight` too
        self._signature_columns = [*self._signature_columns, "weight"]

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if {"ref_chosen_logps", "ref_rejected_logps"} <= set(dataset.column_names):
            return dataset  # stored by the labeler: no reference pass
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        c, mask = inputs.pop("weight"), inputs["completion_mask"]
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False,
                    labels=inputs["input_ids"].masked_fill(mask == 0, -100), fused_lm_head=True)
        logps = out.log_probs[:, -(mask.size(1) - 1):].sum(1)  # log pi(y|x) over the response tokens
        chosen, rejected = logps.chunk(2)  # TRL's batch is [chosen; rejected]
        h = (chosen - inputs["ref_chosen_logps"]) - (rejected - inputs["ref_rejected_logps"])
        loss = (-c * F.logsigmoid(self.beta * h) - (1 - c) * F.logsigmoid(-self.beta * h)).mean()
        return (loss, out) if return_outputs else loss


MODEL = {model}  # the model that labeled the split: its log-probs are the stored reference
pairs = load_dataset({repo_id}, "preferences", split={split})
# Training another model? pairs = pairs.remove_columns(["ref_chosen_logps", "ref_rejected_logps"]): TRL then
# computes the reference once with the starting model.
args = DPOConfig(output_dir="cream-dpo", precompute_ref_log_probs=True,
                 max_length=None)  # truncation would invalidate the stored log-probs
trainer = CreamLossDPOTrainer(model=MODEL, args=args, train_dataset=pairs)
trainer.train()
'''


def snippet(repo_id: str, split: str, model: str | None) -> str:
    """:data:`SNIPPET` for one split; ``model`` None (several or no labeling models) leaves ``MODEL`` to fill in."""
    return (SNIPPET.replace("{model}", _quoted(model or "MODEL")).replace("{repo_id}", _quoted(repo_id))
            .replace("{split}", _quoted(split)))


def _quoted(text: str) -> str:
    """A double-quoted Python string literal of ``text`` (a JSON string is one; a path may hold any character)."""
    return json.dumps(text, ensure_ascii=False)


def card_lines(repo_id: str, split: str | None, model: str | None, stored: bool) -> list[str]:
    """The card's "Training with TRL" section: what plain TRL does with these columns, then :data:`SNIPPET` for the
    newest ``split`` (None: no preferences, no section). ``stored``: the reference columns were published."""
    if split is None:
        return []
    if stored:
        reference = (
            "**The stored reference is ignored: it is recomputed.** With `precompute_ref_log_probs=False` (the "
            "default) TRL loads a reference model and runs it on every batch; with `True` it runs its own reference "
            "pass over the dataset, then stops with \"duplicated columns\" because `ref_chosen_logps` / "
            "`ref_rejected_logps` are already there.")
        stored_text = [
            "`ref_chosen_logps` / `ref_rejected_logps` (TRL's names; the same values as `chosen_logp` / "
            "`rejected_logp`) are log π_{M_t}(y|x) summed over the response tokens, computed by the model that "
            "labeled the split (its `model` column) with its chat template (`template_hash`): the tokens after "
            "the templated prompt with its generation prompt, the template's end of turn included, which is the "
            "span TRL trains on. They are valid as the DPO reference only for training from that same model, with "
            "the same tokenizer and chat template, and no truncation (`max_length=None`, or leave out the pairs "
            "that are too long).", ""]
    else:
        reference = (
            "**The reference is computed.** This dataset does not store the log-probs of every pair (the labeler "
            "recorded none), so TRL computes the reference from the starting model.")
        stored_text = []
    return [
        "## Training with TRL", "",
        "The `preferences` config is TRL's conversational preference format, so `trl dpo` and `trl.DPOTrainer` "
        "load it as-is. What they do with cream's columns, as-is:", "",
        "- **C is lost: this trains plain (unweighted) DPO.** TRL drops the `weight` column, so every pair has "
        "weight 1 and CREAM's reversed term is gone. CREAM's loss per pair is C·(−log σ(βh)) + (1−C)·(−log σ(−βh)), "
        "h = [log π_θ(y⁺|x) − log π_ref(y⁺|x)] − [log π_θ(y⁻|x) − log π_ref(y⁻|x)]: DPO with a per-pair label "
        "smoothing ε = 1 − C, which TRL's single `label_smoothing` cannot express.",
        f"- {reference}", "",
        *stored_text,
        f"These lines (stock TRL and `datasets`, tested with TRL {TRL_TESTED}) train with CREAM's loss: C weights "
        "each pair" + (", and the stored log-probs are the reference (no reference model, no reference forward)"
                       if stored else "") + ":", "",
        "```python", snippet(repo_id, split, model).rstrip("\n"), "```", ""]
