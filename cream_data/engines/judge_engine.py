"""Run the SRLM LLM-as-a-judge with the current model: greedy, batched, length-sorted.

The judge prompt and the score parser live in :mod:`cream_data.judge`; generation reuses the sampling engine.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cream_data.judge import judge_messages, parse_judge_score
from cream_data.sample import GenerationParams


def run_judge(ref, prompts: Sequence[list[dict]], responses: Sequence[str], *, batch_size: int = 8,
              max_new_tokens: int = 256, log: Callable | None = None) -> tuple[list[str], list[float | None]]:
    """Judge every (prompt, response) once (identical pairs once); returns raw judge texts and parsed scores."""
    from cream_data.engines.hf_sample import HfSampler

    sampler = HfSampler.load(ref)
    requests, index, inverse = [], {}, []
    for p, r in zip(prompts, responses):
        msgs = judge_messages(p, r)
        key = msgs[-1]["content"]
        if key not in index:
            index[key] = len(requests)
            requests.append(msgs)
        inverse.append(index[key])
    lengths = np.array(sampler.prompt_lengths(requests))
    order = np.argsort(-lengths, kind="stable")
    texts: list[str] = [""] * len(requests)
    params = GenerationParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    for a in range(0, len(order), batch_size):
        batch = order[a: a + batch_size].tolist()
        gens = sampler.generate([requests[i] for i in batch], [0] * len(batch), 1, params)
        for i, g in zip(batch, gens):
            texts[i] = g[0].text
        if log:
            log(f"judge: {min(a + batch_size, len(order))}/{len(order)} judged")
    out_texts = [texts[j] for j in inverse]
    return out_texts, [parse_judge_score(t) for t in out_texts]
