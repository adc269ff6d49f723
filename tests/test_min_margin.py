"""`cream label --min-margin X` (label setting ``min_margin``): a pair whose reward margin, chosen's minus rejected's,
is below X is skipped and counted as ``min_margin``; checked on a hand-worked table, through the console script, on
a labeling by the tiny model, and in a run config."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import schemas
from cream_data.errors import CreamError
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.spec import PairingSpec
from cream_data.stages.label import label
from cream_data.stages.label_config import LabelConfig
from cream_data.tables import io
from tests.support.cli import assert_user_error, snapshot
from tests.support.tables import responses_table

# Per prompt: (response texts, current rewards, previous rewards). Worked out by hand, min_margin 0.5:
#   p0: chosen 1 (0.9), rejected 0 (0.1): margin 0.8, kept. Ranks [3, 1, 2] vs previous [3, 2, 1]: of the response
#       pairs (0,1), (0,2), (1,2) only (1,2) is ordered apart, tau = 1/3, C = 2/3.
#   p1: chosen 1 (0.6), rejected 0 (0.4): margin 0.2 < 0.5, skipped as min_margin (its C would be 0: reversed).
#   p2: chosen 0 (1.0), rejected 1 (0.5): margin 0.5, not below 0.5: kept; previous in the same order, C = 1.
#   p3: all equal (2.0, 2.0): all_equal comes first.
#   p4: one answer twice, rewarded 0.0 and 0.3: no_margin comes first (its margin 0.3 is below 0.5 too).
HAND = {"p0": (["a", "b", "c"], [0.1, 0.9, 0.5], [0.0, 1.0, 2.0]),
        "p1": (["a", "b", "c"], [0.4, 0.6, 0.5], [1.0, 0.0, 0.5]),
        "p2": (["a", "b", "c"], [1.0, 0.5, 0.75], [3.0, 1.0, 2.0]),
        "p3": (["a", "b"], [2.0, 2.0], [1.0, 2.0]),
        "p4": (["same", "same"], [0.0, 0.3], [0.0, 1.0])}


def hand_tables() -> tuple[pa.Table, pa.Table]:
    resp, scores = [], []
    for pid, (texts, cur, prev) in HAND.items():
        for i, text in enumerate(texts):
            resp.append({"prompt_id": pid, "prompt": [{"role": "user", "content": f"question {pid}"}],
                         "response_idx": i, "response": f"{pid} {text}" if text != "same" else "same", "model": "M2",
                         "iteration": 2, "seed": 1, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8,
                         "finish_reason": "stop", "n_tokens": 3})
            for scorer, reward in (("current", cur[i]), ("previous", prev[i])):
                scores.append({"prompt_id": pid, "response_idx": i, "scorer": scorer, "model": scorer,
                               "ref_model": None, "logp": -1.0, "ref_logp": None, "n_tokens": 3, "reward": reward,
                               "reward_kind": "dpo", "judge_text": None, "confidence": None})
    return (pa.Table.from_pylist(resp, schema=schemas.get("responses").arrow),
            pa.Table.from_pylist(scores, schema=schemas.get("scores").arrow))


def test_hand_worked_table():
    responses, scores = hand_tables()
    table, summary = build_preferences(responses, scores, PairingSpec(scope="dataset", min_margin=0.5))
    rows = {r["prompt_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["p0", "p2"]
    assert (rows["p0"]["chosen_idx"], rows["p0"]["rejected_idx"]) == (1, 0)
    assert (rows["p2"]["chosen_idx"], rows["p2"]["rejected_idx"]) == (0, 1)
    assert rows["p0"]["consistency"] == pytest.approx(2 / 3) and rows["p2"]["consistency"] == 1.0
    # scope dataset: the mean C over the pairs kept, p1's C = 0 is not in it
    assert [rows[p]["weight"] for p in ("p0", "p2")] == pytest.approx([5 / 6, 5 / 6])
    assert summary.skipped == {"n_lt_2": 0, "nonfinite_reward": 0, "all_equal": 1, "missing_prev": 0,
                               "disagree": 0, "no_margin": 1, "min_margin": 1}
    assert summary.pairs == 2 and summary.margin_min == 0.5 and summary.margin_mean == pytest.approx(0.65)
    # without the option: p1 pairs, the summary has no min_margin key, the dataset weight is (2/3 + 0 + 1) / 3
    table, summary = build_preferences(responses, scores, PairingSpec(scope="dataset"))
    assert table["prompt_id"].to_pylist() == ["p0", "p1", "p2"] and "min_margin" not in summary.skipped
    assert table["weight"].to_pylist() == pytest.approx([5 / 9] * 3)
    # X = 0 skips nothing (a margin is never negative); X above every margin skips every prompt that would pair
    assert build_preferences(responses, scores, PairingSpec(min_margin=0.0))[0].num_rows == 3
    assert build_preferences(responses, scores, PairingSpec(min_margin=0.81))[1].skipped["min_margin"] == 3


def test_through_the_console_script(tmp_path, cream_exe):
    """Re-pairing the hand-worked scores with `cream label --scores DIR --min-margin 0.5` (no model is loaded)."""
    responses, scores = hand_tables()
    resp = io.write_table(responses, tmp_path / "responses", "responses")
    io.write_table(scores, tmp_path / "lab" / "scores", "scores")
    r = cream_exe("label", resp, "--scores", tmp_path / "lab", "--out", tmp_path / "out", "--min-margin", "0.5",
                  "--scope", "dataset")
    assert r.code == 0, r
    assert "pairs 2 of 5 prompts; skipped: all_equal 1, no_margin 1, min_margin 1;" in r.out
    prefs = io.read_table(tmp_path / "out" / "preferences", "preferences")
    assert prefs["prompt_id"].to_pylist() == ["p0", "p2"] and prefs["weight"].to_pylist() == pytest.approx([5 / 6] * 2)
    manifest = json.loads((tmp_path / "out" / "preferences" / "_manifest.json").read_text())
    assert manifest["summary"]["skipped"]["min_margin"] == 1 and manifest["config"]["min_margin"] == 0.5


@pytest.mark.parametrize("value, needles", [
    ("-0.5", ["--min-margin: got -0.5", "expected a finite number >= 0 or unset"]),
    ("nan", ["--min-margin: got nan", "expected a finite number >= 0"]),
    ("abc", ["invalid value for '--min-margin'", "a valid number"]),
])
def test_bad_values_are_one_line_errors(tmp_path, cream_exe, tiny_model, value, needles):
    resp = io.write_table(responses_table(2, 2), tmp_path / "responses", "responses")
    before = snapshot(tmp_path)
    r = cream_exe("label", resp, "--model", tiny_model, "--out", tmp_path / "lab", "--min-margin", value)
    assert_user_error(r, *needles)
    assert snapshot(tmp_path) == before


def test_a_labeling_skips_the_pairs_below_the_margin(tmp_path, tiny_model, tiny_model_b):
    """The tiny model's DPO rewards: the pairs kept with a margin are those of a labeling without one whose margin,
    recomputed from the scores table, is at least X."""
    resp = io.write_table(responses_table(n_prompts=8, n=3, seed=4), tmp_path / "responses", "responses")
    plain = label(resp, LabelConfig(model=str(tiny_model), ref=str(tiny_model_b)), tmp_path / "plain")
    scores = io.read_table(tmp_path / "plain" / "scores", "scores").to_pylist()
    reward = {(s["prompt_id"], s["response_idx"]): s["reward"] for s in scores if s["scorer"] == "current"}
    prefs = io.read_table(tmp_path / "plain" / "preferences", "preferences").to_pylist()
    margins = {p["prompt_id"]: reward[(p["prompt_id"], p["chosen_idx"])] - reward[(p["prompt_id"], p["rejected_idx"])]
               for p in prefs}
    x = float(np.median(list(margins.values())))
    cut = label(resp, LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), min_margin=x), tmp_path / "cut")
    kept = io.read_table(tmp_path / "cut" / "preferences", "preferences")["prompt_id"].to_pylist()
    assert kept == sorted(p for p, m in margins.items() if m >= x) and 0 < len(kept) < len(margins)
    assert cut.pairing.skipped["min_margin"] == len(margins) - len(kept)
    assert "min_margin" not in plain.pairing.skipped


def test_a_run_config_passes_it_to_the_label_stage(tmp_path):
    from cream_train.run.config import LabelSection, RunConfig
    from cream_train.run.launch import stage_argv
    from cream_train.run.sections import Stages

    def argv(cfg):
        return stage_argv("label", Stages(cfg, tmp_path).label(2, model="M2", ref="M1"), positional=["responses"])

    assert "--min-margin" not in argv(RunConfig(method="cream"))  # the default writes no flag
    given = argv(RunConfig(method="cream", label=LabelSection(min_margin=0.25)))
    assert given[given.index("--min-margin") + 1] == "0.25"
    with pytest.raises(CreamError, match="min_margin: got -1.0"):
        Stages(RunConfig(method="cream", label=LabelSection(min_margin=-1.0)), tmp_path).label(2, model="M2")


def test_a_run_made_before_the_option_keeps_its_label_fingerprint():
    """min_margin was added after runs existed: at its default it is no input of the label stage's fingerprint (a
    finished run is not redone), and set it is one (changing it redoes the labels)."""
    from cream_train.run.config import LabelSection
    from cream_train.run.sections import fingerprinted
    from cream_train.run.stage import inputs_fingerprint

    plain = fingerprinted(LabelSection())
    assert "min_margin" not in plain and "consistency" in plain
    set_ = fingerprinted(LabelSection(min_margin=0.5))
    assert set_["min_margin"] == 0.5 and {k: v for k, v in set_.items() if k != "min_margin"} == plain
    assert inputs_fingerprint(set_) != inputs_fingerprint(plain)
    assert inputs_fingerprint(fingerprinted(LabelSection(min_margin=0.25))) != inputs_fingerprint(set_)
