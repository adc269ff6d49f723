"""CREAM's premise measured directly (cream_data.rewards.premise): does C predict that a pair is right by the oracle?
Checked on a hand-worked table, against scipy's Mann–Whitney U, sklearn's ROC AUC and a bootstrap loop, against the
labeler's own C, and in `cream inspect` (in-process and the console script) and the run report."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import schemas
from cream_data.reports import premise_report, run_report
from cream_data.rewards import premise as premise_mod
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.premise import premise, recomputed_consistency
from cream_data.rewards.spec import PairingSpec
from cream_data.tables import io

NO_ORACLE = "the scores have no oracle role (1 correct / 0 wrong against the reference answer): no pair is known " \
            "right or wrong"


def test_doctests():
    assert doctest.testmod(premise_mod).failed == 0


# ---------------------------------------------------------------------------- tables
def scores_table(data: dict) -> pa.Table:
    """{prompt: {role: [reward, …]}} (None: a null reward) as a schema-valid scores table, prompts in order."""
    kinds = {"current": "dpo", "previous": "dpo", "oracle": "oracle", "judge": "judge"}
    rows = [{"prompt_id": p, "response_idx": i, "scorer": role, "model": role, "ref_model": None, "logp": -1.0,
             "ref_logp": None, "n_tokens": 3, "reward": None if v is None or not np.isfinite(v) else float(v),
             "reward_kind": kinds[role], "judge_text": None, "confidence": None}
            for p, by in data.items() for role, vals in by.items() for i, v in enumerate(vals)]
    return pa.Table.from_pylist(rows, schema=schemas.get("scores").arrow)


def responses_table(data: dict) -> pa.Table:
    rows = [{"prompt_id": p, "prompt": [{"role": "user", "content": f"question {p}"}], "response_idx": i,
             "response": f"{p} answer {i}", "model": "M2", "iteration": 1, "seed": 1, "temperature": 0.8,
             "top_p": 0.95, "max_new_tokens": 8, "finish_reason": "stop", "n_tokens": 3}
            for p, by in data.items() for i in range(len(by["current"]))]
    return pa.Table.from_pylist(rows, schema=schemas.get("responses").arrow)


def pairs_table(rows: list[tuple]) -> pa.Table:
    """(prompt, chosen, rejected, C, method) rows: the columns of a preferences table the premise reads."""
    return pa.table({"prompt_id": [r[0] for r in rows], "chosen_idx": pa.array([r[1] for r in rows], pa.int16()),
                     "rejected_idx": pa.array([r[2] for r in rows], pa.int16()),
                     "consistency": [float(r[3]) for r in rows], "consistency_method": [r[4] for r in rows]})


def random_data(seed: int, n_prompts: int = 120, null_share: float = 0.05) -> dict:
    """current rewards that lean towards correct responses, previous ones that follow current with noise, some
    null rewards, N in 3..5."""
    rng = np.random.default_rng(seed)
    data = {}
    for p in range(n_prompts):
        n = int(rng.integers(3, 6))
        correct = (rng.random(n) < 0.5).astype(float)
        cur = rng.normal(size=n) + 0.8 * correct
        prev = cur + rng.normal(scale=1.2, size=n)
        for v in (cur, prev):
            v[rng.random(n) < null_share] = np.nan
        oracle = [None if rng.random() < null_share else c for c in correct.tolist()]
        data[f"p{p:03d}"] = {"current": cur.tolist(), "previous": prev.tolist(), "oracle": oracle}
    return data


def labeled(data: dict) -> tuple[pa.Table, pa.Table, pa.Table]:
    """responses, scores and the labeler's own pairs (CREAM: current picks, C against previous)."""
    responses, scores = responses_table(data), scores_table(data)
    prefs, _ = build_preferences(responses, scores, PairingSpec(scope="dataset"))
    return responses, scores, prefs


# ---------------------------------------------------------------------------- hand-worked
# Six prompts, three responses each (p7: two). Chosen = the first argmax of current, rejected = the first argmin.
# C = (tau + 1) / 2 of the ordinal rankings of current and previous (each worked out response pair by pair); the
# oracle's verdict on chosen and rejected makes the pair right, wrong or a tie:
#   p1 cur [3.5, 2, 1] prev [3, 2, 1]: same ranking, tau 1, C 1.
#      oracle [1, 0, 0]: chosen 0 correct, rejected 2 wrong: right
#   p2 cur [1, 3, 2] prev [1, 2, 3]: responses (1,2) ordered apart, tau 1/3, C 2/3.
#      oracle [0, 1, 1]: chosen 1 correct, rejected 0 wrong: right
#   p3 cur [2, 1, 3] prev [3, 2, 1]: (0,2) and (1,2) apart, tau -1/3, C 1/3.
#      oracle [1, 1, 0]: chosen 2 wrong, rejected 1 correct: wrong
#   p4 cur [1, 2, 3] prev [1, 3, 2]: (1,2) apart, tau 1/3, C 2/3.
#      oracle [1, 0, 0]: chosen 2 wrong, rejected 0 correct: wrong
#   p5 cur [3, 1, 2] prev [2, 1, 3]: (0,2) apart, tau 1/3, C 2/3.
#      oracle [0, 0, 1]: chosen 0 and rejected 1 both wrong: a tie
#   p6 cur [2, 3, 1] prev [1, 3, 2]: (0,2) apart, tau 1/3, C 2/3.
#      oracle [0, 1, 0]: chosen 1 correct, rejected 2 wrong: right
#   p7 cur [2, 1] prev [1, 2]: reversed, C 0.
#      oracle [1, null]: unknown
# Right C {1, 2/3, 2/3}, wrong C {1/3, 2/3}: of the 6 (right, wrong) pairs, 1 > 1/3, 1 > 2/3, 2/3 > 1/3 twice, and
# 2/3 = 2/3 twice (½ each): AUC = (4 + 1) / 6 = 5/6.
# Margins of current (chosen − rejected): right {2.5, 2, 2}, wrong {2, 2}: 2.5 beats both, the four 2-vs-2 tie:
# (2 + 2) / 6 = 2/3. Of previous: right p1 3−1 = 2, p2 2−1 = 1, p6 3−2 = 1; wrong p3 1−2 = −1, p4 2−1 = 1:
# 2 beats both, each 1 beats −1 and ties 1: (2 + 1.5 + 1.5) / 6 = 5/6.
# Accuracy 3 / (3 + 2) = 0.6; C >= 1/2: p1, p2, p6 right, p4 wrong, p5 a tie: 3/4; C < 1/2: p3 wrong: 0/1.
HAND = {"p1": {"current": [3.5, 2, 1], "previous": [3, 2, 1], "oracle": [1, 0, 0]},
        "p2": {"current": [1, 3, 2], "previous": [1, 2, 3], "oracle": [0, 1, 1]},
        "p3": {"current": [2, 1, 3], "previous": [3, 2, 1], "oracle": [1, 1, 0]},
        "p4": {"current": [1, 2, 3], "previous": [1, 3, 2], "oracle": [1, 0, 0]},
        "p5": {"current": [3, 1, 2], "previous": [2, 1, 3], "oracle": [0, 0, 1]},
        "p6": {"current": [2, 3, 1], "previous": [1, 3, 2], "oracle": [0, 1, 0]},
        "p7": {"current": [2, 1], "previous": [1, 2], "oracle": [1, None]}}
HAND_PAIRS = [("p1", 0, 2, 1), ("p2", 1, 0, 2 / 3), ("p3", 2, 1, 1 / 3), ("p4", 2, 0, 2 / 3), ("p5", 0, 1, 2 / 3),
              ("p6", 1, 2, 2 / 3), ("p7", 0, 1, 0)]


def check_hand(r: dict) -> None:
    assert r["absent"] is None and r["pairs"] == 7 and r["unknown"] == 1
    assert (r["right"], r["wrong"], r["ties"], r["ties_both_correct"], r["ties_both_wrong"]) == (3, 2, 1, 0, 1)
    assert r["accuracy"] == pytest.approx(0.6)
    high, low = r["by_c"]
    assert (high["group"], high["right"], high["wrong"], high["ties"], high["accuracy"]) == ("C >= 0.5", 3, 1, 1, 0.75)
    assert (low["group"], low["right"], low["wrong"], low["ties"], low["accuracy"]) == ("C < 0.5", 0, 1, 0, 0.0)
    auc = {a["score"]: a for a in r["auc"]}
    assert list(auc) == ["C", "margin current", "margin previous"]
    assert auc["C"]["auc"] == pytest.approx(5 / 6) and (auc["C"]["right"], auc["C"]["wrong"]) == (3, 2)
    assert auc["margin current"]["auc"] == pytest.approx(2 / 3)
    assert auc["margin previous"]["auc"] == pytest.approx(5 / 6)
    assert all(a["prompts"] == 5 and a["reason"] is None for a in r["auc"])


def test_hand_worked_with_the_stored_c():
    r = premise(scores_table(HAND), pairs_table([(*p, "kendall") for p in HAND_PAIRS]))
    check_hand(r)
    assert (r["c_source"], r["consistency_method"], r["c_between"], r["no_c"]) == ("pairs", "kendall", None, 0)
    assert premise(scores_table(HAND), pairs_table([(*p, "kendall") for p in HAND_PAIRS]),
                   between=["current", "judge"])["c_between"] == ["current", "judge"]


def test_hand_worked_pairs_without_c_recompute_it_from_the_scores():
    """A method that pairs without C (srlm, oracle, cream-no-rc: C stored as 1): C is measured from the scores."""
    r = premise(scores_table(HAND), pairs_table([(p, c, j, 1.0, "none") for p, c, j, _ in HAND_PAIRS]))
    check_hand(r)
    assert (r["c_source"], r["consistency_method"], r["c_between"]) == ("recomputed", "kendall",
                                                                         ["current", "previous"])
    assert premise_report.tables(r)[0][3][0][0] == "C (kendall, current – previous, recomputed)"


def test_hand_worked_pairs_are_the_labelers():
    """The hand-worked chosen, rejected and C are what CREAM's pairing makes of these rewards."""
    _, _, prefs = labeled(HAND)
    got = list(zip(*(prefs[c].to_pylist() for c in ("prompt_id", "chosen_idx", "rejected_idx", "consistency"))))
    assert [g[:3] for g in got] == [p[:3] for p in HAND_PAIRS]
    assert [g[3] for g in got] == pytest.approx([p[3] for p in HAND_PAIRS])


def test_recomputed_c_is_the_labelers_c():
    """With nulls in both roles (a response left out where either is null), on 300 prompts of 3 to 5 responses."""
    data = random_data(seed=4, n_prompts=300, null_share=0.12)
    _, scores, prefs = labeled(data)
    assert prefs.num_rows > 250
    by_prompt = dict(zip(prefs["prompt_id"].to_pylist(), prefs["consistency"].to_pylist()))
    width = max(len(by["current"]) for by in data.values())
    pad = lambda v: v + [np.nan] * (width - len(v))  # noqa: E731
    ids = list(data)
    cur = np.array([pad(data[p]["current"]) for p in ids], dtype=float)
    prev = np.array([pad(data[p]["previous"]) for p in ids], dtype=float)
    c = dict(zip(ids, recomputed_consistency(cur, prev)))
    assert [c[p] for p in by_prompt] == pytest.approx(list(by_prompt.values()), abs=1e-12)
    # the stored C and the recomputed one give the same premise numbers
    stored = premise(scores, prefs, n_boot=50)
    none = prefs.set_column(prefs.schema.get_field_index("consistency_method"), "consistency_method",
                            pa.array(["none"] * prefs.num_rows))
    recomputed = premise(scores, none, n_boot=50)
    assert recomputed["auc"][0]["auc"] == pytest.approx(stored["auc"][0]["auc"], abs=1e-12)
    assert recomputed["by_c"] == stored["by_c"]


# ---------------------------------------------------------------------------- AUC and its interval
def right_wrong(data: dict, prefs: pa.Table) -> list[tuple[str, float, bool]]:
    """(prompt, C, right?) of every pair the oracle calls right or wrong, by hand from the tables."""
    out = []
    for p, ch, rj, c in zip(*(prefs[k].to_pylist() for k in ("prompt_id", "chosen_idx", "rejected_idx",
                                                             "consistency"))):
        o = data[p]["oracle"]
        if o[ch] is None or o[rj] is None or o[ch] == o[rj]:
            continue
        out.append((p, c, o[ch] > o[rj]))
    return out


def test_auc_matches_mannwhitneyu_sklearn_and_a_bootstrap_loop():
    data = random_data(seed=7)
    _, scores, prefs = labeled(data)
    n_boot, seed = 300, 5
    r = premise(scores, prefs, n_boot=n_boot, seed=seed)
    counted = right_wrong(data, prefs)
    right = [c for _, c, ok in counted if ok]
    wrong = [c for _, c, ok in counted if not ok]
    assert (r["right"], r["wrong"]) == (len(right), len(wrong)) and min(len(right), len(wrong)) > 10
    auc = r["auc"][0]
    assert auc["score"] == "C" and auc["prompts"] == len(counted)
    u = stats.mannwhitneyu(right, wrong).statistic
    assert auc["auc"] == pytest.approx(u / (len(right) * len(wrong)), abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert auc["auc"] == pytest.approx(sklearn.roc_auc_score([ok for *_, ok in counted],
                                                             [c for _, c, _ in counted]), abs=1e-12)
    # the bootstrap: the generator's draws over the counted pairs' prompts (in the scores' prompt order), each
    # resample's AUC by scipy
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counted), size=(n_boot, len(counted)))
    boots = []
    for row in draws:
        rs = [counted[i][1] for i in row if counted[i][2]]
        ws = [counted[i][1] for i in row if not counted[i][2]]
        if rs and ws:
            boots.append(stats.mannwhitneyu(rs, ws).statistic / (len(rs) * len(ws)))
    assert auc["auc_resamples"] == len(boots) == n_boot
    assert auc["auc_ci_low"] == pytest.approx(np.percentile(boots, 2.5), abs=1e-12)
    assert auc["auc_ci_high"] == pytest.approx(np.percentile(boots, 97.5), abs=1e-12)
    assert auc["auc_ci_low"] < auc["auc"] < auc["auc_ci_high"]


def test_margin_auc_per_role_by_hand():
    data = random_data(seed=8)
    _, scores, prefs = labeled(data)
    r = premise(scores, prefs, n_boot=0)
    for role in ("current", "previous"):
        (a,) = [a for a in r["auc"] if a["role"] == role]
        right, wrong = [], []
        for p, ch, rj in zip(*(prefs[k].to_pylist() for k in ("prompt_id", "chosen_idx", "rejected_idx"))):
            o, v = data[p]["oracle"], data[p][role]
            if o[ch] is None or o[rj] is None or o[ch] == o[rj] or not np.isfinite(v[ch] - v[rj]):
                continue
            (right if o[ch] > o[rj] else wrong).append(v[ch] - v[rj])
        assert (a["score"], a["right"], a["wrong"]) == (f"margin {role}", len(right), len(wrong))
        assert a["auc"] == pytest.approx(stats.mannwhitneyu(right, wrong).statistic / (len(right) * len(wrong)))
        assert a["auc_ci_low"] is None and a["auc_resamples"] == 0  # n_boot 0: no interval


def test_bootstrap_is_deterministic_under_the_seed_and_contains_the_estimate():
    data = random_data(seed=9)
    _, scores, prefs = labeled(data)
    a, b = premise(scores, prefs), premise(scores, prefs)
    assert a == b
    other = premise(scores, prefs, seed=1)
    assert [x["auc"] for x in other["auc"]] == [x["auc"] for x in a["auc"]]
    assert [x["auc_ci_low"] for x in other["auc"]] != [x["auc_ci_low"] for x in a["auc"]]
    for x in a["auc"]:
        assert x["auc_resamples"] == premise_mod.N_BOOT
        assert x["auc_ci_low"] <= x["auc"] <= x["auc_ci_high"]


# ---------------------------------------------------------------------------- degenerate cases
def test_no_wrong_pair_has_no_auc_and_says_why():
    data = {"a": {"current": [2, 1], "previous": [2, 1], "oracle": [1, 0]},
            "b": {"current": [1, 3], "previous": [0, 1], "oracle": [0, 1]},
            "c": {"current": [1, 2], "previous": [0, 1], "oracle": [1, 1]}}
    r = premise(scores_table(data), pairs_table([("a", 0, 1, 1.0, "kendall"), ("b", 1, 0, 1.0, "kendall"),
                                                 ("c", 1, 0, 1.0, "kendall")]))
    assert (r["right"], r["wrong"], r["ties"], r["accuracy"]) == (2, 0, 1, 1.0)
    assert r["by_c"][1] == {"group": "C < 0.5", "right": 0, "wrong": 0, "ties": 0, "accuracy": None}
    for a in r["auc"]:
        assert (a["auc"], a["auc_ci_low"], a["auc_resamples"], a["reason"]) == (None, None, 0, "no wrong pair")
    (table, acc) = premise_report.tables(r)
    assert table[3][0] == ["C (kendall, per pair)", "– (no wrong pair)", "2/0", "2"]
    assert acc[3][0] == ["all pairs", "2", "0", "1 (1 both correct, 0 both wrong)", "100.0% (2/2)"]
    assert acc[3][2] == ["C < 0.5", "0", "0", "0", "–"]


def test_absent_without_oracle_pairs_or_c():
    no_oracle = {p: {k: v for k, v in by.items() if k != "oracle"} for p, by in HAND.items()}
    pairs = pairs_table([(*p, "kendall") for p in HAND_PAIRS])
    assert premise(scores_table(no_oracle), pairs) == {"absent": NO_ORACLE, "pairs": 7}
    assert premise(scores_table(HAND), pairs.slice(0, 0)) == {"absent": "the preferences table has no pairs",
                                                              "pairs": 0}
    only_oracle = {p: {"current": by["current"], "oracle": by["oracle"]} for p, by in HAND.items()}
    none = pairs_table([(*p[:3], 1.0, "none") for p in HAND_PAIRS])
    assert premise(scores_table(only_oracle), none)["absent"].startswith("the pairs carry no consistency C")
    unknown = {p: {**by, "oracle": [None] * len(by["oracle"])} for p, by in HAND.items()}
    assert premise(scores_table(unknown), pairs) == {
        "absent": "none of the 7 pairs has an oracle verdict (0 or 1) on both its chosen and its rejected response",
        "pairs": 7}
    assert premise_report.markdown(premise(scores_table(no_oracle), pairs)) == [
        "## Premise: does C predict a right pair?", "", f"No premise table: {NO_ORACLE}.", ""]


# ---------------------------------------------------------------------------- cream inspect and the run report
def write_labeled(folder, data) -> tuple[pa.Table, pa.Table]:
    """responses beside a labeled folder whose scores hold current, previous and oracle; its preferences are made
    by `cream label --scores` (the caller runs it)."""
    io.write_table(responses_table(data), folder.parent / "responses", "responses")
    scores = scores_table(data)
    io.write_table(scores, folder / "scores", "scores")
    return scores


def relabel(cli, folder):
    r = cli("label", folder.parent / "responses", "--scores", folder, "--out", folder, "--scope", "dataset")
    assert r.code == 0, r


def test_cream_inspect_prints_and_writes_the_premise(tmp_path, cli, cream_exe):
    data = random_data(seed=3, n_prompts=60)
    scores = write_labeled(tmp_path / "lab", data)
    relabel(cli, tmp_path / "lab")
    prefs = io.read_table(tmp_path / "lab" / "preferences", "preferences")
    expected = premise(scores, prefs, between=["current", "previous"])  # the pairing summary's two roles
    res = cli("inspect", tmp_path / "lab", "--out", tmp_path / "plots")
    assert res.code == 0, res
    saved = json.loads((tmp_path / "plots" / "summary.json").read_text())["premise"]
    assert saved == json.loads(json.dumps(expected))
    (auc, acc) = premise_report.tables(expected)
    md = (tmp_path / "plots" / "summary.md").read_text()
    section = md.split("## Premise: does C predict a right pair?")[1]
    for row in auc[3] + acc[3]:
        assert "| " + " | ".join(row) + " |" in section
    assert "Pair accuracy by C:" in section and premise_report.NOTE in section
    c_row = auc[3][0]
    c_auc = expected["auc"][0]
    assert c_row[0] == "C (kendall, current – previous, per pair)"
    assert c_row[1] == f"{c_auc['auc']:.3f} [{c_auc['auc_ci_low']:.3f}, {c_auc['auc_ci_high']:.3f}]"
    # the installed console script prints the same tables
    exe = cream_exe("inspect", tmp_path / "lab", "--out", tmp_path / "plots2")
    assert exe.code == 0, exe
    for text in (res.out, exe.out):
        assert "Premise: does C predict a right pair?" in text and "Pair accuracy by C" in text
        for cell in c_row + ["margin current", "margin previous", acc[3][0][4], acc[3][1][0], acc[3][2][4]]:
            assert cell in text
        assert "CREAM weighs each pair by C" in text


def test_cream_inspect_without_an_oracle_says_why_in_one_line(tmp_path, cli, cream_exe):
    data = {p: {k: v for k, v in by.items() if k != "oracle"} for p, by in random_data(seed=2, n_prompts=8).items()}
    write_labeled(tmp_path / "lab", data)
    relabel(cli, tmp_path / "lab")
    exe = cream_exe("inspect", tmp_path / "lab", "--out", tmp_path / "plots")
    assert exe.code == 0 and exe.err == "", exe
    line = f"Premise: does C predict a right pair? No premise table: {NO_ORACLE}."
    assert [ln for ln in exe.out.splitlines() if ln.startswith("Premise")] == [line]
    assert "Pair accuracy by C" not in exe.out
    md = (tmp_path / "plots" / "summary.md").read_text()
    assert f"No premise table: {NO_ORACLE}." in md and "| C (" not in md


def make_run(tmp_path) -> tuple:
    """Iteration 1 with an oracle role, iteration 2 without; iteration 3 preferences only (no scores)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"method": "cream", "T": 3, "stages": {}}))
    (run / "config.yaml").write_text("method: cream\nT: 3\n")
    made = {}
    for t, seed in ((1, 11), (2, 12), (3, 13)):
        data = random_data(seed=seed, n_prompts=40)
        if t > 1:
            data = {p: {k: v for k, v in by.items() if k != "oracle"} for p, by in data.items()}
        _, scores, prefs = labeled(data)
        prefs = prefs.set_column(prefs.schema.get_field_index("iteration"), "iteration",
                                 pa.array([t] * prefs.num_rows, pa.int32()))
        io.write_table(prefs, run / f"iter-{t}" / "preferences", "preferences")
        if t < 3:
            io.write_table(scores, run / f"iter-{t}" / "scores", "scores")
        made[t] = (scores, prefs)
    return run, made


def test_run_report_has_the_premise_per_iteration(tmp_path):
    run, made = make_run(tmp_path)
    result = run_report.write_run_report(run)
    saved = json.loads(result.json_path.read_text())["premise"]
    assert [p["iteration"] for p in saved] == [1, 2]  # iteration 3 has no scores table
    assert saved[0] == json.loads(json.dumps({"iteration": 1, "path": str(run / "iter-1" / "preferences"),
                                              **premise(*made[1])}))
    assert saved[1] == {"iteration": 2, "path": str(run / "iter-2" / "preferences"), "absent": NO_ORACLE,
                        "pairs": made[2][1].num_rows}
    section = result.markdown.split("## Premise: does C predict a right pair? (per iteration)")[1]
    assert "### Iteration 1" in section and f"Iteration 2: No premise table: {NO_ORACLE}." in section
    (auc, acc) = premise_report.tables(saved[0])
    for row in auc[3] + acc[3]:
        assert "| " + " | ".join(row) + " |" in section
    assert section.count(premise_report.NOTE) == 1
