"""SFT data for ``cream train DATA --stage sft``: prompt/completion conversations, loss on the assistant turn.

TRL's ``SFTTrainer`` on prompt-completion conversational data (``completion_only_loss=True``) tokenizes the
templated prompt with its generation prompt and the templated prompt + completion, and masks every prompt
token's label with -100, so only the assistant's tokens (and the template's end-of-turn) are learned.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from cream_data.errors import CreamError


def load_sft_table(source: str | Path, limit: int | None = None) -> pa.Table:
    """An ``sft`` table from any source the loaders accept (:func:`cream_data.inputs.prompts.load_sft`)."""
    from cream_data.inputs.prompts import load_sft

    table = load_sft(str(source), limit=limit)
    if table.num_rows == 0:
        raise CreamError(f"{source}: SFT table is empty; expected at least one prompt/completion")
    return table


def to_dataset(table: pa.Table):
    """The columns SFTTrainer needs, in TRL's prompt-completion conversational form, and ``prompt_id`` (to name the
    rows of a failing batch)."""
    import datasets

    return datasets.Dataset(table.select(["prompt_id", "prompt", "completion"]))
