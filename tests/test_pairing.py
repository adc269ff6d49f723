"""Pairing stored scores into the preferences table: rebuilt independently with scipy, skip reasons, invariants."""

from __future__ import annotations

import doctest

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import schemas
from cream_data.rewards import pairing
from cream_data.errors import CreamError
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.ranking import select_pairs
from cream_data.rewards.spec import PairingSpec
from cream_data.tables.validate import check
from tests.support.pairing import make_tables


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
    # the default scope (dataset, the paper's one C): every pair weighs the mean C of the two, (2/3 + 1/6) / 2
    assert rows[0]["weight"] == rows[1]["weight"] == pytest.approx((2 / 3 + 1 / 6) / 2)
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
    assert summary.pairs == 2 and summary.ties == 2
    assert summary.skipped == dict.fromkeys(PairingSpec().skip_reasons, 0)
    assert summary.c_mean == pytest.approx((2 / 3 + 1 / 6) / 2) and summary.margin_min == pytest.approx(0.8)
    assert summary.margin_mean == pytest.approx((0.8 + 3.0) / 2)
    assert summary.top_agreement == 0.0  # prev best is 2 and 1; chosen 1 and 0


@pytest.mark.parametrize("method", ["kendall", "spearman", "toporder"])
@pytest.mark.parametrize("scope", ["prompt", "dataset"])
def test_rebuilt_independently_with_scipy(method, scope):
    rng = np.random.default_rng(7)
    cur, prev = [], []
    for _ in range(300):
        n = int(rng.choice([2, 3, 5, 8]))  # N differs across prompts
        tied = rng.random() < 0.4
        cur.append((rng.integers(0, 3, n) * 1.0 if tied else rng.normal(size=n)).tolist())
        prev.append((rng.integers(0, 3, n) * 1.0 if rng.random() < 0.4 else rng.normal(size=n)).tolist())
    responses, scores = make_tables(cur, prev, seed=3)
    table, summary = build_preferences(responses, scores, PairingSpec(consistency=method, scope=scope))
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
    np.testing.assert_allclose(w, c if scope == "prompt" else np.full(len(c), c.mean()), atol=1e-15)
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
    for scope in ("prompt", "dataset"):
        table, summary = build_preferences(responses, scores, PairingSpec(partner=None, scope=scope))
        assert table.num_rows == 50
        assert set(table["consistency"].to_pylist()) == {1.0} and set(table["weight"].to_pylist()) == {1.0}
        assert set(table["consistency_method"].to_pylist()) == {"none"}
        for col in ("prev_rewards", "prev_ranks", "kendall_tau", "prev_model", "prev_ref_model"):
            assert table[col].null_count == 50, col
        assert summary.consistency_method == "none" and summary.c_mean == 1.0 and summary.top_agreement is None


def test_every_skip_reason_in_precedence_order():
    """Non-finite rewards drop responses, not prompts, while 2 usable responses remain (before: any non-finite
    current or previous reward skipped the whole prompt; p0002 and p0009 were skipped then and pair now)."""
    nan, inf = float("nan"), float("inf")
    cur = [
        [1.0],               # n_lt_2
        [None],              # n_lt_2 beats a null reward
        [1.0, nan, 2.0],     # pair over responses 0 and 2 (response 1 dropped: nonfinite_reward)
        [1.0, None],         # nonfinite_reward (null: e.g. an unparseable judge output): 1 finite left
        [inf, 1.0],          # nonfinite_reward
        [nan, nan],          # nonfinite_reward beats all_equal
        [3.0, 3.0, 3.0],     # all_equal
        [0.5, 0.5],          # all_equal beats missing_prev (prev has NaN below)
        [1.0, 2.0],          # missing_prev (prev NaN): 1 usable response left
        [1.0, 2.0, 3.0],     # pair over responses 0 and 1 (prev row absent for response 2: missing_prev)
        [1.0, 2.0],          # pair
        [2.0, 2.0, 5.0],     # all_equal among the usable responses 0 and 1 (prev NaN for response 2)
    ]
    prev = [[1.0], [1.0], [1.0, 1, 1], [1.0, 1], [1.0, 1], [1.0, 1], [1.0, 1, 1], [nan, 1], [nan, 1.0],
            [1.0, 2.0], [2.0, 1.0], [1.0, 2.0, nan]]
    responses, scores = make_tables(cur, prev)
    table, summary = build_preferences(responses, scores)
    check(table, "preferences", "test")
    assert summary.skipped == {"n_lt_2": 2, "nonfinite_reward": 3, "all_equal": 3, "missing_prev": 1, "disagree": 0, "no_margin": 0}
    assert summary.responses_dropped == {"nonfinite_reward": 1, "missing_prev": 1}
    assert summary.prompts == 12 and summary.pairs == 3
    rows = {r["prompt_id"]: r for r in table.to_pylist()}
    assert list(rows) == ["p0002", "p0009", "p0010"]
    # p0002: usable 0 (1.0) and 2 (2.0) rank 2, 1; the dropped response 1 follows (rank 3). prev [1, 1] over the
    # usable: the tie ranks response 0 below response 2, so the rankings agree: tau 1 over the 2 usable.
    r = rows["p0002"]
    assert r["rewards"] == [1.0, None, 2.0] and r["ranks"] == [2, 3, 1] and r["prev_ranks"] == [2, 3, 1]
    assert (r["chosen_idx"], r["rejected_idx"], r["kendall_tau"], r["n_responses"]) == (2, 0, 1.0, 3)
    # p0009: response 2 (the best current reward, 3.0) has no previous score: dropped, ranked last.
    r = rows["p0009"]
    assert r["prev_rewards"] == [1.0, 2.0, None] and r["ranks"] == [2, 1, 3] and r["prev_ranks"] == [2, 1, 3]
    assert (r["chosen_idx"], r["rejected_idx"], r["kendall_tau"]) == (1, 0, 1.0)
    assert rows["p0010"]["kendall_tau"] == -1.0 and rows["p0010"]["consistency"] == 0.0
    assert rows["p0010"]["weight"] == pytest.approx(2 / 3)  # the default scope: the mean of C = 1, 1, 0
    # A missing current score row counts as a non-finite reward.
    pc = pa.compute
    drop = pc.and_(pc.equal(scores["prompt_id"], "p0010"),
                   pc.and_(pc.equal(scores["scorer"], "current"), pc.equal(scores["response_idx"], 1)))
    _, s2 = build_preferences(responses, scores.filter(pc.invert(drop)))
    assert s2.skipped["nonfinite_reward"] == 4 and s2.pairs == 2
    assert s2.c_mean == 1.0 and s2.margin_mean == 1.0
    only_skipped = make_tables([[1.0, nan], [nan, nan, 2.0]])
    _, s3 = build_preferences(*only_skipped, PairingSpec(partner=None))
    assert s3.pairs == 0 and s3.c_mean is None and s3.margin_mean is None
    assert s3.responses_dropped == {"nonfinite_reward": 0, "missing_prev": 0}  # counted over paired prompts only


def test_partial_prompts_pair_over_their_finite_rewards():
    """Hand-worked (a judge without a previous scorer): [2, NaN, 0, 1] pairs over responses 0, 2, 3 — ranks 1, 3,
    2 among them, the dropped response 1 last (4) — chosen 0 (2.0), rejected 2 (0.0); [NaN, NaN, 1] has one finite
    reward left: skipped as nonfinite_reward; [NaN, 1, 1, 3] pairs 3 over 1; [4, 4, NaN] ties: all_equal."""
    nan = float("nan")
    responses, scores = make_tables([[2.0, nan, 0.0, 1.0], [nan, nan, 1.0], [nan, 1.0, 1.0, 3.0], [4.0, 4.0, nan]])
    table, summary = build_preferences(responses, scores, PairingSpec(partner=None))
    check(table, "preferences", "test")
    rows = table.to_pylist()
    assert [r["prompt_id"] for r in rows] == ["p0000", "p0002"]
    assert rows[0]["rewards"] == [2.0, None, 0.0, 1.0] and rows[0]["ranks"] == [1, 4, 3, 2]
    assert (rows[0]["chosen_idx"], rows[0]["rejected_idx"], rows[0]["n_responses"]) == (0, 2, 4)
    assert rows[0]["chosen"][0]["content"] == "p0000 answer 0" and rows[0]["rejected"][0]["content"] == "p0000 answer 2"
    # p0002: usable 1, 2, 3 with rewards 1, 1, 3: ranks 3, 2, 1 (the tie: response 1 below response 2); the
    # dropped response 0 is ranked 4. Rejected = the first of the tied minima (response 1).
    assert rows[1]["ranks"] == [4, 3, 2, 1] and (rows[1]["chosen_idx"], rows[1]["rejected_idx"]) == (3, 1)
    assert summary.skipped == {"n_lt_2": 0, "nonfinite_reward": 1, "all_equal": 1, "missing_prev": 0, "disagree": 0, "no_margin": 0}
    assert summary.responses_dropped == {"nonfinite_reward": 2, "missing_prev": 0}
    assert summary.ties == 2  # p0002 (1, 1) and p0003 (4, 4): ties among the finite rewards
    assert summary.margin_mean == pytest.approx((2.0 + 2.0) / 2) and summary.margin_min == 2.0
    assert set(table["consistency"].to_pylist()) == {1.0}


@pytest.mark.parametrize("with_prev", [False, True])
def test_partial_prompts_match_pairing_the_finite_responses_alone(with_prev):
    """Random prompts with holes: each pair equals the pair built from that prompt's usable responses alone
    (a table without the dropped rows), the dropped responses ranked last in response order."""
    rng = np.random.default_rng(5)
    cur, prev = [], []
    for _ in range(200):
        n = int(rng.choice([3, 4, 6]))
        r = rng.integers(0, 4, n).astype(float) if rng.random() < 0.5 else rng.normal(size=n)
        r[rng.random(n) < 0.3] = np.nan
        q = rng.normal(size=n)
        q[rng.random(n) < 0.15] = np.nan
        cur.append(r.tolist())
        prev.append(q.tolist())
    table, summary = build_preferences(*make_tables(cur, prev if with_prev else None),
                                       PairingSpec(partner="previous" if with_prev else None))
    check(table, "preferences", "test")
    rows = {r["prompt_id"]: r for r in table.to_pylist()}
    dropped = {"nonfinite_reward": 0, "missing_prev": 0}
    for p, (r, q) in enumerate(zip(cur, prev)):
        r, q = np.array(r), np.array(q)
        use = np.isfinite(r) & (np.isfinite(q) if with_prev else True)
        row = rows.get(f"p{p:04d}")
        if use.sum() < 2 or len(set(r[use])) == 1:
            assert row is None
            continue
        dropped["nonfinite_reward"] += int((~np.isfinite(r)).sum())
        dropped["missing_prev"] += int((np.isfinite(r) & ~use).sum())
        keep = np.flatnonzero(use)
        exp = expected_row(r[use].tolist(), q[use].tolist() if with_prev else None, "kendall")
        k, n = len(keep), len(r)
        ranks = np.empty(n, int)
        ranks[keep] = exp["ranks"]
        ranks[np.flatnonzero(~use)] = np.arange(k + 1, n + 1)
        assert row["ranks"] == ranks.tolist()
        assert (row["chosen_idx"], row["rejected_idx"]) == (keep[exp["chosen_idx"]], keep[exp["rejected_idx"]])
        assert row["rewards"] == [x if np.isfinite(x) else None for x in r]
        if with_prev:
            assert row["kendall_tau"] == pytest.approx(exp["kendall_tau"], abs=1e-12)
            assert row["consistency"] == pytest.approx(exp["consistency"], abs=1e-12)
    assert summary.pairs == len(rows) > 50 and summary.responses_dropped == dropped


def test_dataset_scope_averages_over_pairs_only():
    cur = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]]
    prev = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]  # C = 1, 0; the third prompt is skipped
    table, summary = build_preferences(*make_tables(cur, prev), PairingSpec(scope="dataset"))
    assert table["weight"].to_pylist() == [0.5, 0.5] and table["consistency"].to_pylist() == [1.0, 0.0]
    assert summary.c_mean == 0.5 and summary.skipped["all_equal"] == 1


def test_logp_columns_follow_the_logp_scorer():
    responses, scores = make_tables([[0.0, 1.0]], logp=False)
    table, _ = build_preferences(responses, scores, PairingSpec(partner=None))
    assert table["chosen_logp"].to_pylist() == [None] and table["chosen_n_tokens"].to_pylist() == [11]
    table, _ = build_preferences(responses, scores, PairingSpec(partner=None), logp_scorer=None, iteration=7)
    assert table["chosen_n_tokens"].to_pylist() == [None] and table["iteration"].to_pylist() == [7]
    table, _ = build_preferences(responses, scores, PairingSpec(partner=None), logp_scorer="absent-scorer")
    assert table["rejected_logp"].to_pylist() == [None]


def test_empty_and_all_skipped_inputs_give_a_valid_empty_table():
    table, summary = build_preferences(*make_tables([[1.0, 1.0]]), PairingSpec(partner=None))
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
        build_preferences(responses, scores, PairingSpec(consistency="pearson"))
    with pytest.raises(CreamError, match="--scope"):
        build_preferences(responses, scores, PairingSpec(scope="avg"))


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
