"""Our decode loop for the hf engine: one prefill, then one forward pass per step over the rows still running.

For a batch of ``B`` templated prompts and ``n`` samples each:

1. the prompts are left-padded to a common width ``W`` (an attention mask marks the pads) and run once through the
   model, filling a KV cache; positions count real tokens only (``cumsum(mask) - 1``, as ``generate`` sets them);
2. for sampling, the cache and the last logits are repeated ``n`` times (prompt-major rows: prompt 0's ``n`` samples,
   then prompt 1's, …) instead of prefilling ``n`` copies of each prompt;
3. every step picks one token per running row from the last logits — ``argmax`` when greedy, else a draw from
   ``softmax(logits / T)`` restricted to the nucleus (:mod:`cream_data.engines.top_p`: the set transformers'
   ``TopPLogitsWarper`` keeps, found without sorting the vocabulary), inverting the row's cumulative distribution at
   a uniform number: each step draws one number for every row of the batch (running or ended) from a
   ``torch.Generator`` of the batch's own seed, so a row's tokens depend on its own scores and numbers only;
4. a row ends at its first stop token (kept, and counted) or after ``max_new_tokens``; ended rows leave the batch
   (their cache rows are selected away), so a step costs what the rows still running need;
5. the KV cache reserves ``prompt width + max_new_tokens`` positions per layer up front (:class:`ReservedLayer`)
   instead of concatenating every step.

Measured on a 2-core CPU (SmolLM2-135M, fp32; bench/sample.py, bench/eval_gen.py): prefilling each prompt once and
repeating its cache N times instead of prefilling N copies (15.4 -> 3.2 s for 8 prompts x 4 on one thread), no
full-vocabulary sort or multinomial per step (163 -> 5.6 ms for 32 rows), the reserved cache (~3 % of a step),
dropping ended rows (~5 % on the demo's eval, within noise). ``torch.compile`` of the model did not pay: 5.5 minutes
to compile, then 8.9 s vs 8.1 s eager for a batch. What is left (bench/sample.py prints it): 71-73 % of a sampling
run's CPU time is the model's matrix products, which at 32 rows run at 36-46 % of this CPU's large-GEMM rate, 16-17 %
is attention, 12 % everything else; a grouped-query attention by two batched products instead of SDPA gained 2-3 %.

Determinism: the tokens depend only on the batch (its prompts, their order, ``n``, the parameters and the seed) on a
given machine: resumed and sharded runs, which re-form the same batches, get the same responses. A different thread
count sums in another order; since every row has its own random numbers, that float noise changes a token only where
a row's number falls within the noise of a boundary of its cumulative distribution, as with ``generate``.
Greedy decoding gives ``generate``'s greedy tokens (tests/test_decode.py checks it on a tiny model in fp32). Sampled
tokens are a sample of the same distribution as ``generate``'s (temperature + top-p), but not its tokens for the same
seed: the random numbers are drawn differently.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from cream_data.engines.base import GenerationParams
from cream_data.engines.top_p import draw, scaled


@dataclass(frozen=True)
class DecodeBatch:
    """What one call decodes: templated prompt ids, samples per prompt, the tokens that end a row, the pad id and the
    batch's seed (ignored when greedy)."""

    prompts: Sequence[Sequence[int]]
    n: int
    params: GenerationParams
    stop_ids: frozenset[int]
    pad_id: int
    seed: int


def supports(model) -> bool:
    """Whether :func:`decode` can run ``model``: a decoder-only model whose forward takes a KV cache, positions, a
    2-D attention mask and ``logits_to_keep``, with a dynamic cache whose rows can be selected. Other models go
    through ``model.generate``."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    supports_cache = getattr(type(model), "_supports_default_dynamic_cache", None)
    if supports_cache is None or not supports_cache():
        return False
    wanted = {"input_ids", "attention_mask", "position_ids", "past_key_values", "use_cache", "logits_to_keep"}
    if not wanted <= set(inspect.signature(model.forward).parameters):
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # an unusual config: generate knows best
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


def decode(model, batch: DecodeBatch, *, drop_finished: bool = True) -> list[list[int]]:
    """The generated tokens of each row (``len(prompts) x n`` rows, prompt-major), each up to and including its stop
    token. ``drop_finished=False`` keeps ended rows in the batch (same tokens; for tests and measurements)."""
    device = next(model.parameters()).device
    greedy = batch.params.temperature == 0
    input_ids, mask = _left_pad(batch.prompts, batch.pad_id, device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = reserved_cache(model, input_ids.shape[1] + batch.params.max_new_tokens)
    logits = _forward(model, input_ids, mask, positions, cache)
    repeat = 1 if greedy else batch.n
    if repeat > 1:
        cache.batch_repeat_interleave(repeat)
        logits, mask, positions = (x.repeat_interleave(repeat, dim=0) for x in (logits, mask, positions))
    generator = None if greedy else torch.Generator(device=device).manual_seed(batch.seed)
    stop = torch.tensor(sorted(batch.stop_ids), dtype=torch.long, device=device)
    rows = logits.shape[0]
    out: list[list[int]] = [[] for _ in range(rows)]
    alive = torch.arange(rows, device=device)  # the output row of each batch row
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # kept rows only (drop_finished=False)
    last = positions[:, -1:]
    for step in range(batch.params.max_new_tokens):
        if greedy:
            tokens = logits.argmax(dim=-1)
        else:  # one number per row of the batch, running or not: a row's draws do not depend on when others end
            uniform = torch.rand(rows, generator=generator, dtype=torch.float64, device=device)[alive]
            tokens = draw(scaled(logits, batch.params.temperature), batch.params.top_p, uniform)
        if not drop_finished:  # an ended row reads pads (its later tokens are cut at its stop token)
            tokens = tokens.masked_fill(finished, batch.pad_id)
        for row, token in zip(alive.tolist(), tokens.tolist()):
            out[row].append(token)
        ended = torch.isin(tokens, stop)
        if step + 1 == batch.params.max_new_tokens:
            break
        if drop_finished:
            if bool(ended.any()):
                running = (~ended).nonzero()[:, 0]
                if not running.numel():
                    break
                cache.batch_select_indices(running)
                alive, tokens, mask, last = alive[running], tokens[running], mask[running], last[running]
        else:
            finished |= ended
            if bool(finished.all()):
                break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last = last + 1
        logits = _forward(model, tokens[:, None], mask, last, cache)
    return [_until_stop(r, batch.stop_ids) for r in out] if not greedy or batch.n == 1 else \
        [_until_stop(out[p], batch.stop_ids) for p in range(rows) for _ in range(batch.n)]


def _until_stop(tokens: list[int], stop_ids: frozenset[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in stop_ids:
            return tokens[:i + 1]
    return tokens


def _forward(model, input_ids, mask, positions, cache) -> torch.Tensor:
    """The float32 logits of the last position of each row, the cache extended by ``input_ids``."""
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float()


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids.to(device), mask.to(device)


def reserved_cache(model, capacity: int) -> Cache:
    """A KV cache with ``capacity`` positions reserved in every layer (:class:`ReservedLayer`)."""
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[ReservedLayer(capacity) for _ in range(layers)])


class ReservedLayer(DynamicLayer):
    """A dynamic cache layer that writes each step's keys and values into storage reserved for the whole decode
    (``[rows, heads, capacity, dim]``) and gives attention views of the filled part. ``DynamicLayer`` concatenates
    instead, copying the whole cache every step (15 % of a CPU decode step of SmolLM2-135M, 32 rows). Selecting rows
    copies the storage once."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._keys = self._storage(key_states, self.capacity)
        self._values = self._storage(value_states, self.capacity)
        self.is_initialized = True

    @staticmethod
    def _storage(like: torch.Tensor, capacity: int) -> torch.Tensor:
        return like.new_empty((*like.shape[:2], capacity, like.shape[-1]))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:  # not expected: the capacity covers the prompt and max_new_tokens
            self._grow(max(end, 2 * self.capacity))
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        return self._views()

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys = self._keys[:, :, :self.length]
        self.values = self._values[:, :, :self.length]
        return self.keys, self.values

    def _grow(self, capacity: int) -> None:
        keys, values = self._storage(self._keys, capacity), self._storage(self._values, capacity)
        keys[:, :, :self.length] = self._keys[:, :, :self.length]
        values[:, :, :self.length] = self._values[:, :, :self.length]
        self._keys, self._values, self.capacity = keys, values, capacity

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a reserved cache layer is never cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._views()
