"""The study's premise table (`cream inspect RUN…`): per run and iteration, does C predict a right pair — right /
wrong / tie pairs, the AUC of C and the pair accuracy split at C = ½ — and the AUC pooled per method over its seeds
and iterations. Every count and AUC is worked out by hand from hand-chosen oracle verdicts and C, and the AUCs are
checked against sklearn's ROC AUC and scipy's Mann–Whitney U on the same pairs.

The runs are real run directories: the manifest and eval tables as tests/test_study_seeds.py writes them (the
real Manifest and the eval stage's row builder), and each labeled iteration's ``scores`` and ``preferences``
tables written and validated by the real table writer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

import schemas
from cream_data.reports import premise_report
from cream_data.tables import io
from tests.test_study_seeds import make_run

NO_ORACLE = ("the scores have no oracle role (1 correct / 0 wrong against the reference answer): no pair is known "
             "right or wrong")

# (method, seed) → iteration → prompt → (oracle verdicts of responses 0 and 1, C); every pair is 0 chosen over 1.
PAIRS = {
    ("cream", 0): {1: {"a": ((1, 0), 0.9), "b": ((0, 1), 0.6), "c": ((1, 0), 0.4), "d": ((1, 1), 0.8)},
                   2: {"e": ((0, 1), 0.2), "f": ((1, 0), 0.7), "g": ((1, 0), 0.2)}},
    ("cream", 1): {1: {"h": ((1, 0), 0.8), "i": ((0, 1), 0.1), "j": ((0, 1), 0.9), "k": ((1, 0), 0.5)}},
    ("srlm", 0): {1: {"a": ((1, 0), 0.9), "b": ((0, 1), 0.3)}},  # its scores carry no oracle role
}
# by hand, per run-iteration: right, wrong, ties, AUC of C, (right, wrong) at C ≥ ½, (right, wrong) at C < ½
# cream 0 / 1: right C {0.9, 0.4} vs wrong {0.6}: 1 + 0 of 2 → 0.5
# cream 0 / 2: right {0.7, 0.2} vs wrong {0.2}: 1 + ½ of 2 → 0.75
# cream 1 / 1: right {0.8, 0.5} vs wrong {0.1, 0.9}: 0.8 > 0.1, 0.5 > 0.1 of 4 → 0.5
HAND = {("cream (seed 0)", 1): (2, 1, 1, 0.5, (1, 1), (1, 0)),
        ("cream (seed 0)", 2): (2, 1, 0, 0.75, (1, 0), (1, 1)),
        ("cream (seed 1)", 1): (2, 2, 0, 0.5, (2, 1), (0, 1))}


def scores_table(pairs: dict, oracle: bool) -> pa.Table:
    """current and previous rewards (response 0 above 1), and the oracle's verdicts where ``oracle``."""
    rows = []
    for p, (verdicts, _) in pairs.items():
        by_role = {"current": (2.0, 1.0), "previous": (1.5, 0.5), **({"oracle": verdicts} if oracle else {})}
        for role, values in by_role.items():
            rows += [{"prompt_id": p, "response_idx": i, "scorer": role, "model": role, "ref_model": None,
                      "logp": -1.0, "ref_logp": None, "n_tokens": 3, "reward": float(v),
                      "reward_kind": "oracle" if role == "oracle" else "dpo", "judge_text": None, "confidence": None}
                     for i, v in enumerate(values)]
    return pa.Table.from_pylist(rows, schema=schemas.get("scores").arrow)


def preferences_table(pairs: dict, t: int) -> pa.Table:
    """One schema-valid pair per prompt, response 0 chosen over 1, each with its hand-chosen C."""
    msg = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    rows = [{"prompt_id": p, "prompt": msg(f"question {p}"), "chosen": msg("zero"), "rejected": msg("one"),
             "chosen_idx": 0, "rejected_idx": 1, "iteration": t, "n_responses": 2, "rewards": [2.0, 1.0],
             "prev_rewards": [1.5, 0.5], "ranks": [0, 1], "prev_ranks": [0, 1], "kendall_tau": 2 * c - 1,
             "consistency": c, "consistency_method": "kendall", "weight": c, "model": f"M{t}"}
            for p, (_, c) in pairs.items()]
    return pa.Table.from_pylist(rows, schema=schemas.get("preferences").arrow)


def make_labeled_run(root, method: str, seed: int, oracle: bool, name: str):
    run = make_run(root, method, seed, name=name)
    for t, pairs in PAIRS[method, seed].items():
        io.write_table(scores_table(pairs, oracle and method != "srlm"), run / f"iter-{t}" / "scores", "scores")
        io.write_table(preferences_table(pairs, t), run / f"iter-{t}" / "preferences", "preferences")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("premise")
    return {oracle: [make_labeled_run(root, m, s, oracle, f"{m}-{s}-{'oracle' if oracle else 'plain'}")
                     for m, s in PAIRS] for oracle in (True, False)}


def hand_pairs(keys) -> tuple[np.ndarray, np.ndarray]:
    """(C, right?) of the informative (non-tie) pairs of the given (method, seed, iteration)s."""
    c, right = [], []
    for m, s, t in keys:
        for verdicts, value in PAIRS[m, s][t].values():
            if verdicts[0] != verdicts[1]:
                c.append(value)
                right.append(verdicts[0] > verdicts[1])
    return np.array(c), np.array(right)


def independent_auc(c: np.ndarray, right: np.ndarray) -> float:
    u = stats.mannwhitneyu(c[right], c[~right]).statistic
    auc = roc_auc_score(right, c)
    assert u / (right.sum() * (~right).sum()) == pytest.approx(auc)
    return auc


def test_rows_per_run_and_iteration_by_hand(runs):
    from cream_data.reports.study import compare_runs

    found = compare_runs(runs[True])["premise"]
    keyed = {(r["run"], r["iteration"]): r for r in found["rows"]}
    assert list(keyed) == [("srlm (seed 0)", 1), ("cream (seed 0)", 1), ("cream (seed 0)", 2), ("cream (seed 1)", 1)]
    assert keyed["srlm (seed 0)", 1] == {"run": "srlm (seed 0)", "method": "srlm", "iteration": 1,
                                         "path": str(runs[True][2] / "iter-1" / "preferences"), "absent": NO_ORACLE,
                                         "pairs": 2}
    for (label, t), (right, wrong, ties, auc, high, low) in HAND.items():
        r = keyed[label, t]
        assert (r["right"], r["wrong"], r["ties"], r["absent"]) == (right, wrong, ties, None)
        c_auc = r["auc"][0]
        assert c_auc["score"] == "C" and c_auc["auc"] == pytest.approx(auc)
        seed = int(label[-2])
        assert c_auc["auc"] == pytest.approx(independent_auc(*hand_pairs([("cream", seed, t)])))
        assert c_auc["auc_ci_low"] <= c_auc["auc"] <= c_auc["auc_ci_high"]
        assert [(g["right"], g["wrong"]) for g in r["by_c"]] == [high, low]


def test_pooled_per_method_over_seeds_and_iterations(runs):
    from cream_data.reports.study import compare_runs

    (pooled,) = compare_runs(runs[True])["premise"]["pooled"]  # srlm has nothing measurable to pool
    assert pooled["method"] == "cream" and pooled["runs"] == ["cream (seed 0)", "cream (seed 1)"]
    assert pooled["iterations"] == [["cream (seed 0)", 1], ["cream (seed 0)", 2], ["cream (seed 1)", 1]]
    assert (pooled["right"], pooled["wrong"], pooled["ties"]) == (6, 4, 1)
    # right {0.9, 0.4, 0.7, 0.2, 0.8, 0.5} vs wrong {0.6, 0.2, 0.1, 0.9}: wins 3.5 + 2 + 3 + 1.5 + 3 + 2 of 24
    c_auc = pooled["auc"][0]
    assert c_auc["auc"] == pytest.approx(15 / 24)
    assert c_auc["auc"] == pytest.approx(independent_auc(*hand_pairs([("cream", 0, 1), ("cream", 0, 2),
                                                                      ("cream", 1, 1)])))
    assert c_auc["prompts"] == 10  # prompts are told apart by run and iteration
    assert c_auc["auc_ci_low"] <= c_auc["auc"] <= c_auc["auc_ci_high"]


def test_the_rendered_section_and_study_json(runs, tmp_path):
    from cream_data.reports.study import write_study

    result = write_study(runs[True], tmp_path / "study")
    saved = json.loads((tmp_path / "study" / "study.json").read_text())["premise"]
    assert [(r["run"], r["iteration"]) for r in saved["rows"]][1:] == list(HAND)
    section = result.markdown.split(f"## {premise_report.TITLE}")[1].split("\n## ")[0]
    assert "| run | iteration | right | wrong | ties | AUC of C [95% CI] | pair accuracy C ≥ ½ | " \
           "pair accuracy C < ½ |" in section
    ci = {(r["run"], r["iteration"]): r["auc"][0] for r in saved["rows"] if not r.get("absent")}
    bounds = lambda a: f"[{a['auc_ci_low']:.3f}, {a['auc_ci_high']:.3f}]"  # noqa: E731
    expected = [f"| cream (seed 0) | 1 | 2 | 1 | 1 | 0.500 {bounds(ci['cream (seed 0)', 1])} | 50.0% (1/2) | "
                f"100.0% (1/1) |",
                f"| cream (seed 0) | 2 | 2 | 1 | 0 | 0.750 {bounds(ci['cream (seed 0)', 2])} | 100.0% (1/1) | "
                f"50.0% (1/2) |",
                f"| cream (seed 1) | 1 | 2 | 2 | 0 | 0.500 {bounds(ci['cream (seed 1)', 1])} | 66.7% (2/3) | "
                f"0.0% (0/1) |",
                f"| cream (pooled) | all (3 run-iterations) | 6 | 4 | 1 | {15 / 24:.3f} "
                f"{bounds(saved['pooled'][0]['auc'][0])} | 66.7% (4/6) | 50.0% (2/4) |"]
    for row in expected:
        assert row in section, section
    assert f"No premise table for srlm (seed 0) iteration 1: {NO_ORACLE}." in section
    assert premise_report.NOTE in section and "pooled prompts" in section


def test_without_oracle_scores_one_line_and_no_table(runs, tmp_path):
    from cream_data.reports.study import write_study

    result = write_study(runs[False], tmp_path / "study")
    saved = json.loads((tmp_path / "study" / "study.json").read_text())["premise"]
    assert saved["pooled"] == [] and all(r["absent"] == NO_ORACLE for r in saved["rows"])
    section = result.markdown.split(f"## {premise_report.TITLE}")[1].split("\n## ")[0]
    assert section.strip() == (f"No premise table for srlm (seed 0) iteration 1; cream (seed 0) iterations 1, 2; "
                               f"cream (seed 1) iteration 1: {NO_ORACLE}.")
    assert "| run | iteration |" not in result.markdown and premise_report.NOTE not in result.markdown
