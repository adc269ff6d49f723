"""Responses and scores tables for pairing, from per-prompt reward lists: what `cream label` hands
:func:`cream_data.rewards.pairing.build_preferences`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import schemas


def make_tables(cur, prev=None, *, logp=True, iteration=2, seed=0):
    """responses + scores tables from per-prompt reward lists (None = null reward), rows shuffled."""
    resp, score = [], []
    for p, rewards in enumerate(cur):
        pid = f"p{p:04d}"
        for i, r in enumerate(rewards):
            resp.append({
                "prompt_id": pid, "prompt": [{"role": "user", "content": f"question {p}"}], "response_idx": i,
                "response": f"{pid} answer {i}", "model": "M2", "iteration": iteration, "seed": 1,
                "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "finish_reason": "stop", "n_tokens": 5,
            })
            score.append({
                "prompt_id": pid, "response_idx": i, "scorer": "current", "model": "M2", "ref_model": "M1",
                "logp": -10.0 - i if logp else None, "ref_logp": None, "n_tokens": 10 + i, "reward": r,
                "reward_kind": "dpo", "judge_text": None,
            })
            if prev is not None and i < len(prev[p]):
                score.append({
                    "prompt_id": pid, "response_idx": i, "scorer": "previous", "model": "M1", "ref_model": "M0",
                    "logp": -20.0, "ref_logp": None, "n_tokens": 10 + i, "reward": prev[p][i],
                    "reward_kind": "dpo", "judge_text": None,
                })
    rng = np.random.default_rng(seed)
    resp = [resp[k] for k in rng.permutation(len(resp))]
    score = [score[k] for k in rng.permutation(len(score))]
    return (pa.Table.from_pylist(resp, schema=schemas.get("responses").arrow),
            pa.Table.from_pylist(score, schema=schemas.get("scores").arrow))
