"""Score responses with a sequence-classification reward model: one logit per templated conversation.

Reward models of the RewardBench kind (Skywork-Reward, ArmoRM-style, any ``AutoModelForSequenceClassification``
checkpoint with ``num_labels = 1``) read the whole conversation ``[prompt turns…, assistant: y]`` templated by
their OWN tokenizer and chat template (no generation prompt); the reward is the head's logit at the position
the model pools at. A reward model may use another tokenizer family than the policy: it never sees the policy's
tokens.

Pooling and padding: transformers' ``*ForSequenceClassification`` pools at the rightmost token that is not
``config.pad_token_id``. Batches are right-padded with that id, so every real token keeps its position and the
pooled position is the one an unpadded, one-at-a-time forward pools at: batched rewards equal per-example ones.
A model without a ``pad_token_id`` pools at the last token when run alone (and refuses batches); it is given a
pad id that ends none of the sequences scored, so it still pools at the last token.

Efficiency as the log-prob scorer: identical (prompt, response) pairs once, length-sorted batches under a token
budget (little padding), no KV cache.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cream_data.engines import hf_score, models
from cream_data.errors import CreamError


def conversation_span(tokenizer, prompt: hf_score.Conversation, response: str) -> tuple[list[int], int]:
    """(ids of the templated [prompt…, assistant: response], 0): the reward model reads all of it."""
    ids = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}], tokenize=True,
                                        return_dict=False)
    return list(ids), 0


def tokenize(tokenizer, prompts: Sequence[hf_score.Conversation], responses: Sequence[str]) -> hf_score.Tokenized:
    """Each distinct (prompt, response) once, under the reward model's tokenizer and chat template."""
    return hf_score.tokenize(tokenizer, prompts, responses, span=conversation_span)


def check(ref: models.ModelRef, *, trust_remote_code: bool = False, what: str = "--reward-model"):
    """The reward model's tokenizer, after the reward-model role check (:func:`models.check_reward_model`: a
    single-logit sequence classifier whose tokenizer has a chat template and fits its embedding, and whose weights
    are whole; ``what``: the flag or key that named it). Reads the tokenizer, the config and the weights files'
    headers only."""
    return models.check_reward_model(ref, trust_remote_code=trust_remote_code, what=what)


def load(ref: models.ModelRef, *, device: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
         what: str = "--reward-model"):
    """The reward model in eval mode, in ``dtype`` (a stage setting; auto: fp32 on CPU, bf16 on GPU). A checkpoint
    whose head weights are missing (so transformers would start them at random) is refused, naming it as ``what``."""
    from transformers import AutoModelForSequenceClassification

    models.check_device(device)
    device = device or models.default_device()
    model, info = models.from_pretrained(AutoModelForSequenceClassification, ref,
                                         dtype=models.torch_dtype(models.resolve_dtype(dtype, device)),
                                         trust_remote_code=trust_remote_code, output_loading_info=True, what=what)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CreamError(f"{what} {ref.name}: the checkpoint has no weights for {missing[0]} "
                         f"({len(missing)} missing); not a trained sequence-classification reward model")
    return model.to(device).eval()


def pad_id(model, tok: hf_score.Tokenized, fallback: int | None) -> int:
    """The id batches are right-padded with: the model's ``pad_token_id`` (the one it pools by); a model without
    one gets ``fallback`` (the tokenizer's pad id), or the smallest id, that ends none of the sequences."""
    cfg = model.config.get_text_config()
    if cfg.pad_token_id is None:
        ends = {x[-1] for x in tok.ids if x}
        cfg.pad_token_id = fallback if fallback is not None and fallback not in ends else \
            next(i for i in range(len(ends) + 1) if i not in ends)
    return int(cfg.pad_token_id)


def score_batch(model, batch_ids: list[list[int]], pad: int) -> np.ndarray:
    """The single logit of each sequence of one right-padded batch."""
    import torch

    device = next(model.parameters()).device
    T = max(len(x) for x in batch_ids)
    input_ids = torch.full((len(batch_ids), T), pad, dtype=torch.long)
    attn = torch.zeros((len(batch_ids), T), dtype=torch.long)
    for b, x in enumerate(batch_ids):
        input_ids[b, : len(x)] = torch.tensor(x)
        attn[b, : len(x)] = 1
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device), use_cache=False).logits
    return logits[:, 0].double().cpu().numpy()


class RMScorer:
    """Scores tokenized conversations with a reward model, batch by batch (the log-prob scorer's interface:
    ``score(tok, todo, on_batch)``, so the label stage caches and resumes both alike)."""

    def __init__(self, model, fallback_pad: int | None = None, *, batch_size: int = 8, max_tokens: int | None = 8192):
        self.model, self.fallback_pad = model, fallback_pad
        self.batch_size, self.max_tokens = batch_size, max_tokens

    def score(self, tok: hf_score.Tokenized, todo: np.ndarray | None = None,
              on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None) -> np.ndarray:
        pad = pad_id(self.model, tok, self.fallback_pad)
        plan = hf_score.plan_batches(np.array([len(x) for x in tok.ids]), self.batch_size, self.max_tokens)
        return hf_score.run_plan(plan, len(tok.ids), todo,
                                 lambda batch: score_batch(self.model, [tok.ids[i] for i in batch], pad), on_batch)
