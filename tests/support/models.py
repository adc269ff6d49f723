"""Tiny random models of the SmolLM2 family, and the naive scorers the engines are checked against.

The naive scorers are the independent computations: padded batches in input order with a full log-softmax over the
vocabulary (as the paper's code scores), one unpadded forward per response for a reward model. The tests compare
cream's scorers to them, and bench/label.py and bench/rm.py time them side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

Conversation = list[dict]


def make_tiny_model(out: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64,
                    num_labels: int | None = None) -> Path:
    """A tiny random Llama-family model with the embedded model's real tokenizer and chat template, saved to ``out``.

    No download, seconds to build, the same tokenizer as SmolLM2. ``num_labels``: a
    ``LlamaForSequenceClassification`` with that many outputs (a reward model when 1) instead of a causal LM.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from cream_data.engines.model_refs import embedded_checkpoint

    out = Path(out)
    tok = AutoTokenizer.from_pretrained(embedded_checkpoint())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **({"num_labels": num_labels} if num_labels else {}),
    )
    model = LlamaForSequenceClassification(config) if num_labels else LlamaForCausalLM(config)
    if not num_labels:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def naive_logps(model, tokenizer, prompts: Sequence[Conversation], responses: Sequence[str],
                batch_size: int = 8) -> np.ndarray:
    """log pi(y|x) of each response, summed over its response tokens (the span
    :func:`cream_data.engines.hf_score.response_token_span` names): padded batches in input order, a full
    log-softmax over the vocabulary at every position."""
    import torch

    from cream_data.engines.hf_score import response_token_span

    out = np.empty(len(responses), dtype=np.float64)
    pad = tokenizer.pad_token_id
    for a in range(0, len(responses), batch_size):
        spans = [response_token_span(tokenizer, p, r)
                 for p, r in zip(prompts[a: a + batch_size], responses[a: a + batch_size])]
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


def naive_rewards(model, tokenizer, prompts: Sequence[Conversation], responses: Sequence[str]) -> np.ndarray:
    """A reward model's logit for each templated conversation: one unpadded forward per response, in input order."""
    import torch

    from cream_data.engines.rm_score import conversation_span

    out = np.empty(len(responses), dtype=np.float64)
    device = next(model.parameters()).device
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids, _ = conversation_span(tokenizer, p, r)
        with torch.inference_mode():
            out[i] = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, 0].double().item()
    return out
