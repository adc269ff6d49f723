"""What every engine shares with the stages that drive it: the conversation type, a sampled response, the sampling
parameters, and the protocol a sampler provides.

They live here, below the stages, so an engine never imports a stage (``cream_data.stages.sample``, ``label``,
``evaluate``): the import contracts in pyproject.toml (``[tool.importlinter]``) enforce it. ``cream_data.stages.sample``
re-exports them under their old names.
"""

from __future__ import annotations

import hashlib

from dataclasses import dataclass
from typing import Protocol, Sequence

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Generation:
    """One sampled response. ``n_tokens`` counts generated tokens up to and including the stop token."""

    text: str
    finish_reason: str  # "stop" (end-of-turn / EOS) | "length" (max_new_tokens reached)
    n_tokens: int


@dataclass(frozen=True)
class GenerationParams:
    temperature: float  # 0 means greedy
    top_p: float
    max_new_tokens: int


class SamplingEngine(Protocol):
    """What the sampling stage needs from a model runner (``hf_sample.HfSampler``, ``vllm_engine.VllmSampler``)."""

    name: str

    def prompt_lengths(self, prompts: Sequence[Conversation]) -> list[int]:
        """Token count of each prompt under the chat template with the generation prompt."""
        ...

    def generate(self, prompts: Sequence[Conversation], seeds: Sequence[int], n: int,
                 params: GenerationParams) -> list[list[Generation]]:
        """``n`` responses per prompt, ``result[p][i]`` for prompt ``p``; deterministic given the seeds."""
        ...


def prompt_seed(seed: int, prompt_id: str) -> int:
    """``H(seed, prompt_id)`` as a 31-bit integer: a prompt's randomness does not depend on its neighbours."""
    digest = hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF


def plan_batches(prompt_ids: Sequence[str], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches: longest prompts first (out-of-memory shows up at once), ties by id."""
    order = sorted(range(len(prompt_ids)), key=lambda r: (-lengths[r], prompt_ids[r]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
