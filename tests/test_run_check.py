"""`cream run CONFIG --check` refuses every value a stage would refuse, all problems in one line, writing nothing.

Each config runs through the installed console script (what users run); the stage commands given the same bad
value on the command line refuse it too, since the stage configs hold the rules.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support import DEMO_DATA
from tests.support.cli import assert_user_error, snapshot
from tests.support.runs import tiny_run_config, write_yaml


def check(cream_exe, tmp, path, *extra):
    """`cream run PATH --check`, asserting that nothing appeared or changed under tmp."""
    before = snapshot(tmp)
    r = cream_exe("run", path, "--check", *extra)
    assert snapshot(tmp) == before, "--check wrote to disk"
    return r


NAN, INF = float("nan"), float("inf")

# (id, {section: {key: value}} or {key: value}, needles)
BAD = [
    ("train-lr-negative", {"train": {"lr": -1}}, ["train.lr: got -1"]),
    ("train-lr-nan", {"train": {"lr": NAN}}, ["train.lr: got nan"]),
    ("train-lr-inf", {"train": {"lr": INF}}, ["train.lr: got inf"]),
    ("train-beta-0", {"train": {"beta": 0}}, ["train.beta: got 0"]),
    ("train-beta-nan", {"train": {"beta": NAN}}, ["train.beta: got nan"]),
    ("train-max-steps-0", {"train": {"max_steps": 0}}, ["train.max_steps: got 0"]),
    ("train-warmup-2", {"train": {"warmup_ratio": 2}}, ["train.warmup_ratio: got 2"]),
    ("train-epochs-0", {"train": {"epochs": 0}}, ["train.epochs: got 0"]),
    ("train-grad-accum-0", {"train": {"grad_accum": 0}}, ["train.grad_accum: got 0"]),
    ("train-batch-size-0", {"train": {"batch_size": 0}}, ["train.batch_size: got 0"]),
    ("train-max-length-0", {"train": {"max_length": 0}}, ["train.max_length: got 0"]),
    ("sft-lr-nan", {"sft": {"lr": NAN}}, ["sft.lr: got nan"]),
    ("sft-epochs-negative", {"sft": {"epochs": -1}}, ["sft.epochs: got -1"]),
    ("sft-grad-accum-0", {"sft": {"grad_accum": 0}}, ["sft.grad_accum: got 0"]),
    ("sft-max-steps-0", {"sft": {"max_steps": 0}}, ["sft.max_steps: got 0"]),
    ("sft-limit-0", {"sft": {"limit": 0}}, ["sft.limit: got 0"]),
    ("sample-n-0", {"sample": {"n": 0}}, ["sample.n: got 0"]),
    ("sample-temperature-negative", {"sample": {"temperature": -1}}, ["sample.temperature: got -1"]),
    ("sample-temperature-nan", {"sample": {"temperature": NAN}}, ["sample.temperature: got nan"]),
    ("sample-temperature-inf", {"sample": {"temperature": INF}}, ["sample.temperature: got inf"]),
    ("sample-top-p-3", {"sample": {"top_p": 3}}, ["sample.top_p: got 3"]),
    ("sample-engine", {"sample": {"engine": "llamacpp"}}, ["sample.engine: got 'llamacpp'"]),
    ("sample-batch-size-0", {"sample": {"batch_size": 0}}, ["sample.batch_size: got 0"]),
    ("sample-max-new-tokens-0", {"sample": {"max_new_tokens": 0}}, ["sample.max_new_tokens: got 0"]),
    ("label-engine", {"label": {"engine": "tgi"}}, ["label.engine: got 'tgi'"]),
    ("label-judge-tokens-0", {"label": {"judge_max_new_tokens": 0}}, ["label.judge_max_new_tokens: got 0"]),
    ("label-batch-size-0", {"label": {"batch_size": 0}}, ["label.batch_size: got 0"]),
    ("label-consistency", {"label": {"consistency": "pearson"}}, ["label.consistency: got 'pearson'"]),
    ("eval-max-new-tokens-0", {"eval": {"max_new_tokens": 0}}, ["eval.max_new_tokens: got 0"]),
    ("eval-batch-size-0", {"eval": {"batch_size": 0}}, ["eval.batch_size: got 0"]),
    ("eval-limit-0", {"eval": {"limit": 0}}, ["eval.limit: got 0"]),
    ("eval-unknown-task", {"eval": {"tasks": ["arc_easy", "mmlu"]}}, ["eval.tasks:", "mmlu"]),
    ("seed-negative", {"seed": -1}, ["seed: got -1"]),
    ("nodes-launcher", {"nodes": {"launcher": "slurm"}},
     ["nodes.launcher: got 'slurm', expected one of followers, srun"]),
    ("nodes-srun-rank", {"nodes": {"launcher": "srun", "num_machines": 2, "machine_rank": 1}},
     ["nodes.machine_rank: got 1 with nodes.launcher srun, which runs one `cream run` and no followers"]),
    ("nodes-start-timeout-0", {"nodes": {"start_timeout": 0}}, ["nodes.start_timeout: got 0.0, expected a finite"]),
    ("nodes-alive-timeout-nan", {"nodes": {"alive_timeout": NAN}}, ["nodes.alive_timeout: got nan"]),
    ("model-missing", {"model": "{tmp}/no-such-model"}, ["no-such-model", "does not exist"]),
    ("model-is-a-file", {"model": "{tmp}/weights.bin"}, ["weights.bin", "is a file"]),
    ("model-empty", {"model": ""}, ["model: empty name"]),  # named once, though every stage config refuses it
    ("model-unknown-name", {"model": "not a model"}, ["unknown model 'not a model'"]),
    ("run-dir-is-a-file", {"run_dir": "{tmp}/weights.bin"}, ["run_dir:", "weights.bin", "not a folder"]),
    ("run-dir-under-a-file", {"run_dir": "{tmp}/weights.bin/run"}, ["run_dir:", "weights.bin", "not a folder"]),
    ("sft-row-empty-answer", {"sft": {"data": "{tmp}/sft-empty.jsonl"}}, ["sft.data:", "line 2", "'response' is empty"]),
    ("sft-row-not-json", {"sft": {"data": "{tmp}/sft-bad.jsonl"}}, ["sft.data:", "line 2", "not valid JSON"]),
]


def _patch(cfg: dict, patch: dict, tmp) -> dict:
    for key, value in patch.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **{k: v.format(tmp=tmp) if isinstance(v, str) else v
                                               for k, v in value.items()}}
        else:
            cfg[key] = value.format(tmp=tmp) if isinstance(value, str) else value
    return cfg


@pytest.fixture
def files(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    (tmp_path / "sft-empty.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": ""}\n')
    (tmp_path / "sft-bad.jsonl").write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    return tmp_path


def test_the_base_config_is_valid(cream_exe, tmp_path, tiny_model):
    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_run_config(model=tiny_model, run_dir=tmp_path / "run"))
    r = check(cream_exe, tmp_path, cfg)
    assert r.code == 0 and "valid" in r.out, r
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("patch,needles", [pytest.param(p, n, id=i) for i, p, n in BAD])
def test_check_refuses_what_a_stage_would_refuse(cream_exe, files, tiny_model, patch, needles):
    cfg = _patch(tiny_run_config(model=tiny_model, run_dir=files / "run"), patch, files)
    r = check(cream_exe, files, write_yaml(files / "cfg.yaml", cfg))
    assert_user_error(r, "cfg.yaml: 1 problem(s)", *needles)


def test_every_problem_is_named_at_once(cream_exe, files, tiny_model):
    cfg = _patch(tiny_run_config(model=tiny_model, run_dir=files / "run"), {
        "model": "{tmp}/weights.bin", "run_dir": "{tmp}/weights.bin", "sample": {"temperature": -1, "top_p": 3},
        "label": {"engine": "tgi", "judge_max_new_tokens": 0}, "train": {"lr": NAN, "beta": 0, "warmup_ratio": 2},
        "sft": {"epochs": 0}, "eval": {"max_new_tokens": 0}}, files)
    r = check(cream_exe, files, write_yaml(files / "cfg.yaml", cfg))
    assert_user_error(r, "11 problem(s)", "is a file", "run_dir:", "sample.temperature: got -1", "sample.top_p: got 3",
                      "label.engine: got 'tgi'", "label.judge_max_new_tokens: got 0", "train.lr: got nan",
                      "train.beta: got 0", "train.warmup_ratio: got 2", "sft.epochs: got 0", "eval.max_new_tokens: got 0")


def test_duplicate_keys_name_the_key_and_line(cream_exe, tmp_path, tiny_model):
    cfg = tiny_run_config(model=tiny_model, run_dir=tmp_path / "run")
    text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)
    lines = text.splitlines()
    lines.insert(lines.index("train:") + 1, "  lr: 0.5")  # train.lr twice: the last one would silently win
    lines.insert(0, "iterations: 3")  # a top-level key twice
    second_lr = lines.index("train:") + 3  # 1-based: the original train.lr, after the inserted one
    assert lines[second_lr - 1].startswith("  lr: ")
    r = check(cream_exe, tmp_path, write_yaml(tmp_path / "cfg.yaml", {}, text="\n".join(lines) + "\n"))
    assert_user_error(r, "2 problem(s)", f"line {second_lr}: duplicate key 'lr' in section train",
                      "line 4: duplicate key 'iterations' at the top level")


def test_reuse_from_must_be_a_run_directory(cream_exe, tmp_path, tiny_model):
    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_run_config(model=tiny_model, run_dir=tmp_path / "run"))
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "broken-run").mkdir()
    (tmp_path / "broken-run" / "manifest.json").write_text("{not json")
    r = check(cream_exe, tmp_path, cfg, "--reuse-from", tmp_path / "not-a-run", "--reuse-from", tmp_path / "broken-run")
    assert_user_error(r, "2 problem(s)", "not-a-run: not a run directory", "broken-run: manifest.json is not valid JSON")
    # the same without --check: refused before the run directory is made
    before = snapshot(tmp_path)
    r = cream_exe("run", cfg, "--reuse-from", tmp_path / "broken-run")
    assert_user_error(r, "broken-run: manifest.json is not valid JSON")
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_reuse_from_its_own_directory_is_refused_at_check(cream_exe, tmp_path, tiny_model):
    cfg = write_yaml(tmp_path / "cfg.yaml", tiny_run_config(model=tiny_model, run_dir=tmp_path / "run"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"stages": {}}))
    r = check(cream_exe, tmp_path, cfg, "--reuse-from", tmp_path / "run")
    assert_user_error(r, "1 problem(s)", "is this run's own directory")


@pytest.mark.parametrize("args,needles", [
    (["--lr", "-1"], ["--lr: got -1"]),
    (["--lr", "nan"], ["--lr: got nan"]),
    (["--beta", "0"], ["--beta: got 0"]),
    (["--epochs", "inf"], ["--epochs: got inf"]),
    (["--seed", "-1"], ["--seed: got -1"]),
])
def test_train_refuses_on_the_command_line(cream_exe, tmp_path, args, needles):
    before = snapshot(tmp_path)
    r = cream_exe("train", DEMO_DATA / "demo_sft.jsonl", "--model", tmp_path / "m", "--out", tmp_path / "o", *args)
    assert_user_error(r, *needles)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args,needles", [
    (["--top-p", "3"], ["--top-p: got 3"]),  # named by the flag the user wrote
    (["--temperature", "inf"], ["--temperature: got inf"]),
])
def test_sample_refuses_on_the_command_line(cream_exe, tmp_path, args, needles):
    r = cream_exe("sample", DEMO_DATA / "demo_prompts.jsonl", "--model", tmp_path / "m", "--out", tmp_path / "o", *args)
    assert_user_error(r, *needles)
    assert not (tmp_path / "o").exists()


def test_label_refuses_max_batch_tokens_0_on_the_command_line(cream_exe, tmp_path):
    r = cream_exe("label", tmp_path / "responses", "--model", tmp_path / "m", "--out", tmp_path / "o",
                  "--max-batch-tokens", "0")
    assert_user_error(r, "--max-batch-tokens: got 0")
    assert not (tmp_path / "o").exists()
