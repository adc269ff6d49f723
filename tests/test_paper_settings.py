"""The paper's settings: examples/paper.yaml, the long-pair policy, weight decay and gradient clipping, N = 5.

Long pairs are tested on real tiny training runs: a preferences table (stored log-probs from the tiny model) where
some pairs are longer than max_length, trained with `drop` and with `truncate`.
"""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from tests.support import REPO
from tests.support.cli import assert_user_error
from tests.support.example_configs import local_prompts, offline_copy
from tests.support.runs import tiny_run_config
from tests.support.training import PAIRS, WEIGHTS, make_preferences

PAPER = REPO / "examples" / "paper.yaml"
MAX_LENGTH = 64  # the short PAIRS are at most 50 templated tokens; each LONG pair has a side over 64
LONG = [
    ("Describe the sea.", "The sea is " + "very " * 40 + "big.", "Wet."),
    ("Describe the sky.", "Blue.", "The sky is " + "quite " * 40 + "high."),
    ("Describe a tree.", "A tree " + "grows " * 40, "A tree " + "stands " * 40),
]


# ------------------------------------------------------------------------------------------- examples/paper.yaml
def test_paper_yaml_validates_and_holds_the_papers_settings(cream_exe, shared_data, tmp_path):
    if not (PAPER.parents[2] / "shared" / "data").is_dir():
        pytest.skip("examples/paper.yaml reads ../shared/data beside the checkout, which is not there")
    r = cream_exe("run", offline_copy(PAPER, tmp_path, shared_data), "--check")  # its tasks from shared_data
    assert r.code == 0, r
    assert "valid" in r.out
    import yaml

    listed = yaml.safe_load(r.out.rsplit("\n", 1)[0])  # --check lists every setting as it will run
    assert listed["train"]["weight_decay"] == 0.01 and listed["train"]["long_pairs"] == "drop"
    assert listed["sample"]["n"] == 5 and listed["eval"]["max_new_tokens"] == 768

    from cream_train.run.config import load_run_config

    cfg, _, _ = load_run_config(PAPER, {"prompts": local_prompts(PAPER, shared_data)})
    assert cfg.method == "cream" and cfg.iterations == 2 and cfg.seed == 0
    assert cfg.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    s = cfg.sample
    assert (s.n, s.temperature, s.top_p, s.max_new_tokens) == (5, 0.8, 0.95, 768)
    t = cfg.train
    assert (t.beta, t.lr, t.epochs, t.warmup_ratio) == (0.1, 1e-6, 1.0, 0.1)
    assert t.batch_size * t.grad_accum == 32 and t.batch_size == 4
    assert (t.weight_decay, t.max_grad_norm, t.max_length, t.long_pairs, t.lora) == (0.01, 1.0, 2048, "drop", False)
    sft = cfg.sft
    assert (sft.lr, sft.epochs, sft.batch_size * sft.grad_accum) == (5e-6, 5.0, 32)
    assert "oasst" in sft.data
    assert (cfg.label.consistency, cfg.label.scope, cfg.label.clip_c) == ("kendall", "dataset", False)
    e = cfg.eval
    assert e.max_new_tokens == 768 and e.extract == "cream"
    assert list(e.tasks) == ["arc_easy", "arc_challenge", "openbookqa", "siqa", "gsm8k"]


def test_new_run_keys_are_checked_by_the_stage_configs(cream_exe, tiny_model, tmp_path):
    cfg = tiny_run_config(model=tiny_model, run_dir=tmp_path / "run")
    cfg["train"].update(weight_decay=-0.1, max_grad_norm=0, long_pairs="keep")
    cfg["sft"].update(max_grad_norm=float("nan"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = cream_exe("run", path, "--check")
    assert_user_error(r, "4 problem(s)", "train.weight_decay: got -0.1", "train.max_grad_norm: got 0",
                      "train.long_pairs: got 'keep'", "sft.max_grad_norm: got nan")


# ------------------------------------------------------------------------------------------- long pairs
@pytest.fixture(scope="module")
def long_prefs(tiny_model, tmp_path_factory):
    """The 8 short PAIRS and 3 LONG ones (chosen, rejected, both over MAX_LENGTH), stored log-probs included."""
    return make_preferences(tmp_path_factory.mktemp("long") / "preferences", tiny_model, pairs=PAIRS + LONG,
                            weights=WEIGHTS + [0.9, 0.3, 0.6])


def long_cfg(tiny_model, data, out, **kw):
    from cream_train.config import DPOTrainConfig

    return DPOTrainConfig(data=str(data), model=str(tiny_model), out=str(out), batch_size=2, grad_accum=1,
                          epochs=1.0, max_length=MAX_LENGTH, warmup_ratio=0.0, lr=1e-3, **kw)


def test_the_fixture_has_exactly_the_long_pairs_it_claims(tiny_model, long_prefs):
    from cream_data.engines.models import load_tokenizer, resolve
    from cream_train import prefs

    table = prefs.load_preferences(long_prefs)
    lengths = prefs.token_lengths(table, load_tokenizer(resolve(str(tiny_model))))
    sides = [prefs.too_long(row, MAX_LENGTH) for row in lengths]
    assert sides == [None] * len(PAIRS) + ["chosen", "rejected", "chosen"]
    assert all(p < MAX_LENGTH for row in lengths for p, _ in row.values())  # no prompt alone fills max_length
    assert [prefs.too_long(row, None) for row in lengths] == [None] * len(lengths)


def test_drop_removes_long_pairs_counts_them_and_keeps_the_stored_reference(cli, tiny_model, long_prefs, tmp_path):
    from cream_train.train import optimizer_steps

    out = tmp_path / "m"
    r = cli("train", long_prefs, "--model", tiny_model, "--out", out, "--batch-size", "2", "--max-length",
            str(MAX_LENGTH), "--warmup-ratio", "0", "--long-pairs", "drop")
    assert r.code == 0, r
    warnings = [ln for ln in r.err.splitlines() if "warning:" in ln]
    assert len(warnings) == 1, r.err
    assert "dropped 3 of 11 pairs longer than max_length 64" in warnings[0]
    lineage = json.loads((out / "cream_lineage.json").read_text())
    assert lineage["reference"] == "stored"  # every kept pair fits: its stored log-prob is the full response's
    assert (lineage["pairs"], lineage["pairs_dropped_long"], lineage["pairs_truncated"]) == (8, 3, 0)
    assert lineage["metrics"]["pairs_dropped_long"] == 3 and lineage["config"]["long_pairs"] == "drop"
    assert lineage["metrics"]["global_step"] == optimizer_steps(8, 2, 1, 1, 1.0, None) == 4


def test_drop_trains_on_the_kept_pairs_only(tiny_model, long_prefs, tmp_path, built_trainers):
    from cream_train.train import optimizer_steps, train_dpo

    train_dpo(long_cfg(tiny_model, long_prefs, tmp_path / "m", long_pairs="drop"))
    (trainer,) = built_trainers
    assert sorted(trainer.train_dataset["prompt_id"]) == sorted(f"p{i}" for i in range(len(PAIRS)))
    assert trainer.state.global_step == optimizer_steps(8, 2, 1, 1, 1.0, None)
    assert trainer.reference_forwards == 0 and trainer.ref_model is None
    mean_c = [e["consistency/mean_C"] for e in trainer.state.log_history if "consistency/mean_C" in e]
    assert sum(mean_c) / len(mean_c) == pytest.approx(sum(WEIGHTS) / len(WEIGHTS))  # the dropped C's are gone


def test_truncate_trains_every_pair_with_a_computed_reference(tiny_model, long_prefs, tmp_path, caplog,
                                                               built_trainers):
    from cream_train.train import optimizer_steps, train_dpo

    with caplog.at_level(logging.WARNING, logger="cream.train"):
        res = train_dpo(long_cfg(tiny_model, long_prefs, tmp_path / "m", long_pairs="truncate"))
    assert "truncating 3 of 11 pairs longer than max_length 64" in caplog.text
    assert "computing reference log-probs" in caplog.text and "over --max-length 64" in caplog.text
    (trainer,) = built_trainers
    assert res.reference == "computed" and trainer.reference_forwards > 0
    assert len(trainer.train_dataset) == 11
    assert trainer.state.global_step == optimizer_steps(11, 2, 1, 1, 1.0, None) == 6
    assert (res.metrics["pairs"], res.metrics["pairs_dropped_long"], res.metrics["pairs_truncated"]) == (11, 0, 3)


def test_truncate_refuses_a_stored_reference_for_long_pairs(cli, tiny_model, long_prefs, tmp_path):
    r = cli("train", long_prefs, "--model", tiny_model, "--out", tmp_path / "m", "--max-length", str(MAX_LENGTH),
            "--long-pairs", "truncate", "--reference", "stored")
    assert_user_error(r, "cannot use the stored reference", "over --max-length 64")


def test_every_pair_dropped_is_one_line(cream_exe, tiny_model, tmp_path):
    data = make_preferences(tmp_path / "long", tiny_model, pairs=LONG, weights=[0.9, 0.3, 0.6])
    out = tmp_path / "m"
    r = cream_exe("train", data, "--model", tiny_model, "--out", out, "--max-length", str(MAX_LENGTH))
    assert_user_error(r, "all 3 pairs are longer than max_length 64", "--long-pairs drop", "nothing to train on")
    assert not out.exists() and not list(tmp_path.glob(".m.tmp-*"))


# ------------------------------------------------------------------------------------------- weight decay, clipping
def test_weight_decay_and_max_grad_norm_reach_trl_and_the_optimizer(tiny_model, long_prefs, tmp_path):
    from cream_train.train import build_dpo_trainer, prepare_dpo

    cfg = long_cfg(tiny_model, long_prefs, tmp_path / "m", weight_decay=0.01, max_grad_norm=0.5)
    trainer = build_dpo_trainer(cfg, prepare_dpo(cfg), tmp_path / "run")
    assert (trainer.args.weight_decay, trainer.args.max_grad_norm) == (0.01, 0.5)
    trainer.create_optimizer()
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.01, 0.0}  # norms and biases: none

    default = long_cfg(tiny_model, long_prefs, tmp_path / "d")
    trainer = build_dpo_trainer(default, prepare_dpo(default), tmp_path / "run-d")
    assert (trainer.args.weight_decay, trainer.args.max_grad_norm) == (0.0, 1.0)  # transformers' own defaults


def test_sft_passes_weight_decay_and_max_grad_norm(tiny_model, tmp_path, built_trainers):
    from cream_train.config import SFTTrainConfig
    from cream_train.train import train_sft
    from tests.support.training import make_sft

    train_sft(SFTTrainConfig(data=str(make_sft(tmp_path / "sft")), model=str(tiny_model), out=str(tmp_path / "m"),
                             max_steps=1, batch_size=2, weight_decay=0.02, max_grad_norm=0.25))
    (trainer,) = built_trainers
    assert (trainer.args.weight_decay, trainer.args.max_grad_norm) == (0.02, 0.25)
    config = json.loads((tmp_path / "m" / "cream_train_config.json").read_text())
    assert (config["weight_decay"], config["max_grad_norm"]) == (0.02, 0.25)


@pytest.mark.parametrize("args,needle", [
    (["--weight-decay", "-0.01"], "--weight-decay: got -0.01"),  # named by the flag the user wrote
    (["--weight-decay", "nan"], "--weight-decay: got nan"),
    (["--weight-decay", "inf"], "--weight-decay: got inf"),
    (["--max-grad-norm", "0"], "--max-grad-norm: got 0.0"),
    (["--max-grad-norm", "-1"], "--max-grad-norm: got -1.0"),
    (["--max-grad-norm", "nan"], "--max-grad-norm: got nan"),
    (["--long-pairs", "keep"], "--long-pairs: got 'keep'"),
    (["--stage", "sft", "--max-grad-norm", "inf"], "--max-grad-norm: got inf"),
    (["--stage", "sft", "--long-pairs", "truncate"], "--long-pairs: only with --stage dpo"),
])
def test_cli_refuses_bad_values(cli, tiny_model, long_prefs, tmp_path, args, needle):
    r = cli("train", long_prefs, "--model", tiny_model, "--out", tmp_path / "m", *args)
    assert_user_error(r, needle)
    assert not (tmp_path / "m").exists()


def test_defaults_and_edges():
    from cream_train.config import DPOTrainConfig, SFTTrainConfig

    d = DPOTrainConfig(data="d", model="m", out="o")
    assert (d.weight_decay, d.max_grad_norm, d.long_pairs) == (0.0, 1.0, "drop")
    s = SFTTrainConfig(data="d", model="m", out="o")
    assert (s.weight_decay, s.max_grad_norm) == (0.0, 1.0)
    edge = DPOTrainConfig(data="d", model="m", out="o", weight_decay=0.0, max_grad_norm=1e-6, long_pairs="truncate")
    assert edge.to_dict()["long_pairs"] == "truncate"


# ------------------------------------------------------------------------------------------- N = 5
def test_default_n_is_the_papers_five():
    import typer

    from cli.main import app
    from cream_data.stages.sample import SampleConfig
    from cream_train.run.config import RunConfig

    assert SampleConfig(model="m").n == 5
    assert RunConfig().sample.n == 5
    command = typer.main.get_command(app).commands["sample"]
    assert next(p for p in command.params if p.name == "n").default == 5
