"""Run the SRLM LLM-as-a-judge with the current model: greedy, batched, length-sorted.

The judge prompt, the score parser and the expected-score rules live in :mod:`cream_data.rewards.judge`; generation
reuses the sampling engine. In ``expected`` mode one more forward pass of the same model, over
``[judge prompt + generated text up to the cue + cue tail]`` (right-padded, batched by length), reads the
next-token distribution over the score digits at the end of each sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cream_data.rewards.judge import (APPENDED_CUE, JUDGE_PROMPT, SCORE_VALUES, cue_tail, judge_messages, judge_prefix,
                                      parse_judge_score, value_token_ids)
from cream_data.engines.base import GenerationParams


@dataclass
class JudgeOutput:
    """One entry per judged (prompt, response) row."""

    texts: list[str]                # the judge's text; an appended cue is marked (judge.APPENDED_MARK)
    scores: list[float | None]      # parse: the parsed score or None; expected: the expected score, never None
    confidence: list[float] | None  # expected: probability mass on the values 0..5 at the cue; parse: None
    appended: int = 0               # expected: distinct judge outputs without a cue (the cue was appended)


def run_judge(ref, prompts: Sequence[list[dict]], responses: Sequence[str], *, batch_size: int = 8,
              max_new_tokens: int = 256, mode: str = "expected", template: str = JUDGE_PROMPT,
              log: Callable | None = None, dtype: str = "auto") -> JudgeOutput:
    """Judge every (prompt, response) once (identical pairs once) and score it by ``mode`` (parse | expected), with
    the model run in ``dtype`` (a stage setting: auto | bf16 | fp16 | fp32)."""
    from cream_data.engines.hf_sample import HfSampler

    sampler = HfSampler.load(ref, dtype=dtype)
    requests, index, inverse = [], {}, []
    for p, r in zip(prompts, responses):
        msgs = judge_messages(p, r, template)
        key = msgs[-1]["content"]
        if key not in index:
            index[key] = len(requests)
            requests.append(msgs)
        inverse.append(index[key])
    prompt_ids = sampler.encode(requests)
    order = np.argsort(-np.array([len(x) for x in prompt_ids]), kind="stable")
    texts: list[str] = [""] * len(requests)
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    for a in range(0, len(order), batch_size):
        batch = order[a: a + batch_size].tolist()
        gens = sampler.generate([requests[i] for i in batch], [0] * len(batch), 1, params)
        for i, g in zip(batch, gens):
            texts[i] = g[0].text
        if log:
            log(f"judge: {min(a + batch_size, len(order))}/{len(order)} judged")
    if mode == "parse":
        out_texts = [texts[j] for j in inverse]
        return JudgeOutput(out_texts, [parse_judge_score(t) for t in out_texts], None)

    tok = sampler.tokenizer
    tail = cue_tail(tok)
    cut = [judge_prefix(t) for t in texts]
    seqs = [ids + tok(prefix + tail, add_special_tokens=False)["input_ids"]
            for ids, (prefix, _, _) in zip(prompt_ids, cut)]
    reward, confidence = expected_scores(sampler.model, seqs, value_token_ids(tok), sampler.pad_id,
                                         batch_size=batch_size)
    if log:
        log(f"judge: expected scores read for {len(seqs)} outputs ({sum(c[2] for c in cut)} with the cue appended)")
    return JudgeOutput([cut[j][1] for j in inverse], [float(reward[j]) for j in inverse],
                       [float(confidence[j]) for j in inverse], sum(c[2] for c in cut))


def judge_lengths(tokenizer, prompts: Sequence[list[dict]], responses: Sequence[str], *, max_new_tokens: int = 256,
                  mode: str = "expected", template: str = JUDGE_PROMPT) -> np.ndarray:
    """Per row, the most tokens the judge (the model of ``tokenizer``) reads for it in :func:`run_judge`: the
    templated judge prompt, the ``max_new_tokens`` it may write and, in ``expected`` mode, an appended score cue
    (the second pass reads the prompt, the text up to its cue, and the cue's tail). Identical prompts once."""
    cue = len(tokenizer(APPENDED_CUE + cue_tail(tokenizer), add_special_tokens=False)["input_ids"]) \
        if mode == "expected" else 0
    known: dict[str, int] = {}
    out = np.empty(len(responses), dtype=np.int64)
    for row, (p, r) in enumerate(zip(prompts, responses)):
        msgs = judge_messages(p, r, template)
        key = msgs[-1]["content"]
        if key not in known:  # as HfSampler.encode: the template holds every special token it needs
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            known[key] = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        out[row] = known[key]
    return out + max_new_tokens + cue


def expected_scores(model, seqs: Sequence[list[int]], value_ids: Sequence[Sequence[int]], pad_id: int, *,
                    batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """For each token sequence, the next-token distribution after its last token, over the score values:
    ``(expected value, mass)`` where ``mass`` = sum of the probabilities of every token id of every value and the
    expected value uses the distribution renormalised over the values (``value_ids[k]``: the ids of value k).

    Computed in log space (log-sum-exp per value, then a softmax over the values), so a model that puts almost
    no mass on the digits still gets a defined expected value."""
    import torch

    from cream_data.engines.hf_score import _final_logit_transform

    device = next(model.parameters()).device
    flat = torch.tensor([i for ids in value_ids for i in ids], device=device)
    # [values, ids]: 0 where the id stands for the value, -inf elsewhere (a log-space membership mask)
    member = torch.full((len(value_ids), len(flat)), -torch.inf, dtype=torch.float64, device=device)
    start = 0
    for k, ids in enumerate(value_ids):
        member[k, start: start + len(ids)] = 0.0
        start += len(ids)
    values = torch.tensor(SCORE_VALUES, dtype=torch.float64, device=device)
    head, transform = model.get_output_embeddings(), _final_logit_transform(model)
    reward, mass = np.zeros(len(seqs)), np.zeros(len(seqs))
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for a in range(0, len(order), batch_size):
        batch = order[a: a + batch_size]
        lengths = torch.tensor([len(seqs[i]) for i in batch])
        input_ids = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
        attn = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        with torch.inference_mode():
            hidden = model.get_decoder()(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                                         use_cache=False).last_hidden_state
            last = hidden[torch.arange(len(batch), device=device), (lengths - 1).to(device)]  # right padding
            logp = transform(head(last).float()).log_softmax(-1).double()[:, flat]   # [B, ids]
            per_value = (logp[:, None, :] + member[None]).logsumexp(-1)              # [B, values]
            total = per_value.logsumexp(-1)
            reward[batch] = ((per_value - total[:, None]).exp() @ values).cpu().numpy()
            mass[batch] = total.exp().clamp(max=1.0).cpu().numpy()
    return reward, mass
