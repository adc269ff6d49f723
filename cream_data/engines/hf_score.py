"""Score responses: log pi(y|x) summed over the response tokens, with Hugging Face transformers.

Response tokens (docs/algorithm.md 2.1) are the tokens of the templated conversation ``[prompt turns…, assistant: y]``
that follow the templated prompt with its generation prompt, so they include the end-of-turn tokens the chat
template adds (for SmolLM2: ``y`` + ``<|im_end|>`` + ``\\n``). Tokenisation is done once per tokenizer and shared by
every model that uses it.

Efficiency:
- identical (prompt, response) pairs are scored once;
- sequences are sorted by length and cut into batches under a token budget (little padding);
- **prefix sharing**: the N responses of a prompt share its templated prompt tokens, so the decoder runs over
  the prompt once per group and keeps its key/value cache; the group's responses then run together on top of
  the copied cache (each row's positions continue after its own prompt). Decoder work per group falls from
  N·(P + R) tokens to P + N·R;
- the LM head and log-softmax are applied only at the positions that predict response tokens, in chunks of
  positions, keeping each label's log-prob — the full-vocabulary log-softmax tensor over every position is
  never materialised.

What is shared is exactly the token prefix ``ids[:start - 1]``: the last prompt token is fed again with the
response, because its hidden state predicts the first response token. Models without a standard KV cache
(``prefix_sharing=False``, or a model whose forward does not accept ``past_key_values``) take the plain path.
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

    @property
    def lengths(self) -> np.ndarray:
        """Tokens of each row's whole templated conversation (what a model reads for it)."""
        return np.array([len(x) for x in self.ids], dtype=np.int64)[self.inverse]

    def take(self, rows: np.ndarray) -> "Tokenized":
        """Only ``rows`` (ascending row numbers): their distinct items in order of first use, exactly what
        :func:`tokenize` gives for those rows alone (so batch plans and caches do not depend on the rows left out)."""
        items, first, inverse = np.unique(self.inverse[rows], return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # the items by first use among ``rows``
        renumber = np.empty(len(order), dtype=np.int64)
        renumber[order] = np.arange(len(order))
        kept = items[order]
        return Tokenized([self.ids[i] for i in kept], self.start[kept], renumber[inverse.reshape(-1)])

    def prefix_groups(self) -> np.ndarray:
        """Group id per distinct item: items whose shared prefix ``ids[:start - 1]`` is the same token list."""
        index: dict[tuple, int] = {}
        out = np.empty(len(self.ids), dtype=np.int64)
        for i, (x, s) in enumerate(zip(self.ids, self.start)):
            out[i] = index.setdefault(tuple(x[: max(0, int(s) - 1)]), len(index))
        return out


def _key(prompt: Conversation, response: str) -> str:
    return hashlib.sha1(json.dumps([prompt, response], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def response_token_span(tokenizer, prompt: Conversation, response: str) -> tuple[list[int], int]:
    """(ids of the templated [prompt…, assistant: response], index where the response tokens start).

    The response tokens follow the longest common token prefix of the templated prompt (with its generation
    prompt) and the templated conversation, as the trainer splits them (``cream_train.prefs.response_token_ids``,
    TRL): usually the whole prompt, but a response that starts with whitespace (or is only whitespace, as a sampler
    may write) can merge with the generation prompt's last token (SmolLM2: ``"\\n"`` + ``"   "`` is one token), and
    that token then counts as the response's. Refused only where the template does not render the prompt as a
    *text* prefix of the conversation (then no split means "the response")."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        list(prompt) + [{"role": "assistant", "content": response}], tokenize=True, return_dict=False
    )
    prompt_ids, full = list(prompt_ids), list(full)
    if full[: len(prompt_ids)] == prompt_ids:
        return full, len(prompt_ids)
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}],
                                              tokenize=False)
    n = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
    if not full_text.startswith(text) or n == 0 or n >= len(full):
        raise CreamError(
            "the chat template does not render the prompt as a prefix of prompt + answer; "
            "response log-probs are undefined for this template"
        )
    return full, n


def tokenize(tokenizer, prompts: Sequence[Conversation], responses: Sequence[str],
             span: Callable = response_token_span, names: Sequence[str] | None = None) -> Tokenized:
    """Each distinct (prompt, response) once: ``span(tokenizer, prompt, response)`` gives its (ids, start).
    ``names``: what a row is called in an error (e.g. its prompt_id and response_idx; default its row number)."""
    index: dict[str, int] = {}
    inverse = np.empty(len(responses), dtype=np.int64)
    ids, start = [], []
    for row, (p, r) in enumerate(zip(prompts, responses)):
        k = _key(p, r)
        j = index.get(k)
        if j is None:
            j = index[k] = len(ids)
            try:
                full, s = span(tokenizer, p, r)
            except CreamError as e:
                raise CreamError(f"{names[row] if names is not None else f'row {row}'} (response {r[:40]!r}): "
                                 f"{e}") from None
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


def plan_prefix_batches(tok: Tokenized, batch_size: int, max_tokens: int | None = None,
                        groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Batches of whole prefix groups (a prompt's responses stay together), longest groups first, at most
    ``batch_size`` responses and ``max_tokens`` padded suffix tokens each (a group larger than the limits is cut
    into pieces that each re-use its prefix). Deterministic in the token ids alone (resume replans the same).
    ``groups``: ``tok.prefix_groups()`` when the caller has it already."""
    groups = tok.prefix_groups() if groups is None else groups
    suffix_len = np.array([len(x) for x in tok.ids], dtype=np.int64) - np.maximum(tok.start - 1, 0)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    pieces = []  # (max suffix length, items) — a group, or a piece of an oversize group
    for g, items in members.items():
        items = sorted(items, key=lambda i: (-suffix_len[i], i))
        cur: list[int] = []
        for i in items:  # longest first: cur[0] is the piece's longest suffix
            if cur and (len(cur) >= batch_size or (max_tokens and suffix_len[cur[0]] * (len(cur) + 1) > max_tokens)):
                pieces.append((int(suffix_len[cur[0]]), cur))
                cur = []
            cur.append(i)
        pieces.append((int(suffix_len[cur[0]]), cur))
    pieces.sort(key=lambda p: (-p[0], p[1][0]))
    batches, cur, cur_max = [], [], 0
    for L, items in pieces:
        new_max = max(cur_max, L)
        if cur and (len(cur) + len(items) > batch_size or (max_tokens and new_max * (len(cur) + len(items)) > max_tokens)):
            batches.append(np.array(cur))
            cur, new_max = [], L
        cur.extend(items)
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
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attn, use_cache=False).last_hidden_state
        return _response_logps(model, hidden, input_ids, label_mask.to(device), len(batch_ids), chunk)


def _response_logps(model, hidden, input_ids, label_mask, n_rows: int, chunk: int):
    """Σ log p(label) per row, from the hidden states one position left of each label (LM head in chunks)."""
    import torch

    device = hidden.device
    pred_mask = torch.zeros_like(label_mask)
    pred_mask[:, :-1] = label_mask[:, 1:]
    h = hidden[pred_mask]                                  # [M, H], M = response tokens in the batch
    labels = input_ids[label_mask]                         # [M]
    head, transform = model.get_output_embeddings(), _final_logit_transform(model)
    token_lp = torch.empty(h.shape[0], dtype=torch.float32, device=device)
    for a in range(0, h.shape[0], chunk):
        # [c, V] for this chunk only. log_softmax (x - max - log Σ exp(x - max)) keeps fp32 precision where
        # logit[label] - logsumexp would subtract two large, rounded numbers.
        logp = transform(head(h[a: a + chunk]).float()).log_softmax(-1)
        token_lp[a: a + chunk] = logp.gather(1, labels[a: a + chunk, None]).squeeze(1)
        del logp
    owner = torch.arange(n_rows, device=device)[:, None].expand_as(pred_mask)[pred_mask]
    sums = torch.zeros(n_rows, dtype=torch.float64, device=device)
    sums.index_add_(0, owner, token_lp.double())
    return sums.cpu().numpy()


def score_prefix_batch(model, batch_ids: list[list[int]], starts: Sequence[int], groups: Sequence[int], pad_id: int,
                       chunk: int = 512) -> np.ndarray:
    """Summed response log-probs of one batch whose rows share prompt prefixes (``groups``: prefix id per row).

    Pass 1 runs each distinct prefix ``ids[:start-1]`` once (right-padded) with a KV cache; the cache rows are
    then copied to the responses that share them. Pass 2 feeds ``ids[start-1:]`` (last prompt token + response)
    at positions ``start-1, start, …`` with an attention mask over [prefix (its padding masked), suffix].
    """
    import torch

    device = next(model.parameters()).device
    order: dict[int, int] = {}
    row_group = [order.setdefault(int(g), len(order)) for g in groups]
    first_row = {}
    for r, g in enumerate(row_group):
        first_row.setdefault(g, r)
    G = len(order)
    pre_len = [int(starts[first_row[g]]) - 1 for g in range(G)]
    P = max(pre_len)
    pre_ids = torch.full((G, P), pad_id, dtype=torch.long)
    pre_attn = torch.zeros((G, P), dtype=torch.long)
    for g in range(G):
        x = batch_ids[first_row[g]][: pre_len[g]]
        pre_ids[g, : len(x)] = torch.tensor(x)
        pre_attn[g, : len(x)] = 1
    suffixes = [x[int(s) - 1:] for x, s in zip(batch_ids, starts)]
    S = max(len(x) for x in suffixes)
    B = len(batch_ids)
    suf_ids = torch.full((B, S), pad_id, dtype=torch.long)
    suf_attn = torch.zeros((B, S), dtype=torch.long)
    label_mask = torch.zeros((B, S), dtype=torch.bool)
    for b, x in enumerate(suffixes):
        suf_ids[b, : len(x)] = torch.tensor(x)
        suf_attn[b, : len(x)] = 1
        label_mask[b, 1: len(x)] = True  # suffix token 0 is the last prompt token; the rest are the response
    sel = torch.tensor(row_group, dtype=torch.long, device=device)
    positions = torch.tensor([pre_len[g] for g in row_group], dtype=torch.long)[:, None] + torch.arange(S)[None, :]
    decoder = model.get_decoder()
    with torch.inference_mode():
        out = decoder(input_ids=pre_ids.to(device), attention_mask=pre_attn.to(device), use_cache=True)
        cache = out.past_key_values
        if G != B or row_group != list(range(B)):
            cache.batch_select_indices(sel)
        _read_only(cache)
        attn = torch.cat([pre_attn.to(device)[sel], suf_attn.to(device)], dim=1)
        hidden = decoder(input_ids=suf_ids.to(device), attention_mask=attn, position_ids=positions.to(device),
                         past_key_values=cache, use_cache=True).last_hidden_state
        return _response_logps(model, hidden, suf_ids.to(device), label_mask.to(device), B, chunk)


def _read_only(cache) -> None:
    """Make the suffix pass read the prefix cache without appending to it: each layer attends over
    cat(prefix K/V, suffix K/V) built on the fly and dropped after the layer, so no [B, P + S] cache for every
    layer is kept (a third of a GB for 16 rows of 460 tokens on SmolLM2). Plain full-attention layers only;
    anything else (sliding windows, other cache layouts) keeps the standard, appending update."""
    import torch

    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(ly, "is_sliding", False) or getattr(ly, "keys", None) is None for ly in layers):
        return

    def update(key_states, value_states, layer_idx, *args, **kwargs):
        ly = layers[layer_idx]
        return torch.cat([ly.keys, key_states], dim=-2), torch.cat([ly.values, value_states], dim=-2)

    cache.update = update


def _supports_cache(model) -> bool:
    import inspect

    try:
        return "past_key_values" in inspect.signature(model.get_decoder().forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False


class HFScorer:
    """Scores tokenized (prompt, response) items with one model, batch by batch.

    ``score(tok, on_batch=…)`` returns summed log-probs per distinct item; ``on_batch(indices, values)`` is called
    after each batch so a caller can persist results as it goes (resume). ``compute``: bf16 or fp16 runs every
    forward under ``torch.autocast`` (a model from ``models.load(…, mixed=True)``: a mixed-precision trainer's
    numerics, so the stored log-probs are the reference the trainer would compute).
    """

    def __init__(self, model, pad_id: int, *, batch_size: int = 8, max_tokens: int | None = 8192, chunk: int = 512,
                 prefix_sharing: bool = True, compute: str = "fp32"):
        self.model, self.pad_id, self.compute = model, pad_id, compute
        self.batch_size, self.max_tokens, self.chunk = batch_size, max_tokens, chunk
        self.prefix_sharing = prefix_sharing and _supports_cache(model)

    def score(self, tok: Tokenized, todo: np.ndarray | None = None,
              on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
        lengths = np.array([len(x) for x in tok.ids])
        shared = self.prefix_sharing and len(tok.ids) and bool((tok.start >= 2).all())
        if shared:
            groups = tok.prefix_groups()
            shared = len(np.unique(groups)) < len(groups)  # nothing to share: the plain path pads less
        plan = plan_prefix_batches(tok, self.batch_size, self.max_tokens, groups) if shared else \
            plan_batches(lengths, self.batch_size, self.max_tokens)

        from cream_data.engines.model_loading import autocast

        def one(batch):
            ids = [tok.ids[i] for i in batch]
            with autocast(self.model, self.compute):
                return score_prefix_batch(self.model, ids, tok.start[batch], groups[batch], self.pad_id, self.chunk) \
                    if shared else score_batch(self.model, ids, tok.start[batch], self.pad_id, self.chunk)

        return run_plan(plan, len(tok.ids), todo, one, on_batch)


def run_plan(plan: list[np.ndarray], n_items: int, todo: np.ndarray | None, score: Callable[[np.ndarray], np.ndarray],
             on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
    """``score(batch)`` for each planned batch, skipping those with every item done (``todo`` False), calling
    ``on_batch(batch, values)`` after each. The plan is made over all items, so a resumed run scores the same
    batches (bit-identical values) as an uninterrupted one."""
    values = np.full(n_items, np.nan)
    skip = set() if todo is None else set(np.flatnonzero(~todo).tolist())
    for batch in plan:
        if skip and all(int(i) in skip for i in batch):
            continue
        v = score(batch)
        values[batch] = v
        if on_batch:
            on_batch(batch, v)
    return values
