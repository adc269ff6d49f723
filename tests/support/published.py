"""A run directory laid out as `cream run` writes it, with consistent responses, scores and preferences tables per
iteration and the prompts they came from: what `cream publish` and the table readers take."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml
from scipy.stats import kendalltau, rankdata

import schemas
from cream_data.tables.io import write_table

N = 4  # responses per prompt
SOURCES = ["gsm8k:train.jsonl", "arc:ARC-Easy-Train.jsonl"]  # the prompts' sources, in turn


def conv(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def make_tables(t: int, n_prompts: int, seed: int) -> dict[str, pa.Table]:
    """Consistent responses / scores / preferences tables for iteration t (ranks and C via scipy)."""
    rng = np.random.default_rng(seed)
    resp, scores, prefs = [], [], []
    model, ref = f"m{t}", f"m{t - 1}"
    for p in range(n_prompts):
        pid = f"p{t}-{p}"
        prompt = conv("user", f"question {pid}?")
        r = np.round(rng.normal(size=N), 3)
        prev = np.round(rng.normal(size=N), 3)
        for i in range(N):
            resp.append({"prompt_id": pid, "prompt": prompt, "response_idx": i, "response": f"answer {i} to {pid}",
                         "model": model, "iteration": t, "seed": 7, "temperature": 0.8, "top_p": 0.95,
                         "max_new_tokens": 64, "finish_reason": "stop", "n_tokens": 5 + i})
            for scorer, rew, m, rm in (("current", r[i], model, ref), ("previous", prev[i], ref, None)):
                scores.append({"prompt_id": pid, "response_idx": i, "scorer": scorer, "model": m, "ref_model": rm,
                               "logp": -10.0 - i, "ref_logp": -11.0 if rm else None, "n_tokens": 5 + i,
                               "reward": float(rew), "reward_kind": "dpo" if rm else "likelihood_norm",
                               "judge_text": None})
        ranks = rankdata(-r, method="ordinal").astype(int)
        prev_ranks = rankdata(-prev, method="ordinal").astype(int)
        tau = float(kendalltau(ranks, prev_ranks).statistic)
        c, ch, rj = (tau + 1) / 2, int(np.argmax(r)), int(np.argmin(r))
        prefs.append({"prompt_id": pid, "prompt": prompt, "chosen": conv("assistant", f"answer {ch} to {pid}"),
                      "rejected": conv("assistant", f"answer {rj} to {pid}"), "chosen_idx": ch, "rejected_idx": rj,
                      "iteration": t, "n_responses": N, "rewards": r.tolist(), "prev_rewards": prev.tolist(),
                      "ranks": ranks.tolist(), "prev_ranks": prev_ranks.tolist(), "kendall_tau": tau,
                      "consistency": c, "consistency_method": "kendall", "weight": c, "chosen_logp": -10.0 - ch,
                      "rejected_logp": -10.0 - rj, "chosen_n_tokens": 5 + ch, "rejected_n_tokens": 5 + rj,
                      "model": model, "ref_model": ref, "prev_model": ref, "prev_ref_model": None,
                      "template_hash": "abc123"})
    return {k: pa.Table.from_pylist(rows, schema=schemas.get(k).arrow)
            for k, rows in (("responses", resp), ("scores", scores), ("preferences", prefs))}


def make_run(root: Path, iterations: int = 2, n_prompts: int = 5, sources=SOURCES) -> dict[int, dict[str, pa.Table]]:
    """A run directory laid out as `cream run` writes it; returns the tables per iteration."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"method": "cream", "iterations": iterations,
                                                      "model": "m0", "hub_token": "hf_should_not_appear"}))
    (root / "manifest.json").write_text(json.dumps({"cream_version": "0.1.0", "stages": []}))
    tables, prompt_rows = {}, []
    for t in range(1, iterations + 1):
        tables[t] = make_tables(t, n_prompts, seed=t)
        for kind, table in tables[t].items():
            extra = {"summary": {"pairs": table.num_rows, "skipped": {"all_rewards_equal": t}},
                     "config": {"scope": "sample", "reward": "dpo"}} if kind == "preferences" else None
            write_table(table, root / f"iter-{t}" / kind, kind, manifest_extra=extra)
        for k, pid in enumerate(tables[t]["preferences"].column("prompt_id").to_pylist()):
            prompt_rows.append({"prompt_id": pid, "prompt": conv("user", f"question {pid}?"),
                                "source": sources[k % len(sources)], "reference_answer": None})
    write_table(pa.Table.from_pylist(prompt_rows), root / "prompts" / "all", "prompts")
    return tables
