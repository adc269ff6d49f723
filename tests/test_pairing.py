"""Pairing stored scores into the preferences table: rebuilt independently with scipy, skip reasons, invariants."""

from __future__ import annotations

import doctest

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import schemas
from cream_data import pairing
from cream_data.errors import CreamError
from cream_data.pairing import SKIP_REASONS, build_preferences, select_pairs
from cream_data.validate import check


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


def expected_row(rewards, prev, method):
    """One prompt's pair, computed independently the way the CREAM reference does: scipy ordinal ranks (ascending,
    ties by appearance) flipped to 1 = best; chosen/rejected = np.argmax/np.argmin of the rewards."""
    n = len(rewards)
    ranks = n + 1 - stats.rankdata(np.asarray(rewards), method="ordinal")
    out = {"ranks": ranks.tolist(), "chosen_idx": int(np.argmax(rewards)), "rejected_idx": int(np.argmin(rewards))}
    if prev is not None:
        pr = n + 1 - stats.rankdata(np.asarray(prev), method="ordinal")
        tau = stats.kendalltau(ranks, pr).statistic
        rho = stats.spearmanr(ranks, pr).statistic
        top = float(np.argmin(ranks) == np.argmin(pr) and np.argmax(ranks) == np.argmax(pr))
        out.update(prev_ranks=pr.tolist(), kendall_tau=tau,
                   consistency={"kendall": (tau + 1) / 2, "spearman": (rho + 1) / 2, "toporder": top}[method])
    return out


def test_docstring_examples():
    assert doctest.testmod(pairing).failed == 0


def test_hand_worked_table():
    cur = [[0.1, 0.9, 0.1], [2.0, -1.0, 0.5, 0.5]]
    prev = [[0.0, 1.0, 2.0], [1.0, 3.0, 2.0, 0.0]]
    responses, scores = make_tables(cur, prev)
    table, summary = build_preferences(responses, scores, template_hash="abc")
    rows = table.to_pylist()
    # Prompt 0: scipy ranks the tie 0.1 by appearance (response 0 below response 2), so ranks are [3,1,2];
    # prev ranks [3,2,1]. Response pairs: (0,1) and (0,2) ordered alike, (1,2) not: tau = (2 - 1)/3 = 1/3, C = 2/3.
    # Chosen 1 (0.9), rejected 0 (np.argmin: the first of the tied minima).
    assert rows[0]["ranks"] == [3, 1, 2] and rows[0]["prev_ranks"] == [3, 2, 1]
    assert (rows[0]["chosen_idx"], rows[0]["rejected_idx"]) == (1, 0)
    assert rows[0]["kendall_tau"] == pytest.approx(1 / 3) and rows[0]["consistency"] == pytest.approx(2 / 3)
    assert rows[0]["weight"] == rows[0]["consistency"]
    # Prompt 1: ranks [1,4,3,2] (the tie 0.5: response 2 below response 3); prev rewards [1,3,2,0] → prev ranks
    # [3,1,2,4]. Of the 6 pairs only (0,3) is ordered alike: tau = (1 - 5)/6 = -2/3.
    assert rows[1]["ranks"] == [1, 4, 3, 2] and rows[1]["prev_ranks"] == [3, 1, 2, 4]
    assert rows[1]["kendall_tau"] == pytest.approx(-2 / 3)
    assert (rows[1]["chosen_idx"], rows[1]["rejected_idx"]) == (0, 1)
    assert rows[1]["chosen"] == [{"role": "assistant", "content": "p0001 answer 0"}]
    assert rows[1]["rejected"] == [{"role": "assistant", "content": "p0001 answer 1"}]
    assert rows[1]["rewards"] == [2.0, -1.0, 0.5, 0.5] and rows[1]["prev_rewards"] == [1.0, 3.0, 2.0, 0.0]
    assert rows[1]["n_responses"] == 4 and rows[1]["iteration"] == 2
    assert (rows[1]["chosen_logp"], rows[1]["rejected_logp"]) == (-10.0, -11.0)
    assert (rows[1]["chosen_n_tokens"], rows[1]["rejected_n_tokens"]) == (10, 11)
    assert (rows[1]["model"], rows[1]["ref_model"], rows[1]["prev_model"], rows[1]["prev_ref_model"]) == (
        "M2", "M1", "M1", "M0")
    assert rows[1]["template_hash"] == "abc" and rows[1]["consistency_method"] == "kendall"
    assert summary.pairs == 2 and summary.ties == 2 and summary.skipped == dict.fromkeys(SKIP_REASONS, 0)
    assert summary.c_mean == pytest.approx((2 / 3 + 1 / 6) / 2) and summary.margin_min == pytest.approx(0.8)
    assert summary.margin_mean == pytest.approx((0.8 + 3.0) / 2)
    assert summary.top_agreement == 0.0  # prev best is 2 and 1; chosen 1 and 0


@pytest.mark.parametrize("method", ["kendall", "spearman", "toporder"])
@pytest.mark.parametrize("scope", ["sample", "dataset"])
def test_rebuilt_independently_with_scipy(method, scope):
    rng = np.random.default_rng(7)
    cur, prev = [], []
    for _ in range(300):
        n = int(rng.choice([2, 3, 5, 8]))  # N differs across prompts
        tied = rng.random() < 0.4
        cur.append((rng.integers(0, 3, n) * 1.0 if tied else rng.normal(size=n)).tolist())
        prev.append((rng.integers(0, 3, n) * 1.0 if rng.random() < 0.4 else rng.normal(size=n)).tolist())
    responses, scores = make_tables(cur, prev, seed=3)
    table, summary = build_preferences(responses, scores, consistency=method, scope=scope)
    check(table, "preferences", "test")
    rows = {r["prompt_id"]: r for r in table.to_pylist()}
    assert list(rows) == sorted(rows)  # sorted by prompt_id
    kept = 0
    for p, (r, pr) in enumerate(zip(cur, prev)):
        row = rows.get(f"p{p:04d}")
        if len(set(r)) == 1:
            assert row is None
            continue
        kept += 1
        exp = expected_row(r, pr, method)
        assert row["rewards"] == r and row["prev_rewards"] == pr
        for key in ("ranks", "prev_ranks", "chosen_idx", "rejected_idx"):
            assert row[key] == exp[key], (p, key)
        assert row["kendall_tau"] == pytest.approx(exp["kendall_tau"], abs=1e-12)
        assert row["consistency"] == pytest.approx(exp["consistency"], abs=1e-12)
        assert row["chosen"][0]["content"] == f"p{p:04d} answer {exp['chosen_idx']}"
        assert r[row["chosen_idx"]] == max(r) and r[row["rejected_idx"]] == min(r)
    assert summary.pairs == kept == table.num_rows
    assert summary.skipped["all_equal"] == len(cur) - kept
    c = np.array(table["consistency"].to_pylist())
    w = np.array(table["weight"].to_pylist())
    np.testing.assert_allclose(w, c if scope == "sample" else np.full(len(c), c.mean()), atol=1e-15)
    assert summary.c_mean == pytest.approx(c.mean()) and summary.c_median == pytest.approx(np.median(c))


def test_repairing_is_deterministic_and_independent_of_row_order():
    rng = np.random.default_rng(1)
    cur = [rng.integers(0, 4, 5).tolist() for _ in range(100)]
    prev = [rng.normal(size=5).tolist() for _ in range(100)]
    a = build_preferences(*make_tables(cur, prev, seed=1))
    b = build_preferences(*make_tables(cur, prev, seed=1))
    c = build_preferences(*make_tables(cur, prev, seed=99))  # rows in another order
    assert a[0].equals(b[0]) and a[0].equals(c[0]) and a[1] == c[1]


def test_no_previous_scorer_gives_c_equal_one():
    rng = np.random.default_rng(2)
    cur = [rng.normal(size=4).tolist() for _ in range(50)]
    responses, scores = make_tables(cur)  # no "previous" rows at all
    for scope in ("sample", "dataset"):
        table, summary = build_preferences(responses, scores, prev_scorer=None, scope=scope)
        assert table.num_rows == 50
        assert set(table["consistency"].to_pylist()) == {1.0} and set(table["weight"].to_pylist()) == {1.0}
        assert set(table["consistency_method"].to_pylist()) == {"none"}
        for col in ("prev_rewards", "prev_ranks", "kendall_tau", "prev_model", "prev_ref_model"):
            assert table[col].null_count == 50, col
        assert summary.consistency_method == "none" and summary.c_mean == 1.0 and summary.top_agreement is None


def test_every_skip_reason_in_precedence_order():
    nan, inf = float("nan"), float("inf")
    cur = [
        [1.0],               # n_lt_2
        [None],              # n_lt_2 beats a null reward
        [1.0, nan, 2.0],     # nonfinite_reward
        [1.0, None],         # nonfinite_reward (null: e.g. an unparseable judge output)
        [inf, 1.0],          # nonfinite_reward
        [nan, nan],          # nonfinite_reward beats all_equal
        [3.0, 3.0, 3.0],     # all_equal
        [0.5, 0.5],          # all_equal beats missing_prev (prev has NaN below)
        [1.0, 2.0],          # missing_prev (prev NaN)
        [1.0, 2.0, 3.0],     # missing_prev (prev row absent for response 2)
        [1.0, 2.0],          # pair
    ]
    prev = [[1.0], [1.0], [1.0, 1, 1], [1.0, 1], [1.0, 1], [1.0, 1], [1.0, 1, 1], [nan, 1], [nan, 1.0],
            [1.0, 2.0], [2.0, 1.0]]
    responses, scores = make_tables(cur, prev)
    table, summary = build_preferences(responses, scores)
    assert summary.skipped == {"n_lt_2": 2, "nonfinite_reward": 4, "all_equal": 2, "missing_prev": 2}
    assert summary.prompts == 11 and summary.pairs == 1 and table["prompt_id"].to_pylist() == ["p0010"]
    assert table["kendall_tau"].to_pylist() == [-1.0] and table["weight"].to_pylist() == [0.0]
    # A missing current score row counts as a non-finite reward.
    pc = pa.compute
    drop = pc.and_(pc.equal(scores["prompt_id"], "p0010"),
                   pc.and_(pc.equal(scores["scorer"], "current"), pc.equal(scores["response_idx"], 1)))
    _, s2 = build_preferences(responses, scores.filter(pc.invert(drop)))
    assert s2.skipped["nonfinite_reward"] == 5 and s2.pairs == 0
    assert s2.c_mean is None and s2.margin_mean is None


def test_dataset_scope_averages_over_pairs_only():
    cur = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]]
    prev = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]  # C = 1, 0; the third prompt is skipped
    table, summary = build_preferences(*make_tables(cur, prev), scope="dataset")
    assert table["weight"].to_pylist() == [0.5, 0.5] and table["consistency"].to_pylist() == [1.0, 0.0]
    assert summary.c_mean == 0.5 and summary.skipped["all_equal"] == 1


def test_logp_columns_follow_the_logp_scorer():
    responses, scores = make_tables([[0.0, 1.0]], logp=False)
    table, _ = build_preferences(responses, scores, prev_scorer=None)
    assert table["chosen_logp"].to_pylist() == [None] and table["chosen_n_tokens"].to_pylist() == [11]
    table, _ = build_preferences(responses, scores, prev_scorer=None, logp_scorer=None, iteration=7)
    assert table["chosen_n_tokens"].to_pylist() == [None] and table["iteration"].to_pylist() == [7]
    table, _ = build_preferences(responses, scores, prev_scorer=None, logp_scorer="absent-scorer")
    assert table["rejected_logp"].to_pylist() == [None]


def test_empty_and_all_skipped_inputs_give_a_valid_empty_table():
    table, summary = build_preferences(*make_tables([[1.0, 1.0]]), prev_scorer=None)
    assert table.num_rows == 0 and table.schema.names == schemas.get("preferences").column_names
    check(table, "preferences", "test")
    assert summary.pairs == 0 and summary.to_dict()["skipped"]["all_equal"] == 1


def test_user_mistakes_are_one_line_errors():
    responses, scores = make_tables([[0.0, 1.0, 2.0]], [[0.0, 1.0, 2.0]])
    with pytest.raises(CreamError, match="missing column.*response_idx"):
        build_preferences(responses.drop(["response_idx"]), scores)
    with pytest.raises(CreamError, match="scorer 'previous'.*scorers present: current"):
        build_preferences(*make_tables([[0.0, 1.0]]))
    with pytest.raises(CreamError, match="expected 0..N-1"):  # a gap in response_idx
        build_preferences(responses.filter(pa.compute.not_equal(responses["response_idx"], 1)), scores)
    with pytest.raises(CreamError, match="match no response"):
        build_preferences(responses.filter(pa.compute.not_equal(responses["response_idx"], 2)), scores)
    with pytest.raises(CreamError, match="several rows"):
        build_preferences(responses, pa.concat_tables([scores, scores.slice(0, 1)]))
    with pytest.raises(CreamError, match="--consistency"):
        build_preferences(responses, scores, consistency="pearson")
    with pytest.raises(CreamError, match="--scope"):
        build_preferences(responses, scores, scope="avg")


def test_select_pairs_picks_the_first_of_tied_extremes():
    """Chosen/rejected as the reference picks them (np.argmax/np.argmin: the first index among ties); without a
    tie at an extreme they are the responses ranked 1 and N."""
    rng = np.random.default_rng(3)
    r = rng.integers(0, 3, size=(500, 6)).astype(float)
    rows = np.arange(500)
    out = select_pairs(r, rng.normal(size=r.shape), "toporder")
    np.testing.assert_array_equal(r[rows, out.chosen], r.max(1))
    np.testing.assert_array_equal(r[rows, out.rejected], r.min(1))
    for p in range(500):  # the first index among the tied maxima / minima
        assert out.chosen[p] == min(np.flatnonzero(r[p] == r[p].max()))
        assert out.rejected[p] == min(np.flatnonzero(r[p] == r[p].min()))
    untied = np.array([np.sum(x == x.max()) == 1 and np.sum(x == x.min()) == 1 for x in r])
    assert untied.sum() > 10
    np.testing.assert_array_equal(out.ranks[rows[untied], out.chosen[untied]], 1)
    np.testing.assert_array_equal(out.ranks[rows[untied], out.rejected[untied]], 6)


def test_loads_as_a_trl_conversational_preference_dataset(tiny_model):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    table, _ = build_preferences(*make_tables([[0.0, 1.0, 0.5]], [[1.0, 0.0, 0.5]]))
    ds = Dataset(table)
    example = ds[0]
    assert is_conversational(example)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = apply_chat_template({k: example[k] for k in ("prompt", "chosen", "rejected")}, tok)
    assert "question 0" in text["prompt"]
    assert "p0000 answer 1" in text["chosen"] and "p0000 answer 0" in text["rejected"]
