"""Score responses: log pi(y|x) summed over the response tokens, with Hugging Face transformers.

Response tokens (CREAM.md, step 2) are the tokens of the templated conversation ``[prompt turns…, assistant: y]``
that follow the templated prompt with its generation prompt, so they include the end-of-turn tokens the chat
template adds (for SmolLM2: ``y`` + ``<|im_end|>`` + ``\\n``). Tokenisation is done once per tokenizer and shared by
every model that uses it.

Efficiency:
- identical (prompt, response) pairs are scored once;
- sequences are sorted by length and cut into batches under a token budget (little padding);
- the decoder runs once per batch (no KV cache); the LM head and log-softmax are applied only at the positions
  that predict response tokens, in chunks of positions, keeping each label's log-prob — the full-vocabulary
  log-softmax tensor over every position is never materialised.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cream_data.errors import CreamError

Conversation = list[dict]


@dataclass
class Tokenized:
    """Token ids of each distinct (prompt, response) and where its response starts."""

    ids: list[list[int]]          # full templated conversation, one per distinct item
    start: np.ndarray             # index of the first response token in ids[i]
    inverse: np.ndarray           # row -> distinct item

    @property
    def n_tokens(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64) - self.start


def _key(prompt: Conversation, response: str) -> str:
    return hashlib.sha1(json.dumps([prompt, response], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def response_token_span(tokenizer, prompt: Conversation, response: str) -> tuple[list[int], int]:
    """(ids of the templated [prompt…, assistant: response], index where the response tokens start)."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        list(prompt) + [{"role": "assistant", "content": response}], tokenize=True, return_dict=False
    )
    prompt_ids, full = list(prompt_ids), list(full)
    if full[: len(prompt_ids)] != prompt_ids:
        raise CreamError(
            "the chat template does not render the prompt as a prefix of prompt + answer; "
            "response log-probs are undefined for this template"
        )
    return full, len(prompt_ids)


def tokenize(tokenizer, prompts: Sequence[Conversation], responses: Sequence[str]) -> Tokenized:
    index: dict[str, int] = {}
    inverse = np.empty(len(responses), dtype=np.int64)
    ids, start = [], []
    for row, (p, r) in enumerate(zip(prompts, responses)):
        k = _key(p, r)
        j = index.get(k)
        if j is None:
            j = index[k] = len(ids)
            full, s = response_token_span(tokenizer, p, r)
            ids.append(full)
            start.append(s)
        inverse[row] = j
    return Tokenized(ids, np.array(start, dtype=np.int64), inverse)


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Length-sorted batches of at most ``batch_size`` sequences and ``max_tokens`` padded tokens.

    Deterministic in the lengths alone, so an interrupted run replans the same batches and resumes bit-identically.
    """
    order = np.argsort(-lengths, kind="stable")
    batches, cur, cur_max = [], [], 0
    for i in order:
        L = int(lengths[i])
        new_max = max(cur_max, L)
        if cur and (len(cur) >= batch_size or (max_tokens and new_max * (len(cur) + 1) > max_tokens)):
            batches.append(np.array(cur))
            cur, new_max = [], L
        cur.append(int(i))
        cur_max = new_max
    if cur:
        batches.append(np.array(cur))
    return batches


def _final_logit_transform(model):
    """Soft-capping / scaling some architectures apply to logits (Gemma 2/3, Cohere); identity otherwise."""
    import torch

    cfg = model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)

    def f(logits):
        if scale:
            logits = logits * scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return f


def score_batch(model, batch_ids: list[list[int]], starts: Sequence[int], pad_id: int, chunk: int = 512) -> np.ndarray:
    """Summed response log-probs of one batch (right-padded), computing logits only where needed."""
    import torch

    device = next(model.parameters()).device
    T = max(len(x) for x in batch_ids)
    input_ids = torch.full((len(batch_ids), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch_ids), T), dtype=torch.long)
    label_mask = torch.zeros((len(batch_ids), T), dtype=torch.bool)
    for b, (x, s) in enumerate(zip(batch_ids, starts)):
        input_ids[b, : len(x)] = torch.tensor(x)
        attn[b, : len(x)] = 1
        label_mask[b, s: len(x)] = True  # tokens being predicted
    input_ids, attn = input_ids.to(device), attn.to(device)
    # position t predicts token t+1: the hidden states we need sit one to the left of each label.
    pred_mask = torch.zeros_like(label_mask)
    pred_mask[:, :-1] = label_mask[:, 1:]
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attn, use_cache=False).last_hidden_state
        h = hidden[pred_mask.to(device)]                       # [M, H], M = response tokens in the batch
        labels = input_ids[label_mask.to(device)]              # [M]
        head, transform = model.get_output_embeddings(), _final_logit_transform(model)
        token_lp = torch.empty(h.shape[0], dtype=torch.float32, device=device)
        for a in range(0, h.shape[0], chunk):
            # [c, V] for this chunk only. log_softmax (x - max - log Σ exp(x - max)) keeps fp32 precision where
            # logit[label] - logsumexp would subtract two large, rounded numbers.
            logp = transform(head(h[a: a + chunk]).float()).log_softmax(-1)
            token_lp[a: a + chunk] = logp.gather(1, labels[a: a + chunk, None]).squeeze(1)
            del logp
        owner = torch.arange(len(batch_ids), device=device)[:, None].expand_as(pred_mask)[pred_mask.to(device)]
        sums = torch.zeros(len(batch_ids), dtype=torch.float64, device=device)
        sums.index_add_(0, owner, token_lp.double())
    return sums.cpu().numpy()


def naive_logps(model, tokenizer, prompts: Sequence[Conversation], responses: Sequence[str],
                batch_size: int = 8) -> np.ndarray:
    """Baseline: padded batches in input order, full log-softmax over the vocabulary (as the paper's code does).

    Kept for tests and the benchmark: it is the independent computation our engine is checked against.
    """
    import torch

    out = np.empty(len(responses), dtype=np.float64)
    pad = tokenizer.pad_token_id
    for a in range(0, len(responses), batch_size):
        spans = [response_token_span(tokenizer, p, r) for p, r in zip(prompts[a: a + batch_size], responses[a: a + batch_size])]
        T = max(len(x) for x, _ in spans)
        ids = torch.full((len(spans), T), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for b, (x, _) in enumerate(spans):
            ids[b, : len(x)] = torch.tensor(x)
            attn[b, : len(x)] = 1
        with torch.inference_mode():
            logp = model(input_ids=ids, attention_mask=attn).logits.float().log_softmax(-1)
        for b, (x, s) in enumerate(spans):
            tok = torch.tensor(x[s:])
            out[a + b] = logp[b, s - 1: len(x) - 1].gather(1, tok[:, None]).double().sum().item()
    return out


class HFScorer:
    """Scores tokenized (prompt, response) items with one model, batch by batch.

    ``score(tok, on_batch=…)`` returns summed log-probs per distinct item; ``on_batch(indices, values)`` is called
    after each batch so a caller can persist results as it goes (resume).
    """

    def __init__(self, model, pad_id: int, *, batch_size: int = 8, max_tokens: int | None = 8192, chunk: int = 512):
        self.model, self.pad_id = model, pad_id
        self.batch_size, self.max_tokens, self.chunk = batch_size, max_tokens, chunk

    def score(self, tok: Tokenized, todo: np.ndarray | None = None,
              on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
        lengths = np.array([len(x) for x in tok.ids])
        values = np.full(len(tok.ids), np.nan)
        skip = set() if todo is None else set(np.flatnonzero(~todo).tolist())
        for batch in plan_batches(lengths, self.batch_size, self.max_tokens):
            if skip and all(int(i) in skip for i in batch):
                continue
            v = score_batch(self.model, [tok.ids[i] for i in batch], tok.start[batch], self.pad_id, self.chunk)
            values[batch] = v
            if on_batch:
                on_batch(batch, v)
        return values
