"""The prompts stage's settings (``cream prompts`` flags, the ``prompts:`` section of a run config): one definition.

The loaders check the values (an unknown layout, a limit below 1, more subsets than prompts), naming the flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from cream_data.settings import Settings, setting


@dataclass(frozen=True)
class PromptsConfig(Settings):
    """How a source becomes a prompts (or SFT) table."""

    what = "prompts config"

    layout: str | None = setting(None, help="Source layout: gsm8k, arc, openbookqa, siqa, oasst, alpaca_eval, "
                                 "self_instruct, generic. Detected from the fields if omitted.")
    limit: int | None = setting(None, help="Keep the first K prompts of the source.")
    split: str | None = setting(None, help="Split of a datasets folder or Hub dataset (default: train, or the only "
                                "one).")
    suffix: str | None = setting(None, help="Text appended to the user turn (after a newline).")
    dedupe: bool = setting(False, help="Keep the first of prompts with the same id instead of failing.")
    prompt_field: str | None = setting(None, help="Field with the prompt text (or a list of {role, content} turns).")
    answer_field: str | None = setting(None, help="Field with the reference answer (with --sft: the completion).")
    id_field: str | None = setting(None, help="Field with a unique id (default: content hash).")
    system_field: str | None = setting(None, help="Field with a system prompt.")
    completion_field: str | None = setting(None, help="With --sft: field with the answer.")
    split_into: int | None = setting(None, help="Write T disjoint subsets OUT/subset-1 … OUT/subset-T, one per "
                                     "iteration.")
    sft: bool = setting(False, help="Write an sft table (prompt + assistant completion) instead.")
    seed: int = setting(0, help="Seed of the --split-into assignment.")

    def field_map(self):
        """The source fields named by ``*_field`` (None when none is named: the layout decides)."""
        from cream_data.inputs.layouts import FieldMap

        fields = FieldMap(prompt=self.prompt_field, answer=self.answer_field, id=self.id_field,
                          system=self.system_field, completion=self.completion_field)
        return fields or None
