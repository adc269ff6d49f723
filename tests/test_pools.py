"""Response pools (`cream label --chosen-from/--rejected-from`, cream_data/stages/label_pools.py): the pooled table
and the pairs picked from it, on a hand-worked example."""

from __future__ import annotations

import pyarrow as pa

import schemas
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.spec import PairingSpec
from cream_data.stages.label_pools import pooled
from cream_data.tables import io
from cream_data.tables.validate import check


def responses(rows: dict[str, list[str]], model: str, iteration: int) -> pa.Table:
    out = []
    for pid, texts in rows.items():
        for i, text in enumerate(texts):
            out.append({"prompt_id": pid, "prompt": [{"role": "user", "content": f"question {pid}"}],
                        "response_idx": i, "response": text, "model": model, "iteration": iteration, "seed": 1,
                        "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8, "finish_reason": "stop",
                        "n_tokens": 3})
    return pa.Table.from_pylist(out, schema=schemas.get("responses").arrow)


# per prompt: the current model's samples, the future model's (may only be chosen), the anchor's (only rejected),
# and the reward of each, in that order
CURRENT = {"p0": ["c0", "c1", "c2"], "p1": ["c0", "c1"], "p2": ["c0", "c1"]}
FUTURE = {"p0": ["f0", "f1"], "p1": ["f0"], "p2": ["f0"], "p9": ["not a prompt of the input"]}
ANCHOR = {"p0": ["a0", "a1"], "p1": ["a0"], "p2": ["a0"]}
REWARD = {("p0", "c0"): 2, ("p0", "c1"): 5, ("p0", "c2"): 3, ("p0", "f0"): 6, ("p0", "f1"): 1, ("p0", "a0"): 1.5,
          ("p0", "a1"): 4,
          ("p1", "c0"): 3, ("p1", "c1"): 3, ("p1", "f0"): 3, ("p1", "a0"): 3.5,
          ("p2", "c0"): 1, ("p2", "c1"): 2, ("p2", "f0"): 2, ("p2", "a0"): 0}


def test_pools_pick_chosen_and_rejected_from_their_own_rows(tmp_path):
    io.write_table(responses(FUTURE, "F2", 2), tmp_path / "future", "responses")
    io.write_table(responses(ANCHOR, "M1", 1), tmp_path / "anchor", "responses")
    table, (may_choose, may_reject) = pooled(responses(CURRENT, "M2", 2), [tmp_path / "future"], [tmp_path / "anchor"])
    got = [(r["prompt_id"], r["response_idx"], r["response"], r["model"]) for r in table.to_pylist()]
    # the input's rows first, then the chosen pool's, then the rejected pool's; p9 (not an input prompt) left out
    assert got[:7] == [("p0", 0, "c0", "M2"), ("p0", 1, "c1", "M2"), ("p0", 2, "c2", "M2"), ("p0", 3, "f0", "F2"),
                       ("p0", 4, "f1", "F2"), ("p0", 5, "a0", "M1"), ("p0", 6, "a1", "M1")]
    assert len(got) == 7 + 4 + 4 and not any(p == "p9" for p, *_ in got)
    assert may_choose[:7].tolist() == [True] * 5 + [False] * 2 and may_reject[:7].tolist() == [True] * 3 + [False, False, True, True]

    scores = pa.Table.from_pylist([
        {"prompt_id": r["prompt_id"], "response_idx": r["response_idx"], "scorer": "judge", "model": "M2",
         "ref_model": None, "logp": None, "ref_logp": None, "n_tokens": 3,
         "reward": float(REWARD[(r["prompt_id"], r["response"])]), "reward_kind": "judge", "judge_text": None}
        for r in table.to_pylist()], schema=schemas.get("scores").arrow)
    prefs, summary = build_preferences(table, scores, PairingSpec(reward_scorer="judge", partner=None),
                                       logp_scorer=None, eligible=(may_choose, may_reject))
    check(prefs, "preferences", "pooled")
    rows = {r["prompt_id"]: r for r in prefs.to_pylist()}
    # p0: the future model's 6 beats every current sample (chosen); the anchor's 1.5 is the lowest rejectable reward
    # (the future model's 1 may not be rejected)
    assert (rows["p0"]["chosen_idx"], rows["p0"]["rejected_idx"]) == (3, 5)
    assert rows["p0"]["chosen"][0]["content"] == "f0" and rows["p0"]["rejected"][0]["content"] == "a0"
    assert (rows["p0"]["chosen_model"], rows["p0"]["chosen_iteration"]) == ("F2", 2)
    assert (rows["p0"]["rejected_model"], rows["p0"]["rejected_iteration"]) == ("M1", 1)
    assert rows["p0"]["n_responses"] == 7 and rows["p0"]["rewards"] == [2, 5, 3, 6, 1, 1.5, 4]
    # p2: the future sample only ties the best current one, so the current one stays chosen (the first best)
    assert (rows["p2"]["chosen_idx"], rows["p2"]["rejected_idx"]) == (1, 3)
    assert rows["p2"]["chosen_model"] == "M2" and rows["p2"]["rejected_model"] == "M1"
    # p1: the best choosable (3) does not beat the worst rejectable (3): no pair
    assert "p1" not in rows and summary.skipped["no_margin"] == 1 and summary.pairs == 2
    assert summary.margin_mean == ((6 - 1.5) + (2 - 0)) / 2


def test_without_pools_the_table_is_the_input_and_every_row_may_be_either():
    table = responses(CURRENT, "M2", 2)
    same, eligible = pooled(table)
    assert same is table and eligible is None
