"""Stop training on a non-finite loss or gradient norm, naming the rows of the batch: the mixin both stages'
trainers carry (:class:`~cream_train.dpo.CreamDPOTrainer`, and the SFT trainer :mod:`cream_train.train` builds).

Each example carries its row of the input table (``ROW_COLUMN``) through TRL's column filtering and collator into
every batch, so the one error line can say which rows (and ``prompt_id``) the failing step trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cream_data.errors import CreamError

ROW_COLUMN = "cream_row"  # each example's row in the input table, carried through TRL into every batch


@dataclass
class _WithRows:
    """A data collator that also puts each example's ``ROW_COLUMN`` into the batch, as a list."""

    collate: Any

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate(examples)
        batch[ROW_COLUMN] = [e[ROW_COLUMN] for e in examples]
        return batch


class NonFiniteGuard:
    """Trainer mixin: a non-finite loss or gradient norm stops training before the optimizer applies it.

    It raises one :class:`CreamError` line naming the optimizer step (1-based) and the rows of its batch (the
    micro-batch whose loss went non-finite, or every row of the step for the gradient norm), with their
    ``prompt_id`` when the dataset has one. Hooks: ``training_step`` (each micro-batch's loss) and transformers
    5's ``Trainer._get_grad_norm`` (once per optimizer step, right before ``optimizer.step``; the norm is the
    global one, so every process of a distributed run stops at the same step). Under fp16 loss scaling an inf
    gradient is an expected overflow (the scaler skips that step and lowers its scale), so only the loss is checked.
    """

    def __init__(self, *args, train_dataset, **kwargs):
        names = train_dataset.column_names
        self._row_ids = list(train_dataset["prompt_id"]) if "prompt_id" in names else None
        self._step_rows: list[int] = []
        self._bad_loss: tuple[float, list[int]] | None = None
        train_dataset = train_dataset.add_column(ROW_COLUMN, list(range(len(train_dataset))))
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        self.data_collator = _WithRows(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if ROW_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, ROW_COLUMN]

    def training_step(self, model, inputs, num_items_in_batch=None):
        inputs = dict(inputs)
        rows = [int(r) for r in inputs.pop(ROW_COLUMN)]
        self._step_rows += rows
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._bad_loss is None and not bool(loss.detach().isfinite().all()):
            self._bad_loss = (float(loss.detach().float().mean()), rows)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self._bad_loss is not None:
            value, rows = self._bad_loss
            what = f"non-finite loss ({value})"
        elif norm is not None and not math.isfinite(float(norm)) and not self.args.fp16:
            what, rows = f"non-finite gradient norm ({float(norm)}, loss finite)", self._step_rows
        else:
            self._step_rows = []
            return norm
        raise CreamError(f"training stopped at step {self.state.global_step + 1}: {what} on {self._name(rows)}; "
                         "nothing was published (a lower --lr, or check the model and the data)")

    def _name(self, rows: list[int]) -> str:
        shown, more = rows[:8], (f" and {len(rows) - 8} more" if len(rows) > 8 else "")
        ids = f" (prompt_id {', '.join(repr(self._row_ids[r]) for r in shown)}{more})" if self._row_ids else ""
        return f"rows {', '.join(map(str, shown))}{more}{ids}"
