"""Which C a pair trains with: the scope (dataset: the iteration's mean C, the paper's one C of Eq. 3.7 and the
default; prompt: each prompt's own) and the clip at 1/2 (``clip_c``, off by default), pinned on a hand-worked
3-prompt example, through the label stage, over a sharded labeling, and in what `cream run --plan`/`--check` say."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from scipy.stats import kendalltau, rankdata

from cream_data.rewards import dpo
from cream_data.rewards.dpo import scoped_weights
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.spec import PairingSpec
from cream_data.stages.label import label
from cream_data.stages.label_config import LabelConfig
from cream_data.tables import io
from cream_data.tables.fingerprint import shard_mask
from cream_data.tables.shard import Shard
from cream_train.prefs import weights_for
from tests.support import REPO
from tests.support.cli import CPU_ONLY, assert_user_error
from tests.support.pairing import make_tables
from tests.support.runs import write_tiny_run_config
from tests.support.tables import responses_table

# Three prompts, three responses each, rewarded by two scorers: the pair-picking M_t (current) and M_{t-1}
# (previous). C = (tau + 1) / 2 of Kendall's tau between the two rankings; tau = (concordant - discordant) / 3 over
# the response pairs (0,1), (0,2), (1,2).
CURRENT = [[3.0, 2.0, 1.0],   # p0: chosen 0, rejected 2
           [1.0, 3.0, 2.0],   # p1: chosen 1, rejected 0
           [1.0, 2.0, 3.0]]   # p2: chosen 2, rejected 0
PREVIOUS = [[3.0, 2.0, 1.0],  # p0: the same order: 3 concordant, tau = 1, C = 1
            [2.0, 1.0, 3.0],  # p1: (0,1) cur 1<3, prev 2>1 discordant; (0,2) 1<2, 2<3 concordant;
                              #     (1,2) 3>2, 1<3 discordant: tau = (1 - 2)/3 = -1/3, C = 1/3
            [3.0, 2.0, 1.0]]  # p2: the reverse order: 3 discordant, tau = -1, C = 0
TAU = [1.0, -1 / 3, -1.0]
C = [1.0, 1 / 3, 0.0]
# The weights (the preferences' `weight` column), by scope and clip:
#   dataset: the mean C, (1 + 1/3 + 0) / 3 = 4/9, every pair   | clipped: 4/9 < 1/2, so 1/2 every pair
#   prompt:  each its own, 1, 1/3, 0                           | clipped: 1, 1/2, 1/2
WEIGHTS = {("dataset", False): [4 / 9] * 3, ("dataset", True): [0.5] * 3,
           ("prompt", False): [1.0, 1 / 3, 0.0], ("prompt", True): [1.0, 0.5, 0.5]}
# What training weighs each pair by (cream_train/prefs.weights_for, the trainer's own call): `cream` the weight
# column; `cream-avg` the table's mean weight (of the clipped weights when they were clipped: (1 + 1/2 + 1/2) / 3).
CREAM_AVG = {("dataset", False): 4 / 9, ("dataset", True): 0.5, ("prompt", False): 4 / 9, ("prompt", True): 2 / 3}
CASES = sorted(WEIGHTS)


def test_docstring_examples():
    assert doctest.testmod(dpo).failed == 0


def test_the_hand_worked_taus_are_scipys():
    for cur, prev, tau in zip(CURRENT, PREVIOUS, TAU):
        assert kendalltau(rankdata(cur), rankdata(prev)).statistic == pytest.approx(tau, abs=1e-12)


@pytest.mark.parametrize("scope, clip", CASES)
def test_training_weights_of_the_hand_worked_example(scope, clip):
    table, summary = build_preferences(*make_tables(CURRENT, PREVIOUS), PairingSpec(scope=scope, clip_c=clip))
    assert table["prompt_id"].to_pylist() == ["p0000", "p0001", "p0002"]
    assert [(r["chosen_idx"], r["rejected_idx"]) for r in table.to_pylist()] == [(0, 2), (1, 0), (2, 0)]
    assert table["kendall_tau"].to_pylist() == pytest.approx(TAU, abs=1e-12)
    assert table["consistency"].to_pylist() == pytest.approx(C, abs=1e-12)  # the measured C, never clipped
    assert table["weight"].to_pylist() == pytest.approx(WEIGHTS[scope, clip], abs=1e-12)
    assert weights_for(table, "cream") == pytest.approx(WEIGHTS[scope, clip], abs=1e-12)
    assert weights_for(table, "cream-avg") == pytest.approx([CREAM_AVG[scope, clip]] * 3, abs=1e-12)
    assert weights_for(table, "dpo") == [1.0] * 3
    assert summary.scope == scope and summary.c_mean == pytest.approx(4 / 9)  # C before the scope and the clip
    # the same numbers from the function pairing uses, on the C column alone
    assert scoped_weights(np.array(C), scope=scope, clip_c=clip).tolist() == pytest.approx(WEIGHTS[scope, clip])
    if scope == "prompt":  # `sample`, the scope's name in the command contract, is the same per-prompt C
        older, _ = build_preferences(*make_tables(CURRENT, PREVIOUS), PairingSpec(scope="sample", clip_c=clip))
        assert older["weight"].to_pylist() == pytest.approx(WEIGHTS[scope, clip], abs=1e-12)


def test_the_default_is_the_papers_one_c_unclipped():
    assert (PairingSpec().scope, PairingSpec().clip_c) == ("dataset", False)
    assert (LabelConfig().scope, LabelConfig().clip_c) == ("dataset", False)
    table, _ = build_preferences(*make_tables(CURRENT, PREVIOUS))
    assert table["weight"].to_pylist() == pytest.approx([4 / 9] * 3)  # below 1/2, trained as it is


def test_the_label_stage_pairs_the_hand_made_tables_by_scope_and_clip(tmp_path, cli):
    """`cream label RESPONSES --scores DIR` (the label stage's re-pairing: no model) with the default, --scope
    prompt and --clip-c: the stored weights and the settings the preferences manifest records."""
    responses, scores = make_tables(CURRENT, PREVIOUS)
    resp = io.write_table(responses, tmp_path / "responses", "responses")
    io.write_table(scores, tmp_path / "lab" / "scores", "scores")
    for (scope, clip), flags in [(("dataset", False), []), (("prompt", False), ["--scope", "prompt"]),
                                 (("dataset", True), ["--clip-c"]),
                                 (("prompt", True), ["--scope", "prompt", "--clip-c"])]:
        out = tmp_path / f"{scope}-{clip}"
        r = cli("label", resp, "--scores", tmp_path / "lab", "--out", out, *flags)
        assert r.code == 0, r
        prefs = io.read_table(out / "preferences", "preferences")
        assert prefs["weight"].to_pylist() == pytest.approx(WEIGHTS[scope, clip], abs=1e-12), flags
        manifest = json.loads((out / "preferences" / "_manifest.json").read_text())
        assert (manifest["config"]["scope"], manifest["config"]["clip_c"]) == (scope, clip)


def test_a_sharded_labeling_weighs_by_the_mean_over_every_shard(tmp_path, tiny_model, tiny_model_b):
    """`cream label --shard i/k` (what `cream run` starts with label.data_parallel k): the shards score their own
    prompts, and the pairs are formed once, from every shard's scores, so the dataset C is the mean over the whole
    iteration's pairs, not a shard's. The table equals an unsharded labeling's."""
    resp = io.write_table(responses_table(n_prompts=8, n=3, seed=5), tmp_path / "responses", "responses")
    cfg = LabelConfig(model=str(tiny_model), ref=str(tiny_model_b), prev_model=str(tiny_model_b), iteration=1)
    first = label(resp, cfg, tmp_path / "sharded", shard=(0, 2))
    assert first.pairing is None and not (tmp_path / "sharded" / "preferences").exists()  # waits for shard 1
    last = label(resp, cfg, tmp_path / "sharded", shard=(1, 2))
    sharded = io.read_table(tmp_path / "sharded" / "preferences", "preferences")
    c = np.array(sharded["consistency"].to_pylist())
    assert last.pairing.pairs == sharded.num_rows >= 4 and len(set(c.round(12))) > 1  # C differs across prompts
    assert sharded["weight"].to_pylist() == pytest.approx([c.mean()] * len(c), abs=1e-12)
    in_shard = [shard_mask(sharded["prompt_id"], Shard(i, 2)).to_numpy(zero_copy_only=False) for i in (0, 1)]
    assert all(m.any() for m in in_shard)  # both shards formed pairs; a shard's own mean is not what trains
    assert any(abs(c[m].mean() - c.mean()) > 1e-9 for m in in_shard)
    label(resp, cfg, tmp_path / "whole")
    whole = io.read_table(tmp_path / "whole" / "preferences", "preferences")
    for column in ("prompt_id", "chosen_idx", "rejected_idx"):
        assert whole[column].equals(sharded[column]), column
    for column in ("consistency", "weight"):
        assert whole[column].to_pylist() == pytest.approx(sharded[column].to_pylist(), abs=1e-12), column


@pytest.mark.parametrize("args, needles", [
    (["--clip-c=maybe"], ["--clip-c", "does not take a value"]),
    (["--scope", "pair"], ["--scope: got 'pair'", "expected one of dataset, prompt, sample"]),
])
def test_bad_label_values_are_one_line_errors(tmp_path, cream_exe, tiny_model, args, needles):
    resp = io.write_table(responses_table(2, 2), tmp_path / "responses", "responses")
    r = cream_exe("label", resp, "--model", tiny_model, "--out", tmp_path / "lab", *args, env=CPU_ONLY)
    assert_user_error(r, *needles)
    assert not (tmp_path / "lab").exists()


def test_a_bad_clip_c_in_a_run_config_is_one_line(tmp_path, cream_exe):
    cfg = write_tiny_run_config(tmp_path, name="bad", label={"clip_c": "sometimes"})
    r = cream_exe("run", cfg, "--check", env=CPU_ONLY)
    assert_user_error(r, "label.clip_c", "sometimes")
    assert not (tmp_path / "bad").exists()


def test_plan_and_check_say_the_c_method_cream_trains_with(tmp_path, cream_exe):
    """examples/demo.yaml (method cream, defaults): each DPO training stage of the plan, and the --check line, say
    it trains with the iteration's mean C."""
    said = "C = dataset mean of (tau+1)/2 over the iteration's pairs (current vs previous rankings)"
    r = cream_exe("run", REPO / "examples" / "demo.yaml", "--plan", "--out", tmp_path / "demo", cwd=REPO, env=CPU_ONLY)
    assert r.code == 0, r
    lines = {line[8:].split()[0]: line for line in r.out.splitlines() if line[:1].isalpha() and line[8:].strip()}
    assert [name for name, line in lines.items() if said in line] == ["train-M2", "train-M3"]
    assert said not in lines["train-M1"]  # SFT trains with no C
    r = cream_exe("run", REPO / "examples" / "demo.yaml", "--check", "--out", tmp_path / "demo", cwd=REPO, env=CPU_ONLY)
    assert r.code == 0, r
    assert r.out.rstrip().splitlines()[-1].endswith("; " + said)
    assert "  scope: dataset\n  clip_c: false\n" in r.out
    assert not (tmp_path / "demo").exists()


def test_the_plan_says_each_prompts_own_c_and_the_clip_when_set(tmp_path, cream_exe):
    for method, label_keys, said in [
        ("cream", {"scope": "prompt", "clip_c": True},
         "C = each prompt's own (tau+1)/2 raised to 1/2 where below (current vs previous rankings)"),
        ("cream", {"clip_c": True},
         "C = dataset mean of (tau+1)/2 over the iteration's pairs, raised to 1/2 if below (current vs previous"),
        ("scir", {}, "C = each prompt's own (tau+1)/2 (current vs judge rankings, pairs kept where judge agrees)"),
        ("cream-prompt", {}, "C = each prompt's own (tau+1)/2 (current vs previous rankings)"),
        ("cream-prompt", {"scope": "dataset"},
         "C = dataset mean of (tau+1)/2 over the iteration's pairs (current vs previous rankings)"),
        ("cream-no-rc", {}, "C = 1 (plain DPO)"),
        ("srlm", {}, "C = 1 (plain DPO)"),
    ]:
        cfg = write_tiny_run_config(tmp_path, name=f"{method}-{len(label_keys)}", method=method, label=label_keys)
        r = cream_exe("run", cfg, "--plan", env=CPU_ONLY)
        assert r.code == 0, r
        train = [line for line in r.out.splitlines() if line[8:].split()[:1] == ["train-M2"]]
        assert len(train) == 1 and said in train[0], (method, label_keys, train)
