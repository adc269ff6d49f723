"""The pairing specification (cream_data/rewards/spec.py): one value built from the label settings, checked once with
every problem listed, the partner rule, the named skip reasons, and re-pairing recording exactly the spec's settings."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from cream_data.errors import CreamError
from cream_data.rewards.pairing import build_preferences
from cream_data.rewards.spec import (ALWAYS_COUNTED, PairingSpec, SkipReason, pairing_spec, partner_role,
                                     setting_names)
from cream_data.stages.label import pair_from_scores
from cream_data.stages.label_config import LabelConfig
from cream_data.tables import io
from tests.support.pairing import make_tables


def test_skip_reasons_keep_their_keys_and_order():
    # the keys the preferences manifests' summaries have always used, in the order a prompt is tested against them
    assert [r.value for r in ALWAYS_COUNTED] == ["n_lt_2", "nonfinite_reward", "all_equal", "missing_prev", "disagree",
                                                 "no_margin"]
    assert [r.code for r in SkipReason] == list(range(1, 8)) and SkipReason.MIN_MARGIN.value == "min_margin"
    assert PairingSpec().skip_reasons == ALWAYS_COUNTED  # min_margin counted only where the option is set
    assert PairingSpec(min_margin=0.0).skip_reasons[-1] is SkipReason.MIN_MARGIN


def test_a_spec_lists_every_problem_at_once_with_flags():
    with pytest.raises(CreamError) as e:
        PairingSpec(partner=None, consistency="pearson", scope="avg", pair_policy="agree", min_margin=-0.5)
    assert str(e.value) == (
        "--consistency: got 'pearson', expected one of kendall, spearman, toporder; "
        "--scope: got 'avg', expected one of dataset, prompt, sample; "
        "--pair-policy: got 'agree', which needs two scorers to agree; give --consistency-between A,B (or "
        "--prev-model for current,previous); "
        "--min-margin: got -0.5, expected a finite number >= 0 or unset")
    with pytest.raises(CreamError, match=r"^--consistency-between: the two scorers must differ \(got 'judge' twice\)$"):
        PairingSpec(reward_scorer="judge", partner="judge")
    for bad in (float("nan"), float("inf"), "0.5", True):
        with pytest.raises(CreamError, match="--min-margin: got"):
            PairingSpec(min_margin=bad)
    assert PairingSpec(min_margin=0).min_margin == 0  # zero is allowed (it skips nothing: every margin is >= 0)


@pytest.mark.parametrize("reward, between, previous_scored, partner", [
    ("dpo", None, True, "previous"),          # CREAM's default
    ("dpo", None, False, None),               # no M_{t-1}: no C
    ("judge", None, True, None),              # SRLM: no C by default
    ("dpo", "none", True, None),
    ("dpo", "judge,current", False, "judge"),  # the pair-picking role may come second
    ("judge", "judge, previous", False, "previous"),
    ("rm", "current,rm", True, "current"),
])
def test_one_partner_rule(reward, between, previous_scored, partner):
    assert partner_role(reward, between, previous_scored=previous_scored) == partner
    cfg = LabelConfig(model="", reward=reward, consistency_between=between)
    spec = pairing_spec(cfg, previous_scored=previous_scored)
    assert spec == cfg.pairing(previous_scored) and spec.partner == partner


def test_the_spec_is_built_from_the_settings_of_its_names():
    assert setting_names() == ("reward", "consistency_between", "consistency", "scope", "clip_c", "pair_policy",
                               "min_margin")
    assert set(setting_names()) <= {f.name for f in fields(LabelConfig)}
    cfg = LabelConfig(model="m", prev_model="m0", reward="dpo", consistency="spearman", scope="prompt", clip_c=True,
                      pair_policy="both", min_margin=0.25)
    assert cfg.pairing() == PairingSpec(reward_scorer="current", partner="previous", consistency="spearman",
                                        scope="prompt", clip_c=True, pair_policy="both", min_margin=0.25)


def test_label_settings_name_the_problem_by_their_field():
    with pytest.raises(CreamError, match=r"min_margin: got -1, expected a finite number >= 0 or unset"):
        LabelConfig(model="m", min_margin=-1)
    # re-pairing (no model): whether CREAM's default partner exists is known from the stored scores only
    cfg = LabelConfig(model="", pair_policy="agree")
    with pytest.raises(CreamError, match="--pair-policy: got 'agree', which needs two scorers"):
        cfg.pairing(previous_scored=False)
    assert cfg.pairing(previous_scored=True).partner == "previous"


def test_repairing_records_every_setting_of_the_spec(tmp_path):
    """`cream label --scores`: the preferences manifest states the settings the pairs were made with, the ones the spec
    is built from (min_margin too), over the stored labeling's config."""
    responses, scores = make_tables([[0.1, 0.9, 0.5], [0.4, 0.6, 0.5]], [[0.0, 1.0, 2.0], [1.0, 0.0, 0.5]])
    resp = io.write_table(responses, tmp_path / "responses", "responses")
    io.write_table(scores, tmp_path / "lab" / "scores", "scores",
                   manifest_extra={"config": {"reward": "dpo", "consistency": "kendall", "batch_size": 3}})
    cfg = LabelConfig(model="", consistency="toporder", scope="dataset", min_margin=0.3)
    summary = pair_from_scores(resp, tmp_path / "lab", cfg, tmp_path / "re")
    manifest = json.loads((tmp_path / "re" / "preferences" / "_manifest.json").read_text())
    config = manifest["config"]
    assert {name: config[name] for name in setting_names()} == {
        "reward": "dpo", "consistency_between": None, "consistency": "toporder", "scope": "dataset",
        "clip_c": False, "pair_policy": "weight", "min_margin": 0.3}
    assert config["batch_size"] == 3 and config["rebuilt_from_scores"] == str(tmp_path / "lab" / "scores")
    # p0000: chosen 1, rejected 0, margin 0.9 - 0.1 = 0.8, kept; p0001: 0.6 - 0.4 = 0.2 < 0.3, skipped
    assert summary.pairs == 1 and manifest["summary"]["skipped"]["min_margin"] == 1
    table, again = build_preferences(responses, scores, cfg.pairing(previous_scored=True))
    assert again == summary and table.num_rows == 1
