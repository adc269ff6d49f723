"""One definition of each stage's settings (cream_data/settings.py): every field of every stage config is a flag of
the stage's command and a key of its `cream run` section, with the same default; a run config's keys reach the stage
configs the loop builds; a bad value is named by the YAML key or by the flag the user wrote."""

from __future__ import annotations

import ast
from dataclasses import MISSING, fields

import pytest
import typer
import yaml

from cli.main import app
from cli.options import flag
from cream_data.inputs.prompts_config import PromptsConfig
from cream_data.settings import default_of, user_fields
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.harness_config import HarnessConfig
from cream_data.stages.label_config import LabelConfig
from cream_data.stages.sample_config import SampleConfig
from cream_train.run import sections
from cream_train.config import DPOTrainConfig, SFTTrainConfig
from cream_train.run.config import RunConfig
from tests.support import REPO
from tests.support.cli import assert_user_error
from tests.support.runs import tiny_run_config, write_yaml

# command -> the settings dataclasses its options are derived from
COMMANDS = {"sample": (SampleConfig,), "label": (LabelConfig,), "eval": (EvalConfig, HarnessConfig),
            "train": (DPOTrainConfig, SFTTrainConfig), "prompts": (PromptsConfig,)}
# run config section -> its stage's settings
SECTIONS = {"sample": SampleConfig, "label": LabelConfig, "eval": EvalConfig, "train": DPOTrainConfig,
            "sft": SFTTrainConfig, "prompts": PromptsConfig}
# Options that are not settings: arguments' companions, outputs, sharding, re-pairing, the harness, the stage.
NOT_SETTINGS = {"out_dir", "shard", "overwrite", "scores", "harness", "stage", "help",
                "prompts", "responses", "data", "source", "model"}
# Where a command's default of a setting differs from the field's, and why.
CLI_DEFAULTS = {
    ("label", "model"): None,  # --model, or --scores DIR to re-pair stored scores without a model
    ("train", "data"): MISSING, ("train", "model"): MISSING, ("train", "out"): MISSING,  # required on the command line
    ("train", "lr"): None,  # each --stage's own default (1e-6 dpo, 2e-5 sft), said in the help
    ("eval", "batch_size"): None,  # 16 for the paper protocol, 8 with --harness, said in the help
}


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _cli_default(command: str, cls, f):
    if (command, f.name) in CLI_DEFAULTS:
        return CLI_DEFAULTS[command, f.name]
    value = default_of(f)
    return ",".join(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_setting_is_a_flag_of_its_command_with_the_same_default(command):
    params = {p.name: p for p in _command(command).params}
    for cls in COMMANDS[command]:
        for f in user_fields(cls):
            p = params.get(f.name) or (params.get("out_dir") if f.name == "out" else None)
            assert p is not None, f"{cls.__name__}.{f.name}: no option on `cream {command}`"
            if p.param_type_name == "option":
                assert flag(f) in p.opts, (f.name, p.opts)
            want = _cli_default(command, cls, f)
            if want is MISSING:
                assert p.required, f.name
            else:
                assert not p.required and p.default == want, (command, f.name, p.default, want)
            if f.metadata.get("choices") and p.param_type_name == "option":  # allowed values shown in --help
                assert all(c in p.metavar for c in f.metadata["choices"]), p.metavar
    settings = {f.name for cls in COMMANDS[command] for f in user_fields(cls)}
    extra = {n for n in params if n not in settings and n not in NOT_SETTINGS and n != "cream_ctx"}
    assert not extra, f"`cream {command}` options that are not settings of its config: {extra}"


def test_every_setting_is_a_key_of_its_run_section_with_the_same_default():
    run = RunConfig()
    for name, stage in SECTIONS.items():
        section = type(getattr(run, name))
        assert section.stage is stage
        keys = {f.name: f for f in fields(section)}
        assert set(sections.OWNED[name]) <= {f.name for f in fields(stage)}, "OWNED names a field the stage lacks"
        for f in user_fields(stage):
            if f.name in sections.OWNED[name]:
                assert f.name not in keys or f.name in section.extras, (name, f.name)  # the run fills it
                continue
            assert f.name in keys, f"{name}.{f.name}: a setting of {stage.__name__} missing from the run config"
            want = sections.METHOD_DECIDES.get(name, {}).get(f.name, default_of(f))  # None: the method decides
            assert default_of(keys[f.name]) == want, (name, f.name)
        stage_names = {f.name for f in fields(stage)}
        assert set(keys) - stage_names <= set(section.extras) | set(sections.OWNED[name]), name


def test_the_drifted_defaults_are_one_value_each():
    """`cream train` and `cream run` agreed on neither max_length nor the eval batch size; now each has one."""
    run = RunConfig()
    assert run.train.max_length == run.sft.max_length == DPOTrainConfig.max_length == 2048  # the paper's
    assert run.eval.batch_size == EvalConfig.batch_size == 16  # `cream eval`'s
    assert run.train.lora_r == 16 and run.train.report_to == "none" and run.eval.suffix == EvalConfig.suffix


def test_yaml_keys_reach_the_stage_configs_the_loop_builds(cream_exe, tmp_path):
    from cream_train.run.config import load_run_config
    from cream_train.run.sections import Stages

    cfg = tiny_run_config(run_dir=tmp_path / "run")  # the embedded model
    cfg["train"].update(report_to="tensorboard", lora_r=8, max_length=2048, gradient_checkpointing=True)
    cfg["eval"].update(suffix="Answer with one letter.")
    cfg["sample"].update(prompts_per_part=7)
    cfg["label"].update(max_batch_tokens=4096)
    path = write_yaml(tmp_path / "cfg.yaml", cfg)
    r = cream_exe("run", path, "--check")
    assert r.code == 0, r
    listed = yaml.safe_load(r.out.rsplit("\n", 1)[0])  # every setting as it will run
    assert (listed["train"]["report_to"], listed["train"]["lora_r"]) == ("tensorboard", 8)
    assert listed["eval"]["suffix"] == "Answer with one letter."

    run_cfg, _, table = load_run_config(path)
    stages = Stages(run_cfg, run_cfg.run_dir)  # what the loop builds each stage's config with
    train = stages.train(1, "M1-path")
    assert isinstance(train, DPOTrainConfig)
    assert (train.report_to, train.lora_r, train.max_length, train.gradient_checkpointing) == ("tensorboard", 8, 2048,
                                                                                               True)
    assert (train.model, train.method, train.seed, train.lr) == ("M1-path", "cream", 0, 1e-3)
    assert train.data.endswith("iter-1/preferences") and train.out.endswith("models/M2")
    ev = stages.eval(2)
    assert isinstance(ev, EvalConfig) and ev.suffix == "Answer with one letter." and ev.label == "M2"
    assert ev.tasks == ("arc_easy", "gsm8k") and ev.batch_size == 4
    assert stages.sample(2, "M2-path").prompts_per_part == 7
    assert stages.sample(2, "M2-path").seed == 2  # the run owns the seed: seed + t
    lab = stages.label(2, "M2-path", "M1-path", "M0-path")
    assert (lab.max_batch_tokens, lab.prev_model, lab.prev_ref, lab.iteration) == (4096, "M1-path", "M0-path", 2)


def test_bad_values_are_named_by_the_yaml_key(cream_exe, tmp_path):
    cfg = tiny_run_config(run_dir=tmp_path / "run")  # the embedded model
    cfg["train"].update(lora_r=0, report_to="mlflow")
    cfg["eval"].update(batch_size=0)
    cfg["sample"].update(tensor_parallel_size=0)
    cfg["sft"].update(lora_dropout=1.5)
    r = cream_exe("run", write_yaml(tmp_path / "cfg.yaml", cfg), "--check")
    assert_user_error(r, "5 problem(s)", "train.lora_r: got 0", "train.report_to: got 'mlflow'",
                      "eval.batch_size: got 0", "sample.tensor_parallel_size: got 0", "sft.lora_dropout: got 1.5")


@pytest.mark.parametrize("args,needles", [
    (["train", "d", "--model", "m", "--out", "o", "--lora-r", "0", "--report-to", "mlflow"],
     ["--lora-r: got 0", "--report-to: got 'mlflow'", "none, tensorboard, wandb"]),
    (["train", "d", "--model", "m", "--out", "o", "--stage", "sft", "--beta", "0.2"], ["--beta: only with --stage dpo"]),
    (["eval", "--model", "m", "--out", "o", "--batch-size", "0", "--extract", "paper"],
     ["--batch-size: got 0", "--extract: got 'paper'"]),
    (["sample", "p", "--model", "m", "--out", "o", "--tensor-parallel-size", "0"], ["--tensor-parallel-size: got 0"]),
    (["label", "r", "--model", "m", "--out", "o", "--prev-ref", "x"], ["--prev-ref: given without --prev-model"]),
])
def test_bad_values_are_named_by_the_flag(cream_exe, tmp_path, args, needles):
    r = cream_exe(*args, cwd=tmp_path)
    assert_user_error(r, *needles)
    assert list(tmp_path.iterdir()) == []


def test_help_still_says_what_each_setting_does(cream_exe):
    r = cream_exe("train", "--help", env={"COLUMNS": "200"})
    assert r.code == 0
    for needle in ("--lora-r", "LoRA rank", "[default: 16]", "--report-to", "tensorboard", "--logging-steps",
                   "1e-06 with --stage dpo", "only with --stage sft"):
        assert needle in r.out, needle


def test_vocab_is_pure_and_names_the_benchmarks():
    from cream_data import vocab
    from cream_data.inputs.prompts import BENCHMARKS

    tree = ast.parse((REPO / "cream_data" / "vocab.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in imports), "vocab imports nothing"
    assert tuple(BENCHMARKS) == vocab.TASKS
    assert set(vocab.REWARD_ROLE) == set(vocab.REWARDS) and set(vocab.REWARD_ROLE.values()) <= set(vocab.SCORER_ROLES)
    assert {loss for _, loss in vocab.RUN_METHODS.values()} <= set(vocab.TRAIN_METHODS)
