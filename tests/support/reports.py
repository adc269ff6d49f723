"""A run directory as `cream inspect` and the run report read it: evaluation tables of known correct flags and
preferences tables of two iterations, with the skips their summaries count."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from scipy import stats

import schemas
from cream_data.tables import io

# Known correct flags per model and task: accuracy = mean of the flags.
EVAL = {
    "M0": {"arc_easy": [1, 0, 0, 1, 0, 0, 1, 0, 0, 0], "gsm8k": [0, 0, 0, 0, 0, 0], "siqa": [1, 1, 0, 1]},
    "M1": {"arc_easy": [1, 1, 0, 1, 0, 1, 1, 0, 0, 1], "gsm8k": [1, 0, 0, 0, 0, 0], "siqa": [1, 1, 1, 1]},
    "M2": {"arc_easy": [1, 1, 1, 1, 0, 1, 1, 0, 1, 1], "gsm8k": [1, 1, 0, 0, 0, 1], "siqa": [0, 1, 1, 1]},
}
SKIPPED = {1: {"all_equal": 2, "n_lt_2": 0, "nonfinite_reward": 1}, 2: {"all_equal": 0, "missing_prev": 3}}


def conv(role, text):
    return [{"role": role, "content": text}]


def ranks_of(r):
    """1 = best, ties by response index (scipy's ordinal rank of -r)."""
    return [int(x) for x in stats.rankdata([-v for v in r], method="ordinal")]


def make_prefs(t, n_prompts, seed, with_prev=True):
    """A schema-valid preferences table for iteration t; N in {4, 5} so rank lists of two lengths occur."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_prompts):
        n = 4 if i % 3 == 0 else 5
        cur = rng.normal(size=n).round(2).tolist()
        # Previous rewards correlated with the current ones, so tau spreads over [-1, 1] with a positive mean.
        prev = (np.array(cur) + rng.normal(scale=1.5, size=n)).round(2).tolist() if with_prev else None
        ranks = ranks_of(cur)
        prev_ranks = ranks_of(prev) if prev else None
        tau = float(stats.kendalltau(ranks, prev_ranks).statistic) if prev else None
        c = (tau + 1) / 2 if prev else 1.0
        chosen, rejected = ranks.index(1), ranks.index(n)
        rows.append({
            "prompt_id": f"t{t}-{i:03d}", "prompt": conv("user", f"q{i}"),
            "chosen": conv("assistant", f"a{chosen}"), "rejected": conv("assistant", f"a{rejected}"),
            "chosen_idx": chosen, "rejected_idx": rejected, "iteration": t, "n_responses": n,
            "rewards": cur, "prev_rewards": prev, "ranks": ranks, "prev_ranks": prev_ranks,
            "kendall_tau": tau, "consistency": c, "consistency_method": "kendall" if prev else "none",
            # A weight that is NOT C (as with srlm, C = 1): the report must not read it as consistency.
            "weight": 1.0, "chosen_logp": -1.0, "rejected_logp": -2.0, "chosen_n_tokens": 3,
            "rejected_n_tokens": 3, "model": f"M{t}", "ref_model": f"M{t - 1}",
            "prev_model": f"M{t - 1}" if prev else None, "prev_ref_model": None, "template_hash": "th",
        })
    return pa.Table.from_pylist(rows, schema=schemas.get("preferences").arrow)


def write_eval(run, label, flags):
    # Every third item has no extracted answer (prediction null), as when a model never writes "Answer:".
    rows = [{"model": f"/models/{label}", "task": task, "example_id": f"{task}-{i}", "response": "…",
             "prediction": None if i % 3 == 2 else ("A" if ok else "C"), "answer": "A", "correct": bool(ok)}
            for task, fl in flags.items() for i, ok in enumerate(fl)]
    io.write_table(pa.Table.from_pylist(rows, schema=schemas.get("eval").arrow), run / "eval" / label, "eval",
                   manifest_extra={"label": label, "summary": {"model": f"hub/{label}"}})


def write_prefs(run, t, n_prompts, seed, with_prev=True):
    prefs = make_prefs(t, n_prompts, seed, with_prev)
    skipped = SKIPPED.get(t, {})
    summary = {"pairs": prefs.num_rows, "prompts": prefs.num_rows + sum(skipped.values()), "skipped": skipped}
    io.write_table(prefs, run / f"iter-{t}" / "preferences", "preferences", manifest_extra={"summary": summary})
    return prefs


def make_run(tmp_path, evals=True, prefs=True, name="run"):
    run = tmp_path / name
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"method": "srlm", "T": 2, "stages": {}}))
    (run / "config.yaml").write_text("method: srlm\nT: 2\n")
    if evals:
        for label, flags in EVAL.items():
            write_eval(run, label, flags)
    tables = {}
    if prefs:
        tables[1] = write_prefs(run, 1, 40, seed=1)
        tables[2] = write_prefs(run, 2, 31, seed=2)
    return run, tables
