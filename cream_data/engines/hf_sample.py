"""The Hugging Face sampling engine: many prompts x N sequences per forward pass.

A batch of ``B`` prompts is templated (``add_generation_prompt=True``), left-padded to a common width so
every prompt ends at the same position, and expanded to ``B x N`` rows; each decoding step is then one forward
pass over the rows still running. Sampling is plain temperature + nucleus:

    p(y_t | y_<t, x)  ∝  exp(logit / T)  restricted to the smallest top set with mass >= top_p

(no top-k, no repetition penalty: a model's own generation defaults do not change the distribution; ``T = 0`` is
greedy, run once and repeated ``N`` times). A row stops at its first stop token (the tokenizer's EOS, e.g.
SmolLM2's end-of-turn ``<|im_end|>``, plus the model's configured EOS ids).

Two paths, chosen by the model: our decode loop (:mod:`cream_data.engines.decode`: one prefill per batch, exact
top-p without a full sort, ended rows leave the batch) for decoder-only models with a dynamic KV cache, else
``model.generate`` with ``top_k=0`` and ``repetition_penalty=1`` set explicitly.

Determinism: each batch draws from a generator seeded with ``H(seeds of the batch)``; the same batch (same prompts,
same order) gives the same responses on the same machine. The stage keeps batch composition fixed, which makes
resumed and sharded runs exact. The two paths draw their random numbers differently: for a given seed, the decode
loop's samples are not ``generate``'s (both sample the same distribution); greedy tokens are the same.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

from cream_data.engines import models
from cream_data.engines.base import Conversation, Generation, GenerationParams


def batch_seed(seeds: Sequence[int]) -> int:
    """One 63-bit seed for a batch from its prompts' seeds (order matters: it fixes the rows' layout)."""
    digest = hashlib.sha256(",".join(map(str, seeds)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def split_at_stop(tokens: Sequence[int], stop_ids: Iterable[int]) -> tuple[list[int], str, int]:
    """``(content tokens, finish_reason, n_tokens)`` for one generated row.

    The row ends at its first stop token: ``n_tokens`` counts up to and including it and the reason is
    ``stop``. Without one, the length cap was hit: ``n_tokens`` is the row length and the reason ``length``.
    (Rows that stopped early are padded after the stop token; those pads are not counted.)
    """
    stop = set(stop_ids)
    for i, t in enumerate(tokens):
        if t in stop:
            return list(tokens[:i]), "stop", i + 1
    return list(tokens), "length", len(tokens)


def default_stop_ids(model, tokenizer) -> frozenset[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update(int(i) for i in (configured if isinstance(configured, (list, tuple)) else [configured]))
    return frozenset(ids)


class HfSampler:
    """``SamplingEngine`` over a loaded transformers model (the stage's ``dtype``: fp32 on CPU and bf16 on GPU by
    default, see ``models.load``)."""

    name = "hf"

    def __init__(self, model, tokenizer, *, stop_token_ids: Iterable[int] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.stop_token_ids = frozenset(stop_token_ids) if stop_token_ids else default_stop_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_token_ids)
        self.dtype = models.short_name(next(model.parameters()).dtype)  # what ran, for the stage's record
        from cream_data.engines.decode import supports

        self.uses_loop = supports(model)  # our decode loop where the model allows it, else model.generate

    @classmethod
    def load(cls, ref, *, device: str | None = None, dtype: str = "auto", trust_remote_code: bool = False) -> "HfSampler":
        model, tok, _ = models.load(ref, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        return cls(model, tok)

    def encode(self, prompts: Sequence[Conversation]) -> list[list[int]]:
        """Token ids of each templated prompt, ending with the assistant generation prompt."""
        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        # The template already holds every special token it needs (no second BOS).
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def prompt_lengths(self, prompts: Sequence[Conversation]) -> list[int]:
        return [len(ids) for ids in self.encode(prompts)]

    def _left_pad(self, ids: list[list[int]]):
        import torch

        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
            mask[row, width - len(x):] = 1
        return input_ids.to(self.device), mask.to(self.device), width

    def _generation_config(self, n: int, params: GenerationParams):
        from transformers import GenerationConfig

        common = dict(max_new_tokens=params.max_new_tokens, num_return_sequences=n, num_beams=1,
                      eos_token_id=sorted(self.stop_token_ids), pad_token_id=self.pad_id, repetition_penalty=1.0)
        if params.temperature == 0:
            return GenerationConfig(do_sample=False, **{**common, "num_return_sequences": 1})
        return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
                                **common)

    def generate(self, prompts: Sequence[Conversation], seeds: Sequence[int], n: int,
                 params: GenerationParams) -> list[list[Generation]]:
        """``n`` responses for each prompt, all in one batch of ``len(prompts) x n`` rows: our decode loop
        (:mod:`cream_data.engines.decode`) where the model allows it, else ``model.generate``."""
        if not prompts:
            return []
        ids = self.encode(prompts)
        if self.uses_loop:
            rows = self._decode_rows(ids, seeds, n, params)
        else:
            rows = self._generate_rows(ids, seeds, n, params)
        texts = self.tokenizer.batch_decode([content for content, _, _ in rows], skip_special_tokens=True)
        gens = [Generation(text, reason, n_tok) for text, (_, reason, n_tok) in zip(texts, rows)]
        # Rows are laid out prompt-major: prompt 0's n samples, then prompt 1's, …
        return [gens[p * n:(p + 1) * n] for p in range(len(prompts))]

    def _decode_rows(self, ids: list[list[int]], seeds: Sequence[int], n: int, params: GenerationParams):
        import torch

        from cream_data.engines.decode import DecodeBatch, decode

        batch = DecodeBatch(ids, n, params, self.stop_token_ids, self.pad_id, batch_seed(seeds))
        with torch.inference_mode():
            return [split_at_stop(r, self.stop_token_ids) for r in decode(self.model, batch)]

    def _generate_rows(self, ids: list[list[int]], seeds: Sequence[int], n: int, params: GenerationParams):
        """The rows of ``model.generate`` (the fallback, and the benchmarks' baseline): it draws from torch's global
        generator, so the call forks the RNG state and seeds it with the batch's seed."""
        import torch

        input_ids, mask, width = self._left_pad(ids)
        devices = [self.device] if self.device.type == "cuda" else []
        # fork_rng: seed generation without disturbing the caller's global RNG state.
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(batch_seed(seeds))
            out = self.model.generate(input_ids=input_ids, attention_mask=mask,
                                      generation_config=self._generation_config(n, params))
        rows = [split_at_stop(r, self.stop_token_ids) for r in out[:, width:].tolist()]
        if params.temperature == 0:  # greedy: the n samples are one continuation, decoded once
            rows = [r for r in rows for _ in range(n)]
        return rows
