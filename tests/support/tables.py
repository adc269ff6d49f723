"""Small tables of the stages' kinds, built in memory: responses to label, prompts to sample, a preferences table, and
a labeled folder (preferences and scores) whose summary is known. The values are chosen so that the code under test
has work to do (ties, identical responses, prompts of several lengths, rows without previous rewards)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import stats

import schemas
from cream_data.tables import io

WORDS = "the a cat dog sun runs blue seven answer because therefore number green quickly".split()


def responses_table(n_prompts=6, n=4, seed=0, vary_n=False) -> pa.Table:
    """A responses table of random words: ``n`` responses to each of ``n_prompts`` prompts (``vary_n``: one fewer for
    every other prompt), some with a system turn, one response repeated word for word."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        prompt = [{"role": "user", "content": f"Question {p}: " + " ".join(rng.choice(WORDS, 5))}]
        if p % 3 == 0:
            prompt = [{"role": "system", "content": "Be brief."}] + prompt
        k = n - (p % 2) if vary_n else n
        for i in range(k):
            text = " ".join(rng.choice(WORDS, int(rng.integers(1, 12))))
            if i == 2 and p == 1:
                text = rows[-1]["response"]  # an identical response: scored once
            rows.append(dict(prompt_id=f"p{p:03d}", prompt=prompt, response_idx=i, response=text, model="m",
                             iteration=1, seed=0, temperature=0.8, top_p=0.95, max_new_tokens=32,
                             finish_reason="stop", n_tokens=5))
    return pa.Table.from_pylist(rows)


TOPICS = ["cats", "the moon", "bread", "rivers", "chess", "tea", "glass"]


def prompts_table(k: int = len(TOPICS)) -> pa.Table:
    """A prompts table of the first ``k`` topics. Lengths differ (1-3 repeats) so the plan reorders them and batches
    need left padding."""
    convs = [[{"role": "user", "content": "Tell me about " + " and ".join([t] * (i % 3 + 1))}]
             for i, t in enumerate(TOPICS[:k])]
    return pa.table({"prompt_id": [f"p{i}" for i in range(k)], "prompt": convs, "source": ["test"] * k,
                     "reference_answer": pa.array([None] * k, pa.string())})


def by_key(table: pa.Table) -> pa.Table:
    """A responses table in key order (prompt, then response index)."""
    return table.sort_by([("prompt_id", "ascending"), ("response_idx", "ascending")])


def prefs_table(n=6) -> pa.Table:
    """A valid preferences table of ``n`` identical-looking pairs with stored log-probs."""
    rows = [dict(prompt_id=f"p{i}", prompt=[{"role": "user", "content": f"q{i}"}],
                 chosen=[{"role": "assistant", "content": "yes"}], rejected=[{"role": "assistant", "content": "no"}],
                 chosen_idx=0, rejected_idx=1, iteration=1, n_responses=2, rewards=[1.0, -1.0],
                 prev_rewards=[0.5, -0.5], ranks=[1, 2], prev_ranks=[1, 2], kendall_tau=1.0, consistency=1.0,
                 consistency_method="kendall", weight=1.0, chosen_logp=-10.0, rejected_logp=-12.0,
                 chosen_n_tokens=3, rejected_n_tokens=3, model="m", ref_model=None, prev_model="m0",
                 prev_ref_model=None, template_hash="th")
            for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schemas.get("preferences").arrow)


def conv(role, text):
    return [{"role": role, "content": text}]


def ordinal_ranks_best_first(r):
    """1 = best; ties as the CREAM reference breaks them (scipy's ascending ordinal rank, flipped)."""
    return [len(r) + 1 - int(x) for x in stats.rankdata(r, method="ordinal")]


def make_labeled(seed=0, n_prompts=60, iteration=1, model="m1", prev_model="m0"):
    """Consistent preferences + scores tables: N in {3, 4, 5}, some ties, some rows without previous rewards."""
    rng = np.random.default_rng(seed)
    pref_rows, score_rows = [], []
    for i in range(n_prompts):
        n = int(rng.integers(3, 6))
        cur = np.round(rng.normal(size=n), 1).tolist()          # rounding makes ties
        if i % 7 == 0:
            cur[1] = cur[0]                                       # a guaranteed tie
        if len(set(cur)) == 1:
            cur[0] += 1.0
        prev = None if i % 5 == 0 else np.round(rng.normal(size=n), 1).tolist()
        chosen = max(range(n), key=lambda j: (cur[j], -j))       # first maximum
        rejected = min(range(n), key=lambda j: (cur[j], j))      # first minimum
        ranks = ordinal_ranks_best_first(cur)
        prev_ranks = ordinal_ranks_best_first(prev) if prev else None
        tau = float(stats.kendalltau(ranks, prev_ranks).statistic) if prev else None
        c = (tau + 1) / 2 if prev else 1.0
        pid = f"p{iteration}-{i:03d}"
        pref_rows.append({
            "prompt_id": pid, "prompt": conv("user", f"question {i}"),
            "chosen": conv("assistant", f"answer {chosen}"), "rejected": conv("assistant", f"answer {rejected}"),
            "chosen_idx": chosen, "rejected_idx": rejected, "iteration": iteration, "n_responses": n,
            "rewards": cur, "prev_rewards": prev, "ranks": ranks, "prev_ranks": prev_ranks,
            "kendall_tau": tau, "consistency": c, "consistency_method": "kendall", "weight": c,
            "chosen_logp": -float(10 + chosen), "rejected_logp": -float(10 + rejected),
            "chosen_n_tokens": 5, "rejected_n_tokens": 6, "model": model, "ref_model": prev_model,
            "prev_model": prev_model if prev else None, "prev_ref_model": None, "template_hash": "th",
        })
        for j in range(n):
            score_rows.append({"prompt_id": pid, "response_idx": j, "scorer": "current", "model": model,
                               "ref_model": prev_model, "logp": -1.0, "ref_logp": -1.0 - cur[j], "n_tokens": 4,
                               "reward": cur[j], "reward_kind": "dpo", "judge_text": None})
            if prev:
                score_rows.append({"prompt_id": pid, "response_idx": j, "scorer": "previous", "model": prev_model,
                                   "ref_model": None, "logp": prev[j] * 4, "ref_logp": None, "n_tokens": 4,
                                   "reward": prev[j], "reward_kind": "likelihood_norm", "judge_text": None})
    prefs = pa.Table.from_pylist(pref_rows, schema=_schema("preferences"))
    scores = pa.Table.from_pylist(score_rows, schema=_schema("scores"))
    return prefs, scores


def _schema(kind):
    return schemas.get(kind).arrow


SKIPPED = {"all_equal": 3, "nonfinite": 1, "too_few": 2}  # the skips write_labeled's summary counts


def write_labeled(folder, seed=0, **kw):
    """:func:`make_labeled`'s tables written as `cream label` writes them (FOLDER/preferences with a summary that
    counts :data:`SKIPPED`, FOLDER/scores)."""
    prefs, scores = make_labeled(seed, **kw)
    io.write_table(prefs, folder / "preferences", "preferences",
                   manifest_extra={"summary": {"pairs": prefs.num_rows, "skipped": SKIPPED}})
    io.write_table(scores, folder / "scores", "scores")
    return prefs, scores
