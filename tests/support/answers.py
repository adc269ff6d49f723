"""Responses whose answers a judge or an oracle can check: arithmetic questions answered right, wrong or at length."""

from __future__ import annotations

import pyarrow as pa

ANSWERS = {"p1": ["Answer: 2", "Answer: 3"], "p2": ["Answer: 4", "It is five."]}  # prompt id -> its responses


def responses_table(texts: dict[str, list[str]], prompt=lambda pid: f"What is {pid[-1]} + {pid[-1]}?") -> pa.Table:
    """A responses table of ``texts`` (prompt id -> its responses), each prompt asking ``prompt(pid)``."""
    rows = [{"prompt_id": pid, "prompt": [{"role": "user", "content": prompt(pid)}], "response_idx": i,
             "response": text, "model": "m", "iteration": 1, "seed": 0, "temperature": 0.8, "top_p": 0.95,
             "max_new_tokens": 32, "finish_reason": "stop", "n_tokens": 5}
            for pid, answers in texts.items() for i, text in enumerate(answers)]
    return pa.Table.from_pylist(rows)

