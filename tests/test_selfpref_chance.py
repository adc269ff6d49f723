"""The self-preference table's chance rates, its exact below-all test and its per-token rows
(cream_data.rewards.selfpref): hand-worked examples, brute-force enumeration, scipy, and simulated exchangeable
draws; and the table as the run report and `cream inspect` render it."""

from __future__ import annotations

import doctest
import itertools
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import schemas
from cream_data.reports import agreement_report
from cream_data.rewards import selfpref
from cream_data.tables import io

OLD_KEYS = {"scorer", "n", "k_min", "k_max", "mean_rank", "mean_normalised_rank", "below_all", "below_all_share"}
NEW_KEYS = {"chance_mean_rank", "chance_mean_normalised_rank", "chance_below_all_share", "below_all_p_value",
            "per_token"}


def test_doctests():
    assert doctest.testmod(selfpref).failed == 0


def scores_table(rows, with_lengths=False):
    """A scores table from (prompt_id, response_idx, scorer, reward[, n_tokens, reward_kind]) tuples."""
    cols = {"prompt_id": [r[0] for r in rows], "response_idx": pa.array([r[1] for r in rows], pa.int16()),
            "scorer": [r[2] for r in rows], "reward": pa.array([r[3] for r in rows], pa.float64())}
    if with_lengths:
        cols |= {"n_tokens": pa.array([r[4] for r in rows], pa.int32()), "reward_kind": [r[5] for r in rows]}
    return pa.table(cols)


def human_table(rows, with_lengths=False):
    """A human_scores table from (prompt_id, scorer, reward[, n_tokens, reward_kind]) tuples."""
    cols = {"prompt_id": [r[0] for r in rows], "scorer": [r[1] for r in rows],
            "reward": pa.array([r[2] for r in rows], pa.float64())}
    if with_lengths:
        cols |= {"n_tokens": pa.array([r[3] for r in rows], pa.int32()), "reward_kind": [r[4] for r in rows]}
    return pa.table(cols)


# ---------------------------------------------------------------------------- chance rates
def test_chance_rates_hand_worked_with_k_varying_per_prompt():
    """judge: a k = 1 (samples [3], human 1: below all), b k = 2 (one null of 3; [1, 2], human 5: rank 1),
    c k = 4 ([2, 2, 2, 2], human 2: all tied, rank 1 + 4/2 = 3 of 5, not below all), d human null: not counted.
    Chance: rank ((1 + 2) + (2 + 2) + (4 + 2)) / 2 / 3 = 13/6; below all (1/2 + 1/3 + 1/5) / 3 = 31/90;
    p = P(≥ 1 below all) = 1 − (1/2)(2/3)(4/5) = 11/15."""
    rows = [("a", 0, "judge", 3.0), ("b", 0, "judge", 1.0), ("b", 1, "judge", None), ("b", 2, "judge", 2.0),
            *[("c", i, "judge", 2.0) for i in range(4)], ("d", 0, "judge", 1.0)]
    human = human_table([("a", "judge", 1.0), ("b", "judge", 5.0), ("c", "judge", 2.0), ("d", "judge", None)])
    (r,) = selfpref.human_ranks(scores_table(rows), human)
    assert set(r) == OLD_KEYS | NEW_KEYS
    assert (r["n"], r["k_min"], r["k_max"], r["below_all"]) == (3, 1, 4, 1)
    assert r["mean_rank"] == pytest.approx((2 + 1 + 3) / 3)
    assert r["mean_normalised_rank"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert r["chance_mean_rank"] == pytest.approx(13 / 6)
    assert r["chance_mean_normalised_rank"] == 0.5
    assert r["chance_below_all_share"] == pytest.approx(31 / 90)
    assert r["below_all_p_value"] == pytest.approx(11 / 15)


def test_the_docs_hand_worked_example():
    """docs/REWARDS.md: samples [4, 2, 3] human 3 → rank 2.5 of 4; [5, null, 4] human 1 → rank 3 of 3, below all.
    Chance rank (5/2 + 4/2) / 2 = 2.25, below all (1/4 + 1/3) / 2 = 7/24, p = 1 − (3/4)(2/3) = 0.5."""
    rows = [("a", i, "judge", v) for i, v in enumerate([4.0, 2.0, 3.0])] + \
        [("b", i, "judge", v) for i, v in enumerate([5.0, None, 4.0])]
    (r,) = selfpref.human_ranks(scores_table(rows), human_table([("a", "judge", 3.0), ("b", "judge", 1.0)]))
    assert (r["mean_rank"], r["mean_normalised_rank"], r["below_all"]) == (2.75, 0.75, 1)
    assert (r["chance_mean_rank"], r["chance_below_all_share"]) == (2.25, pytest.approx(7 / 24))
    assert r["below_all_p_value"] == pytest.approx(0.5)


def test_no_counted_prompt_has_no_chance_values():
    scores = scores_table([("a", 0, "judge", None)])
    (r,) = selfpref.human_ranks(scores, human_table([("a", "judge", 1.0)]))
    assert r["n"] == 0 and r["below_all"] == 0
    assert [r[k] for k in sorted(NEW_KEYS)] == [None] * len(NEW_KEYS)


# ---------------------------------------------------------------------------- the exact below-all test
def brute_force_tail(observed, k):
    """P(Σ Bernoulli(1/(k_p+1)) ≥ observed) by enumerating every outcome of the prompts."""
    total = 0.0
    for outcome in itertools.product((0, 1), repeat=len(k)):
        if sum(outcome) >= observed:
            total += np.prod([1 / (kp + 1) if o else kp / (kp + 1) for o, kp in zip(outcome, k)])
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_p_value_matches_enumeration(seed):
    k = np.random.default_rng(seed).integers(1, 7, size=10)
    for observed in range(len(k) + 1):
        assert selfpref.below_all_p_value(observed, k) == pytest.approx(brute_force_tail(observed, k), rel=1e-12)


def test_p_value_matches_scipy_binomial_and_poisson_binomial():
    k = np.full(300, 4)  # every prompt k = 4: a binomial(300, 1/5)
    for observed in (0, 40, 60, 75, 100, 140):
        assert selfpref.below_all_p_value(observed, k) == pytest.approx(stats.binom.sf(observed - 1, 300, 0.2),
                                                                        rel=1e-9, abs=1e-300)
    k = np.random.default_rng(3).integers(1, 9, size=500)
    p = 1.0 / (k + 1)
    for observed in (0, 100, 130, 160):  # scipy's own tail is less precise far out (0 at 220)
        assert selfpref.below_all_p_value(observed, k) == pytest.approx(stats.poisson_binom.sf(observed - 1, p),
                                                                        rel=1e-6)


def test_p_value_matches_exact_rational_arithmetic_in_the_far_tail():
    k = np.random.default_rng(4).integers(1, 7, size=80)
    pmf = [Fraction(1)]
    for kp in k:  # the Poisson-binomial distribution, one Bernoulli(1/(k+1)) at a time, in exact fractions
        q = Fraction(1, int(kp) + 1)
        pmf = [(pmf[i] if i < len(pmf) else 0) * (1 - q) + (pmf[i - 1] * q if i else 0) for i in range(len(pmf) + 1)]
    for observed in (0, 20, 35, 50, 65, 80):
        assert selfpref.below_all_p_value(observed, k) == pytest.approx(float(sum(pmf[observed:])), rel=1e-12)


# ---------------------------------------------------------------------------- simulated exchangeable draws
def simulate(seed, n_prompts, tied=False, human_shift=0.0):
    """Per prompt k + 1 i.i.d. rewards (k in 1..6; integers 0..2 where ``tied``): the first is the human answer's
    (moved by ``human_shift``), the others the samples'. Returns (scores, human) tables for role current."""
    rng = np.random.default_rng(seed)
    srows, hrows = [], []
    for p in range(n_prompts):
        k = int(rng.integers(1, 7))
        draws = rng.integers(0, 3, size=k + 1).astype(float) if tied else rng.normal(size=k + 1)
        hrows.append((f"p{p}", "current", float(draws[0]) + human_shift))
        srows += [(f"p{p}", i, "current", float(v)) for i, v in enumerate(draws[1:])]
    return scores_table(srows), human_table(hrows)


def test_exchangeable_draws_fall_below_all_at_the_chance_rate():
    n = 4000
    (r,) = selfpref.human_ranks(*simulate(seed=7, n_prompts=n))
    sd = np.sqrt(r["chance_below_all_share"] * (1 - r["chance_below_all_share"]) / n)  # ≥ the Poisson-binomial sd
    assert abs(r["below_all_share"] - r["chance_below_all_share"]) < 4 * sd
    assert 0.2 < r["chance_below_all_share"] < 0.4  # k in 1..6: mean of 1/(k+1) ≈ 0.31
    assert abs(r["mean_normalised_rank"] - 0.5) < 4 * np.sqrt(1 / 12 / n)  # normalised rank: sd ≤ that of U(0, 1)
    assert abs(r["mean_rank"] - r["chance_mean_rank"]) < 4 * 2.0 / np.sqrt(n)  # rank sd ≤ (k+1)/sqrt(12) < 2.1
    assert r["below_all_p_value"] > 1e-3


def test_ties_keep_the_chance_rank_and_lower_the_below_all_rate():
    """With integer rewards the expected mid-rank is still (k + 2) / 2, and strictly-below-all happens less often
    than 1 / (k + 1): the chance rate is an upper bound (the docs' claim)."""
    n = 4000
    (r,) = selfpref.human_ranks(*simulate(seed=8, n_prompts=n, tied=True))
    assert abs(r["mean_rank"] - r["chance_mean_rank"]) < 4 * 2.0 / np.sqrt(n)
    assert r["below_all_share"] < r["chance_below_all_share"] - 0.05


def test_p_values_of_exchangeable_draws_are_calibrated_and_a_worse_human_is_detected():
    small = [selfpref.human_ranks(*simulate(seed=100 + s, n_prompts=150))[0]["below_all_p_value"] for s in range(200)]
    # a valid p-value: P(p ≤ 0.05) ≤ 0.05 under chance; 3 binomial sd of slack over 200 runs
    assert np.mean(np.array(small) <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)
    (worse,) = selfpref.human_ranks(*simulate(seed=9, n_prompts=300, human_shift=-1.5))
    assert worse["below_all_share"] > worse["chance_below_all_share"] + 0.2
    assert worse["below_all_p_value"] < 1e-10


# ---------------------------------------------------------------------------- per token
PER_TOKEN_SCORES = [
    # prompt a: current samples −6 (30 tokens), −2 (10): per token −0.2, −0.2; judge [1, 4]
    ("a", 0, "current", -6.0, 30, "dpo"), ("a", 1, "current", -2.0, 10, "dpo"),
    ("a", 0, "judge", 1.0, 30, "judge"), ("a", 1, "judge", 4.0, 10, "judge"),
    # prompt b: current 4 (40 tokens), 1 (2): per token 0.1, 0.5
    ("b", 0, "current", 4.0, 40, "dpo"), ("b", 1, "current", 1.0, 2, "dpo"),
    # previous: a likelihood reward, already per token: no per-token row
    ("a", 0, "previous", -1.0, 30, "likelihood_norm"), ("a", 1, "previous", -2.0, 10, "likelihood_norm"),
]
PER_TOKEN_HUMAN = [("a", "current", -3.0, 5, "dpo"), ("b", "current", 2.0, 4, "dpo"),
                   ("a", "judge", 2.0, 5, "judge"), ("a", "previous", -3.0, 5, "likelihood_norm")]


def test_per_token_rows_hand_worked():
    """current raw: a human −3 vs [−6, −2] → rank 2 of 3; b 2 vs [4, 1] → rank 2: mean 2, normalised 0.5, none
    below all. Per token: a −3/5 = −0.6 vs [−0.2, −0.2] → rank 3, below all; b 2/4 = 0.5 vs [0.1, 0.5] → a tie:
    rank 1.5, normalised 0.25: mean rank 2.25, normalised 0.625, below all 1/2, p = 1 − (2/3)² = 5/9. Chance (k = 2
    on both): rank 2, below all 1/3."""
    res = {r["scorer"]: r for r in selfpref.human_ranks(scores_table(PER_TOKEN_SCORES, True),
                                                         human_table(PER_TOKEN_HUMAN, True))}
    assert list(res) == ["current", "previous", "judge"]
    raw, per = res["current"], res["current"]["per_token"]
    assert (raw["mean_rank"], raw["mean_normalised_rank"], raw["below_all"], raw["below_all_p_value"]) == \
        (2.0, 0.5, 0, 1.0)
    assert (per["n"], per["mean_rank"], per["mean_normalised_rank"], per["below_all"]) == (2, 2.25, 0.625, 1)
    assert per["below_all_p_value"] == pytest.approx(5 / 9)
    for r in (raw, per):
        assert (r["chance_mean_rank"], r["chance_below_all_share"]) == (2.0, pytest.approx(1 / 3))
    assert "per_token" not in per  # the nested measures are not measured per token again
    assert res["previous"]["per_token"] is None and res["judge"]["per_token"] is None
    # without the length columns on one side (an old caller's tables): no per-token row
    (cur, *_) = selfpref.human_ranks(scores_table(PER_TOKEN_SCORES, True),
                                     human_table([r[:3] for r in PER_TOKEN_HUMAN]))
    assert cur["scorer"] == "current" and cur["per_token"] is None


def test_a_role_of_mixed_kinds_has_no_per_token_row():
    human = [("a", "current", -3.0, 5, "likelihood_norm"), ("b", "current", 2.0, 4, "dpo")]
    res = {r["scorer"]: r for r in selfpref.human_ranks(scores_table(PER_TOKEN_SCORES, True), human_table(human, True))}
    assert res["current"]["per_token"] is None


def test_a_zero_token_response_divides_by_one():
    scores = scores_table([("a", 0, "current", -1.0, 0, "dpo"), ("a", 1, "current", -4.0, 2, "dpo")], True)
    human = human_table([("a", "current", -1.5, 1, "dpo")], True)
    # per token: samples −1 / max(0, 1) = −1, −2; human −1.5 → rank 2 of 3
    (r,) = selfpref.human_ranks(scores, human)
    assert r["per_token"]["mean_rank"] == 2.0 and r["mean_rank"] == 2.0


# ---------------------------------------------------------------------------- the rendered table
def schema_tables(folder):
    """PER_TOKEN_SCORES / PER_TOKEN_HUMAN as schema-valid scores and human_scores tables in a labeled folder."""
    srows = [{"prompt_id": p, "response_idx": i, "scorer": s, "model": "m", "ref_model": None, "logp": None,
              "ref_logp": None, "n_tokens": nt, "reward": r, "reward_kind": kind, "judge_text": None,
              "confidence": None} for p, i, s, r, nt, kind in PER_TOKEN_SCORES]
    hrows = [{"prompt_id": p, "scorer": s, "model": "m", "ref_model": None, "logp": None, "ref_logp": None,
              "n_tokens": nt, "reward": r, "reward_kind": kind, "judge_text": None, "confidence": None,
              "human_answer": f"answer {p}"} for p, s, r, nt, kind in PER_TOKEN_HUMAN]
    io.write_table(pa.Table.from_pylist(srows, schema=schemas.get("scores").arrow), folder / "scores", "scores")
    io.write_table(pa.Table.from_pylist(hrows, schema=schemas.get("human_scores").arrow), folder / "human",
                   "human_scores")


def test_rendered_table_shows_chance_columns_and_per_token_rows(tmp_path):
    schema_tables(tmp_path / "lab")
    entry = agreement_report.folder_agreement(*agreement_report.read_folder(tmp_path / "lab"))
    lines = agreement_report.markdown(entry)
    header = "| scorer | n | mean rank | chance | normalised | chance | below all | chance | p |"
    assert header in lines
    assert "| current | 2 | 2.00 of 3 | 2.00 | 0.500 | 0.500 | 0.0% (0/2) | 33.3% | 1.000 |" in lines
    assert "| current per token | 2 | 2.25 of 3 | 2.00 | 0.625 | 0.500 | 50.0% (1/2) | 33.3% | 0.556 |" in lines
    # judge a: [1, 4] human 2 → rank 2; previous a: [−1, −2] human −3 → below all, p = 1/3
    assert "| judge | 1 | 2.00 of 3 | 2.00 | 0.500 | 0.500 | 0.0% (0/1) | 33.3% | 1.000 |" in lines
    assert "| previous | 1 | 3.00 of 3 | 2.00 | 1.000 | 0.500 | 100.0% (1/1) | 33.3% | 0.333 |" in lines
    assert not any("judge per token" in x or "previous per token" in x for x in lines)
    assert any("exchangeable" in x and "Per token" in x for x in lines)


def test_cli_inspect_prints_the_per_token_row(tmp_path, cream_exe):
    schema_tables(tmp_path / "lab")
    res = cream_exe("inspect", tmp_path / "lab", "--out", tmp_path / "plots", env={"COLUMNS": "160"})
    assert res.code == 0, res
    row = next(line for line in res.out.splitlines() if "current per token" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == ["current per token", "2", "2.25 of 3", "2.00", "0.625", "0.500", "50.0% (1/2)", "33.3%", "0.556"]


def test_cli_inspect_prints_a_wide_table_row_by_row_on_a_narrow_terminal(tmp_path, cream_exe):
    """At 80 columns the self-preference table is too wide: each row is one line with every cell whole."""
    schema_tables(tmp_path / "lab")
    res = cream_exe("inspect", tmp_path / "lab", "--out", tmp_path / "plots", env={"COLUMNS": "80"})
    assert res.code == 0, res
    text = " ".join(res.out.split())  # the terminal's soft wraps undone
    assert ("current per token: n 2 · mean rank 2.25 of 3 · chance 2.00 · normalised 0.625 · chance 0.500 · "
            "below all 50.0% (1/2) · chance 33.3% · p 0.556") in text
    assert "┃" not in res.out.split("Self-preference")[1].split("\n\n")[0]
