"""Scorer-agreement diagnostics (cream_data.rewards.agreement): every measure against an independent computation (scipy
per prompt in a Python loop, or by hand), and the tables in the run report and `cream inspect`."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import schemas
from cream_data.rewards import agreement, selfpref
from cream_data.tables import io
from cream_data.rewards import ranking
from cream_data.reports import inspect as report
from cream_data.reports import run_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Z = 1.959963984540054


def scores_table(rows):
    """A scores table from (prompt_id, response_idx, scorer, reward) tuples (reward None = null)."""
    return pa.table({"prompt_id": [r[0] for r in rows], "response_idx": pa.array([r[1] for r in rows], pa.int16()),
                     "scorer": [r[2] for r in rows], "reward": pa.array([r[3] for r in rows], pa.float64())})


def from_dict(d):
    """{prompt: {scorer: [rewards…]}} → rows; None or NaN in a list is a null reward."""
    return scores_table([(p, i, s, None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
                         for p, by in d.items() for s, vals in by.items() for i, v in enumerate(vals)])


def first_argmax(xs):
    return max(range(len(xs)), key=lambda j: (xs[j], -j))


def first_argmin(xs):
    return min(range(len(xs)), key=lambda j: (xs[j], j))


def test_doctests():
    assert doctest.testmod(agreement).failed == 0


# ---------------------------------------------------------------------------- agreement matrix
def random_scores(seed, n_prompts=60, tied=False):
    """current/previous/judge rewards, N in {2..6}, some nulls and some responses a role did not score at all."""
    rng = np.random.default_rng(seed)
    data = {}
    for p in range(n_prompts):
        n = int(rng.integers(2, 7))
        by = {}
        for role in ("current", "previous", "judge"):
            v = rng.integers(0, 3, size=n).astype(float) if tied or role == "judge" else rng.normal(size=n)
            v[rng.random(n) < 0.12] = np.nan                    # null rewards
            by[role] = v.tolist()
        if p % 9 == 4:
            by["current"] = [1.0] * n                           # all-equal: tau-b undefined
        if p % 11 == 3:
            by["previous"] = by["previous"][: n - 1]            # a response the previous model never scored
        data[f"q{p:03d}"] = by
    return data


def expected_pair(data, a, b):
    """Per prompt in plain Python + scipy.stats.kendalltau: n, undefined, tau mean/std, top-pair agreement."""
    taus, same, undefined = [], [], 0
    for by in data.values():
        if a not in by or b not in by:
            continue
        xa, xb = by[a], by[b]
        idx = [i for i in range(min(len(xa), len(xb))) if np.isfinite(xa[i]) and np.isfinite(xb[i])]
        if len(idx) < 2:
            continue
        va, vb = [xa[i] for i in idx], [xb[i] for i in idx]
        tau = stats.kendalltau(va, vb).statistic
        if not np.isfinite(tau):
            undefined += 1
            continue
        taus.append(tau)
        same.append(first_argmax(va) == first_argmax(vb) and first_argmin(va) == first_argmin(vb))
    return len(taus), undefined, np.mean(taus), np.std(taus), np.mean(same), sum(same)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy warns on the all-equal prompts it gives NaN
@pytest.mark.parametrize("tied", [False, True])
def test_matrix_matches_scipy_per_prompt(tied):
    data = random_scores(seed=7 if tied else 3, tied=tied)
    m = agreement.agreement_matrix(from_dict(data))
    assert m["roles"] == ["current", "previous", "judge"]
    assert [(p["a"], p["b"]) for p in m["pairs"]] == [("current", "previous"), ("current", "judge"),
                                                        ("previous", "judge")]
    for p in m["pairs"]:
        n, undefined, mean, std, top, top_n = expected_pair(data, p["a"], p["b"])
        assert n > 20 and p["n"] == n and p["undefined"] == undefined
        assert p["tau_mean"] == pytest.approx(mean, abs=1e-12) and p["tau_std"] == pytest.approx(std, abs=1e-12)
        assert p["top_pair"] == pytest.approx(top, abs=1e-12) and p["top_pair_n"] == top_n
    assert sum(p["undefined"] for p in m["pairs"]) > 0


def test_masked_tau_b_equals_ranking_tau_b_without_nan():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, size=(200, 5)).astype(float), rng.normal(size=(200, 5))
    np.testing.assert_allclose(agreement.masked_tau_b(a, b), ranking.kendall_tau_b(a, b), atol=1e-12, equal_nan=True)


def test_top_pair_hand_worked():
    """Four prompts, current vs judge:
    p0: current [3, 1, 2], judge [5, 0, 2]: chosen 0/0, rejected 1/1 → agree; tau-b 1.
    p1: current [1, 2, 3], judge [4, 4, 1]: chosen 2 vs 0 (first of the judge's 4s) → disagree;
        pairs (0,1) tied in judge, (0,2) discordant, (1,2) discordant: tau-b = -2 / sqrt(3 · 2).
    p2: current [1, NaN, 2, 0], judge [1, 9, 2, 0]: response 1 left out; same chosen 2, same rejected 3: agree.
    p3: current [2, 2], judge [1, 0]: current all-equal: undefined, not in n.
    p4: current [1], judge [1]: one response: not counted at all."""
    t = from_dict({"p0": {"current": [3, 1, 2], "judge": [5, 0, 2]},
                   "p1": {"current": [1, 2, 3], "judge": [4, 4, 1]},
                   "p2": {"current": [1, None, 2, 0], "judge": [1, 9, 2, 0]},
                   "p3": {"current": [2, 2], "judge": [1, 0]},
                   "p4": {"current": [1], "judge": [1]}})
    (p,) = agreement.agreement_matrix(t)["pairs"]
    assert (p["n"], p["undefined"], p["top_pair_n"]) == (3, 1, 2)
    assert p["top_pair"] == pytest.approx(2 / 3)
    assert p["tau_mean"] == pytest.approx((1 - 2 / math.sqrt(6) + 1) / 3)


def test_empty_and_single_role_inputs():
    empty = scores_table([])
    assert agreement.agreement_matrix(empty) == {"roles": [], "pairs": []}
    assert agreement.oracle_agreement(empty) is None
    assert selfpref.human_ranks(empty, pa.table({"prompt_id": ["a"], "scorer": ["judge"], "reward": [1.0]})) == []
    one = from_dict({"a": {"current": [1, 2]}})
    assert agreement.agreement_matrix(one) == {"roles": ["current"], "pairs": []}
    # a pair of roles that never share a scored response: listed, with nothing measured
    (p,) = agreement.agreement_matrix(from_dict({"a": {"current": [1, 2]}, "b": {"judge": [3, 4]}}))["pairs"]
    assert (p["n"], p["undefined"], p["tau_mean"], p["top_pair"]) == (0, 0, None, None)


# ---------------------------------------------------------------------------- oracle
def wilson_by_hand(k, n):
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


ORACLE_TABLE = {
    # oracle 1 = correct, 0 = wrong, None = no verdict. Per prompt, current / judge:
    # a: chosen 0 correct, rejected 2 wrong: win / chosen 0 (first of the 3s) correct, rejected 2 wrong: win
    # b: chosen 2 wrong: miss / all equal (chosen = rejected = 0): miss
    # c: response 1 unrewarded; chosen 3 wrong: miss / chosen 1 correct, rejected 2 wrong: win
    # d: no wrong response: not counted
    # e: response 0 has no verdict; over {1, 2} chosen 2 correct, rejected 1 wrong: win / chosen 1 wrong: miss
    # f: only the correct response rewarded: not counted / a tie: miss
    "a": {"oracle": [1, 0, 0], "current": [2.0, 1.0, 0.5], "judge": [3, 3, 1]},
    "b": {"oracle": [0, 1, 0], "current": [0.1, 0.2, 0.3], "judge": [2, 2, 2]},
    "c": {"oracle": [1, 1, 0, 0], "current": [1.0, None, 0.5, 2.0], "judge": [4, 5, 0, 1]},
    "d": {"oracle": [1, 1], "current": [1.0, 2.0], "judge": [1, 2]},
    "e": {"oracle": [None, 0, 1], "current": [9.0, 1.0, 2.0], "judge": [5, 1, 0]},
    "f": {"oracle": [0, 1], "current": [None, 1.0], "judge": [1, 1]},
}


def test_oracle_win_rate_hand_worked_with_wilson():
    res = {r["scorer"]: r for r in agreement.oracle_agreement(from_dict(ORACLE_TABLE), n_boot=0)}
    assert set(res) == {"current", "judge"}
    cur, judge = res["current"], res["judge"]
    assert (cur["prompts"], cur["wins"]) == (4, 2)                   # a, b, c, e; wins a, e
    assert (judge["prompts"], judge["wins"], judge["ties_all_equal"]) == (5, 2, 2)  # a, b, c, e, f; wins a, c
    for r in (cur, judge):
        lo, hi = wilson_by_hand(r["wins"], r["prompts"])
        assert r["win_rate"] == r["wins"] / r["prompts"]
        assert r["win_ci_low"] == pytest.approx(lo, abs=1e-9) and r["win_ci_high"] == pytest.approx(hi, abs=1e-9)
    # AUC pooled: the judge's correct rewards vs wrong ones, by hand with ties ½
    right = [3, 2, 4, 5, 1, 2, 0, 1]       # a0, b1, c0, c1, d0, d1, e2, f1
    wrong = [3, 1, 2, 2, 0, 1, 1, 1]       # a1, a2, b0, b2, c2, c3, e1, f0
    hand = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in right for y in wrong) / (len(right) * len(wrong))
    assert judge["auc"] == pytest.approx(hand, abs=1e-12)
    assert (judge["correct"], judge["wrong"], judge["responses"]) == (8, 8, 16)


def oracle_data(seed, n_prompts=50):
    """Integer-valued (tied) judge and continuous current rewards that lean towards the correct responses."""
    rng = np.random.default_rng(seed)
    data = {}
    for p in range(n_prompts):
        n = int(rng.integers(2, 6))
        o = (rng.random(n) < 0.4).astype(float)
        cur = rng.normal(size=n) + o
        judge = np.clip(np.round(rng.normal(2, 1.2, size=n) + o), 0, 5)
        cur[rng.random(n) < 0.1] = np.nan
        o_list = [None if rng.random() < 0.05 else v for v in o.tolist()]
        data[f"p{p:02d}"] = {"current": cur.tolist(), "oracle": o_list, "judge": judge.tolist()}
    return data


def test_auc_matches_mannwhitneyu_and_bootstrap_matches_a_loop():
    data = oracle_data(seed=5)
    n_boot, seed = 200, 11
    res = {r["scorer"]: r for r in agreement.oracle_agreement(from_dict(data), n_boot=n_boot, seed=seed)}
    for role in ("current", "judge"):
        r = res[role]
        per_prompt = []   # (correct rewards, wrong rewards) per prompt that has a counted response, in table order
        for by in data.values():
            pairs = [(s, o) for s, o in zip(by[role], by["oracle"]) if np.isfinite(s) and o in (0.0, 1.0)]
            if pairs:
                per_prompt.append(([s for s, o in pairs if o == 1], [s for s, o in pairs if o == 0]))
        right = [x for c, _ in per_prompt for x in c]
        wrong = [x for _, w in per_prompt for x in w]
        u = stats.mannwhitneyu(right, wrong).statistic
        assert r["auc"] == pytest.approx(u / (len(right) * len(wrong)), abs=1e-12)
        assert (r["correct"], r["wrong"], r["auc_prompts"]) == (len(right), len(wrong), len(per_prompt))
        # the bootstrap: the same resamples of prompts (the generator's draws), each AUC by scipy in a loop
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(per_prompt), size=(n_boot, len(per_prompt)))
        boots = []
        for row in draws:
            c = [x for i in row for x in per_prompt[i][0]]
            w = [x for i in row for x in per_prompt[i][1]]
            if c and w:
                boots.append(stats.mannwhitneyu(c, w).statistic / (len(c) * len(w)))
        assert r["auc_resamples"] == len(boots)
        assert r["auc_ci_low"] == pytest.approx(np.percentile(boots, 2.5), abs=1e-12)
        assert r["auc_ci_high"] == pytest.approx(np.percentile(boots, 97.5), abs=1e-12)
        assert r["auc_ci_low"] < r["auc"] < r["auc_ci_high"]


def test_oracle_with_one_class_only_has_no_auc():
    (r,) = agreement.oracle_agreement(from_dict({"a": {"oracle": [1, 1], "rm": [0.5, 0.2]}}))
    assert (r["prompts"], r["win_rate"], r["win_ci_low"], r["auc"], r["auc_ci_low"]) == (0, None, None, None, None)


# ---------------------------------------------------------------------------- human answers
def test_human_ranks_hand_worked_with_ties_and_nan():
    """judge: a samples [4, 2, 3] human 3 → 1 higher, 1 tie: rank 2.5 of 4, normalised 0.5;
    b samples [5, NaN, 4] human 1 → k = 2, both higher: rank 3 of 3, normalised 1, below all;
    c samples [2, 2] human 2 → 2 ties: rank 1 + 1 = 2 of 3, normalised 0.5 (tied, not below all);
    d human null → not counted; e has no samples at all → not counted; f samples all null → not counted.
    current: a samples [0.1, 0.2, 0.3] human 0.5 → rank 1 of 4, normalised 0; c [1, -1] human -2 → rank 3, below
    all.
    rm only in the human table → no row."""
    scores = from_dict({"a": {"judge": [4, 2, 3], "current": [0.1, 0.2, 0.3]},
                        "b": {"judge": [5, None, 4]},
                        "c": {"judge": [2, 2], "current": [1.0, -1.0]},
                        "d": {"judge": [1, 2]},
                        "f": {"judge": [None, None]}})
    human = pa.table({"prompt_id": ["a", "b", "c", "d", "e", "f", "a", "c", "a"],
                      "scorer": ["judge"] * 6 + ["current", "current", "rm"],
                      "reward": pa.array([3.0, 1.0, 2.0, None, 4.0, 3.0, 0.5, -2.0, 7.0], pa.float64())})
    res = {r["scorer"]: r for r in selfpref.human_ranks(scores, human)}
    assert list(res) == ["current", "judge"]
    j, c = res["judge"], res["current"]
    assert (j["n"], j["k_min"], j["k_max"], j["below_all"]) == (3, 2, 3, 1)
    assert j["mean_rank"] == pytest.approx((2.5 + 3 + 2) / 3)
    assert j["mean_normalised_rank"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert j["below_all_share"] == pytest.approx(1 / 3)
    assert (c["n"], c["mean_rank"], c["mean_normalised_rank"], c["below_all"]) == (2, 2.0, 0.5, 1)


# ---------------------------------------------------------------------------- the run report and cream inspect
def schema_scores(data, model="m"):
    """The same rewards as a schema-valid scores table (v2)."""
    kinds = {"current": "dpo", "previous": "likelihood_norm", "judge": "judge", "oracle": "oracle", "rm": "rm"}
    rows = [{"prompt_id": p, "response_idx": i, "scorer": s, "model": model, "ref_model": None, "logp": None,
             "ref_logp": None, "n_tokens": 3, "reward": None if v is None or not np.isfinite(v) else float(v),
             "reward_kind": kinds[s], "judge_text": None, "confidence": None}
            for p, by in data.items() for s, vals in by.items() for i, v in enumerate(vals)]
    return pa.Table.from_pylist(rows, schema=schemas.get("scores").arrow)


def schema_human(rewards):
    """{(prompt, scorer): reward} as a human_scores table."""
    rows = [{"prompt_id": p, "scorer": s, "model": "m", "ref_model": None, "logp": None, "ref_logp": None,
             "n_tokens": 4, "reward": r, "reward_kind": "judge" if s == "judge" else "dpo", "judge_text": None,
             "confidence": None, "human_answer": f"human answer to {p}"} for (p, s), r in rewards.items()]
    return pa.Table.from_pylist(rows, schema=schemas.get("human_scores").arrow)


HUMAN = {("a", "current"): -5.0, ("a", "judge"): 3.0, ("b", "current"): 0.15, ("b", "judge"): 2.0,
         ("c", "current"): 9.0, ("c", "judge"): 0.0, ("e", "judge"): 4.0}


def make_run(tmp_path):
    """Iteration 1: current/previous/judge/oracle + human answers; iteration 2: current/previous only."""
    from tests.support.reports import write_prefs

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"method": "cream", "T": 2, "stages": {}}))
    (run / "config.yaml").write_text("method: cream\nT: 2\n")
    it1 = {p: {k: [np.nan if v is None else v for v in vals] for k, vals in by.items()}
           for p, by in ORACLE_TABLE.items()}
    for by in it1.values():  # a previous model that agrees with the current one except on response 0
        by["previous"] = [v * 2 + (0.5 if i == 0 else 0) for i, v in enumerate(by["current"])]
    it2 = random_scores(seed=1, n_prompts=20)
    it2 = {p: {k: by[k] for k in ("current", "previous")} for p, by in it2.items()}
    for t, data in ((1, it1), (2, it2)):
        write_prefs(run, t, 5, seed=t)
        io.write_table(schema_scores(data), run / f"iter-{t}" / "scores", "scores")
    io.write_table(schema_human(HUMAN), run / "iter-1" / "human", "human_scores")
    return run, it1, it2


def test_run_report_has_the_agreement_tables_json_and_png(tmp_path):
    run, it1, it2 = make_run(tmp_path)
    result = run_report.write_run_report(run)
    saved = json.loads(result.json_path.read_text())
    first, second = saved["agreement"]
    assert (first["iteration"], second["iteration"]) == (1, 2)
    assert first["roles"] == ["current", "previous", "judge", "oracle"] and second["roles"] == ["current", "previous"]
    # the numbers are agreement's on the same tables (checked against scipy above), written to report.json
    for entry, data in ((first, it1), (second, it2)):
        expected = agreement.agreement_matrix(schema_scores(data))["pairs"]
        assert entry["matrix"] == expected  # JSON keeps every float exactly
        n, undefined, mean, *_ = expected_pair(data, "current", "previous")
        assert (entry["matrix"][0]["n"], entry["matrix"][0]["undefined"]) == (n, undefined)
        assert entry["matrix"][0]["tau_mean"] == pytest.approx(mean)
    assert second["oracle"] is None and second["human"] is None
    judge = {r["scorer"]: r for r in first["oracle"]}["judge"]
    assert (judge["prompts"], judge["wins"]) == (5, 2) and judge["auc_resamples"] > 900
    human = {r["scorer"]: r for r in first["human"]}
    # judge: a [3, 3, 1] h 3 → 1 + 0 + 1 = 2, b [2, 2, 2] h 2 → 2.5, c [4, 5, 0, 1] h 0 → 1 + 3 + ½ = 4.5 (tie
    # with the 0), e [5, 1, 0] h 4 → 2; current: a h −5 → below all (rank 4), b h 0.15 → 1 + 2 = 3, c h 9 → 1
    assert human["judge"]["n"] == 4 and human["judge"]["mean_rank"] == pytest.approx((2 + 2.5 + 4.5 + 2) / 4)
    assert human["judge"]["below_all"] == 0
    assert human["current"]["n"] == 3 and human["current"]["below_all"] == 1
    assert human["current"]["mean_rank"] == pytest.approx((4 + 3 + 1) / 3)
    # current is a DPO reward (reward_kind dpo in both tables): also per token, samples / 3 and human answers / 4:
    # a h −5/4 → below all, b [0.1, 0.2, 0.3]/3 h 0.15/4 = 0.0375 → rank 3, c h 9/4 → 1 (the same ranks here)
    per = human["current"]["per_token"]
    assert (per["n"], per["below_all"], per["mean_rank"]) == (3, 1, pytest.approx(8 / 3))
    assert human["judge"]["per_token"] is None
    assert human["current"]["chance_below_all_share"] == pytest.approx(1 / 4)  # k = 3 everywhere (c: one null)
    md = result.md_path.read_text()
    section = md.split("## Agreement between scorers")[1]
    assert "### Iteration 1" in section and "### Iteration 2" in section
    it1_md, it2_md = section.split("### Iteration 2")
    assert "Agreement with the oracle" in it1_md and "Agreement with the oracle" not in it2_md
    assert "Self-preference" in it1_md and "Self-preference" not in it2_md
    lo, hi = wilson_by_hand(2, 5)
    assert f"| judge | 40.0% (2/5) [{100 * lo:.1f}, {100 * hi:.1f}] |" in it1_md
    assert f"| judge | 4 | {(2 + 2.5 + 4.5 + 2) / 4:.2f} of 4–5 |" in it1_md
    assert "| current | 3 | 2.67 of 4 | " in it1_md and "33.3% (1/3) |" in it1_md
    p = 1 - (3 / 4) ** 3
    assert f"| current | 3 | 2.67 of 4 | 2.50 | 0.556 | 0.500 | 33.3% (1/3) | 25.0% | {p:.3f} |" in it1_md
    assert f"| current per token | 3 | 2.67 of 4 | 2.50 | 0.556 | 0.500 | 33.3% (1/3) | 25.0% | {p:.3f} |" in it1_md
    assert "judge per token" not in it1_md and "exchangeable" in md
    cp = second["matrix"][0]
    assert f"| current – previous | {cp['tau_mean']:.3f} ± {cp['tau_std']:.3f} | {cp['n']} | {cp['undefined']} |" \
        in it2_md
    assert "![agreement](agreement.png)" in md and saved["plots"]["agreement"] == "agreement.png"
    png = run / "report" / "agreement.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000


def test_run_report_without_scores_has_no_agreement_section_or_png(tmp_path):
    from tests.support.reports import make_run as make_plain_run

    run, _ = make_plain_run(tmp_path, evals=False)
    result = run_report.write_run_report(run)
    assert result.report["agreement"] == [] and "agreement" not in result.plots
    assert "## Agreement between scorers" not in result.markdown
    assert not (run / "report" / "agreement.png").exists()


def write_label_out(folder):
    """A `cream label --out` folder: scores and human beside each other (no preferences needed to inspect)."""
    data = {p: {k: [np.nan if v is None else v for v in vals] for k, vals in by.items()}
            for p, by in ORACLE_TABLE.items()}
    io.write_table(schema_scores(data), folder / "scores", "scores")
    io.write_table(schema_human(HUMAN), folder / "human", "human_scores")
    return data


def test_inspect_folder_has_the_agreement_tables(tmp_path):
    data = write_label_out(tmp_path / "lab")
    r = report.inspect_folder(tmp_path / "lab")
    saved = json.loads(r.files["json"].read_text())["agreement"]
    assert saved["roles"] == ["current", "judge", "oracle"]
    assert saved["human_path"] == str(tmp_path / "lab" / "human")
    (cj,) = [p for p in saved["matrix"] if (p["a"], p["b"]) == ("current", "judge")]
    n, undefined, mean, std, top, _ = expected_pair(data, "current", "judge")
    assert (cj["n"], cj["undefined"]) == (n, undefined) and cj["top_pair"] == pytest.approx(top)
    assert {o["scorer"]: o["wins"] for o in saved["oracle"]} == {"current": 2, "judge": 2}
    assert {h["scorer"]: h["n"] for h in saved["human"]} == {"current": 3, "judge": 4}
    assert {h["scorer"]: h["per_token"] is not None for h in saved["human"]} == {"current": True, "judge": False}
    md = r.files["markdown"].read_text()
    for title in ("## Agreement between scorers", "## Agreement with the oracle", "## Self-preference"):
        assert title in md
    assert f"| current – judge | {cj['tau_mean']:.3f} ± {cj['tau_std']:.3f} | {n} | {undefined} |" in md
    # pointed at the scores table itself, the human table beside it is still found
    r2 = report.inspect_folder(tmp_path / "lab" / "scores", tmp_path / "out2")
    assert r2.summary["agreement"]["human"] == saved["human"]


def test_cli_inspect_prints_the_agreement_tables(tmp_path, cli):
    write_label_out(tmp_path / "lab")
    res = cli("inspect", tmp_path / "lab", "--out", tmp_path / "plots")
    assert res.code == 0, res
    text = res.out
    for title in ("Agreement between scorers", "Agreement with the oracle", "Self-preference"):
        assert title in text
    lo, hi = wilson_by_hand(2, 5)
    assert f"40.0% (2/5) [{100 * lo:.1f}, {100 * hi:.1f}]" in text
    assert "current – judge" in text
