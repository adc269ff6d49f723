"""The GPU study: examples/study-gpu/ (two run configs, run.sh, study.sbatch, README.md).

What is checked, offline (models named by Hub id are only checked for their form): every run that run.sh starts —
each method x seed of each config — is a config `cream run --check` accepts (its loader, with run.sh's overrides);
those runs differ in method, seed and run directory only; both configs keep examples/paper.yaml's settings and data;
`run.sh --plan` prints every run's stages without writing anything; the data folder (STUDY_DATA): a folder that
lacks a file the chosen config reads is one line before any `cream` call, another folder runs a variant config with
the data paths moved there and nothing else changed, the default folder runs the configs themselves; and the Slurm
script hands its array task's seed (and the data folder) to run.sh. The README's GPU-hours tables:
tests/test_study_gpu_hours.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.example_configs import local_prompts, offline_copy
from tests.support.scripts import bash, cream_calls, load, run_calls, run_script, write_fake_cream

STUDY = REPO / "examples" / "study-gpu"
PAPER = REPO / "examples" / "paper.yaml"
CONFIGS = {"1b": STUDY / "llama-3.2-1b.yaml", "8b": STUDY / "llama-3-8b.yaml"}
METHODS = ["cream", "cream-no-rc", "srlm", "rm"]  # the paper's CREAM, CREAM w/o RC, SRLM and Oracle rows
SEEDS = [0, 1, 2]
PAPER_BATCH = 32  # the authors' effective batch (docs/PAPER.md)
# The settings that say how a stage's processes start, not what they compute (and the speed-only batch sizes).
LAUNCH = {"sft": {"batch_size", "grad_accum", "gradient_checkpointing", "launcher", "num_processes",
                  "accelerate_config"},
          "train": {"batch_size", "grad_accum", "gradient_checkpointing", "launcher", "num_processes",
                    "accelerate_config"},
          "sample": {"batch_size", "tensor_parallel_size", "data_parallel"}, "label": {"data_parallel"}}
# The files both configs read from the data folder (README.md "The data"): the SFT file and the five evaluated tasks'
# test files, SIQA's dev set with its labels.
DATA_FILES = ["oasst2_srlm_pairs/oasst2_en_first_turn_ranked_pairs.jsonl", "arc/ARC-Easy-Test.jsonl",
              "arc/ARC-Challenge-Test.jsonl", "openbookqa/test.jsonl", "siqa/dev.jsonl", "siqa/dev-labels.lst",
              "gsm8k/test.jsonl"]
DEFAULT_DATA = REPO.parent / "shared" / "data"  # what the configs' data paths name


@pytest.fixture(scope="module")
def fake_cream(tmp_path_factory) -> Path:
    """A `cream` that prints its arguments: run.sh's every call, in order, without running anything."""
    return write_fake_cream(tmp_path_factory.mktemp("fake"))


def data_folder(folder: Path, files=DATA_FILES) -> Path:
    """A data folder holding ``files``, empty: what run.sh checks for (the fake cream reads none)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    return folder


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    """A data folder elsewhere with every file the configs read (empty)."""
    return data_folder(tmp_path_factory.mktemp("data"))


def script_run(script: Path, fake: Path, env: dict, *args: str):
    """``bash SCRIPT ARGS`` under the fake cream, with this test's Python as run.sh's PYTHON."""
    return run_script(script, fake, {"PYTHON": sys.executable, **env}, *args, cwd=REPO, timeout=60)


def calls(script: Path, fake: Path, env: dict, *args: str) -> list[list[str]]:
    """The `cream …` calls a script makes under the fake cream, each as its argument list (after `cream`)."""
    return cream_calls(script_run(script, fake, env, *args))


# ------------------------------------------------------------------------------------------- run.sh
@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_run_sh_runs_every_method_and_seed_then_inspects_each_seed_and_all(size, fake_cream, fake_data, tmp_path):
    runs_dir = tmp_path / "runs"
    found = calls(STUDY / "run.sh", fake_cream, {"SIZE": size, "RUNS": str(runs_dir), "STUDY_DATA": str(fake_data)})
    runs = run_calls(found)
    assert sorted((r["method"], r["seed"]) for r in runs) == sorted((m, s) for m in METHODS for s in SEEDS)
    assert {r["config"] for r in runs} == {str(runs_dir / CONFIGS[size].name)}  # the variant: the data elsewhere
    for r in runs:
        assert r["out"] == str(runs_dir / f"seed-{r['seed']}" / r["method"])
    # within a seed: each run may take the stages of the seed's earlier runs; a later seed, the first seed's first
    for i, r in enumerate(runs):
        same_seed = [p["out"] for p in runs[:i] if p["seed"] == r["seed"]]
        first = [] if r["seed"] == SEEDS[0] else [str(runs_dir / f"seed-{SEEDS[0]}" / METHODS[0])]
        assert r["reuse"] == first + same_seed, r
    inspects = [argv for argv in found if argv[0] == "inspect"]
    for seed in SEEDS:  # after the seed's runs: the study over all four, then the first run's report (premise)
        seed_runs = [str(runs_dir / f"seed-{seed}" / m) for m in METHODS]
        study = ["inspect", *seed_runs, "--out", str(runs_dir / f"seed-{seed}" / "study")]
        assert study in inspects and ["inspect", seed_runs[0]] in inspects
        assert found.index(study) > max(found.index(a) for a in found if a[0] == "run" and
                                        int(a[a.index("--seed") + 1]) == seed)
    # last: every run of every seed in one study (its Across seeds section pools the seeds)
    every = [str(runs_dir / f"seed-{seed}" / m) for seed in SEEDS for m in METHODS]
    assert found[-1] == ["inspect", *every, "--out", str(runs_dir / "study")]
    assert len(inspects) == 2 * len(SEEDS) + 1


def test_run_sh_takes_seeds_and_methods_from_the_environment(fake_cream, fake_data, tmp_path):
    runs = run_calls(calls(STUDY / "run.sh", fake_cream, {"SEEDS": "7", "METHODS": "srlm cream",
                                                          "RUNS": str(tmp_path), "STUDY_DATA": str(fake_data)}))
    assert [(r["method"], r["seed"], r["reuse"]) for r in runs] == [
        ("srlm", 7, []), ("cream", 7, [str(tmp_path / "seed-7" / "srlm")])]


def test_run_sh_refuses_what_it_cannot_run(fake_cream):
    for env, args, needle in (({"SIZE": "3b"}, (), "SIZE=3b: expected 1b or 8b"),
                              ({}, ("--bogus",), "unknown argument '--bogus'"),
                              ({"CONFIG": "nowhere.yaml"}, (), "config not found: nowhere.yaml"),
                              ({"SEEDS": " "}, (), "SEEDS and METHODS must each name at least one"),
                              ({"PYTHON": "/nowhere/python"}, (), "PYTHON=/nowhere/python: no such command")):
        r = script_run(STUDY / "run.sh", fake_cream, env, *args)
        assert r.returncode == 2 and needle in r.stderr and r.stdout == "", (env, args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_run_sh_plan_prints_every_run_offline_and_writes_nothing(tmp_path, shared_data):
    """The real `cream run --plan` for one seed of the 1B study, with the Hub unreachable."""
    from tests.support.cli import cream_executable

    runs_dir = tmp_path / "runs"
    config = offline_copy(CONFIGS["1b"], tmp_path / "config", shared_data)  # its task prompts from shared_data
    r = subprocess.run([bash(), str(STUDY / "run.sh"), "--plan"], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env={**os.environ, "CREAM": str(cream_executable()), "CONFIG": str(config),
                                         "SEEDS": "0", "RUNS": str(runs_dir), "HF_HUB_OFFLINE": "1",
                                         "PYTHON": sys.executable, "STUDY_DATA": str(shared_data)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("13 stages: 0 done or reused, 13 to run") == len(METHODS)
    labels = [line for line in r.stdout.splitlines() if line.strip().startswith("cream label ")]
    assert len(labels) == 2 * len(METHODS)
    assert all("--reward-model Skywork/Skywork-Reward-Llama-3.1-8B-v0.2" in line and "--oracle-scores" in line
               for line in labels)
    assert sum("--reward judge" in line for line in labels) == 2 and sum("--reward rm" in line for line in labels) == 2
    assert f"inspect {runs_dir / 'seed-0' / 'cream'} " in r.stderr
    assert not runs_dir.exists()


# ------------------------------------------------------------------------------------------- the data folder
def refusal(r) -> str:
    """run.sh's one stderr line, having stopped (exit 2) before any `cream` call (the fake one prints each)."""
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, (r.stdout, r.stderr)
    return r.stderr.strip()


def lacking(line: str) -> list[str]:
    """The files a refusal says the data folder lacks."""
    return sorted(line.split(" lacks ", 1)[1].split(" (", 1)[0].split())


@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_run_sh_stops_in_one_line_when_the_data_folder_lacks_a_file(size, fake_cream, tmp_path):
    env = {"SIZE": size, "RUNS": str(tmp_path / "runs")}
    nowhere = tmp_path / "nowhere"
    line = refusal(script_run(STUDY / "run.sh", fake_cream, {**env, "STUDY_DATA": str(nowhere)}))
    assert f"data folder not found: {nowhere} (" in line and "set STUDY_DATA=DIR" in line
    assert all(f in line for f in DATA_FILES), line
    empty = data_folder(tmp_path / "empty", files=[])
    line = refusal(script_run(STUDY / "run.sh", fake_cream, {**env, "STUDY_DATA": str(empty)}))
    assert line.startswith(f"run.sh: data folder {empty} lacks ") and "set STUDY_DATA=DIR" in line
    assert lacking(line) == sorted(DATA_FILES)
    for name in DATA_FILES:  # each file, alone missing, is named alone
        partial = data_folder(tmp_path / name.replace("/", "-"), [f for f in DATA_FILES if f != name])
        assert lacking(refusal(script_run(STUDY / "run.sh", fake_cream, {**env, "STUDY_DATA": str(partial)}))) == [name]
    assert not (tmp_path / "runs").exists()


def test_run_sh_checks_the_files_the_chosen_config_reads(fake_cream, tmp_path):
    """A CONFIG that evaluates GSM8K only needs the SFT file and GSM8K's test file; one whose data lies outside
    ../shared/data needs nothing there, and runs as it is whatever STUDY_DATA says."""
    raw = load(CONFIGS["1b"])
    raw["sft"]["data"] = str((STUDY / raw["sft"]["data"]).resolve())
    raw["eval"].update(data_dir=str(DEFAULT_DATA.resolve()), tasks=["gsm8k"])
    (tmp_path / "gsm8k.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {"CONFIG": str(tmp_path / "gsm8k.yaml"), "RUNS": str(tmp_path / "runs"), "SEEDS": "0", "METHODS": "srlm"}
    line = refusal(script_run(STUDY / "run.sh", fake_cream, {**env, "STUDY_DATA": str(data_folder(tmp_path / "d", []))}))
    assert lacking(line) == sorted([DATA_FILES[0], "gsm8k/test.jsonl"])
    raw["sft"]["data"], raw["eval"]["data_dir"] = str(tmp_path / "own" / "sft.jsonl"), str(tmp_path / "own")
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    r = script_run(STUDY / "run.sh", fake_cream, {**env, "CONFIG": str(tmp_path / "own.yaml"),
                                                  "STUDY_DATA": str(tmp_path / "nowhere")})
    assert [c["config"] for c in run_calls(cream_calls(r))] == [str(tmp_path / "own.yaml")]
    assert f"STUDY_DATA={tmp_path / 'nowhere'} changes nothing" in r.stderr


@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_study_data_elsewhere_runs_a_variant_with_the_data_paths_moved_and_nothing_else(size, fake_cream, fake_data,
                                                                                          tmp_path):
    env = {"SIZE": size, "STUDY_DATA": str(fake_data), "SEEDS": "0"}
    runs = run_calls(calls(STUDY / "run.sh", fake_cream, {**env, "RUNS": str(tmp_path / "runs")}))
    variant = tmp_path / "runs" / CONFIGS[size].name
    assert [r["config"] for r in runs] == [str(variant)] * len(METHODS)
    moved, original = load(variant), load(CONFIGS[size])
    assert moved["sft"]["data"] == str(fake_data.resolve() / DATA_FILES[0])
    assert moved["eval"]["data_dir"] == str(fake_data.resolve())
    assert (STUDY / original["sft"]["data"]).resolve() == DEFAULT_DATA.resolve() / DATA_FILES[0]
    for raw, base in ((moved, variant.parent), (original, STUDY)):  # every other path absolute, as `cream run` reads
        for holder in (raw, raw["sft"], raw["train"]):
            for key in ("run_dir", "accelerate_config"):
                if holder.get(key):
                    holder[key] = str((base / holder[key]).resolve())
        raw["sft"]["data"] = raw["eval"]["data_dir"] = None
    assert moved == original
    # with --plan: the variant in a temporary folder, removed at the end; nothing written in RUNS
    planned = run_calls(calls(STUDY / "run.sh", fake_cream, {**env, "RUNS": str(tmp_path / "plan")}, "--plan"))
    config = Path(planned[0]["config"])
    assert config.name == CONFIGS[size].name and not config.parent.exists() and not (tmp_path / "plan").exists()


def test_the_readme_lists_the_files_run_sh_checks():
    text = (STUDY / "README.md").read_text(encoding="utf-8").split("## The data", 1)[1].split("\n## ", 1)[0]
    listed = [name for row in text.splitlines() if row.startswith("| `") for name in
              re.findall(r"`([^`]+)`", row.split("|")[1])]
    assert sorted(listed) == sorted(DATA_FILES)


def test_the_default_data_folder_runs_the_configs_themselves(fake_cream, shared_data, tmp_path):
    if DEFAULT_DATA.resolve() != shared_data.resolve():
        pytest.skip(f"the shared data ({shared_data}) is not {DEFAULT_DATA}, the configs' folder")
    for size, config in CONFIGS.items():
        for data in ("", str(shared_data)):  # STUDY_DATA unset (empty reads as unset), or naming the default folder
            runs_dir = tmp_path / size / ("named" if data else "default")
            runs = run_calls(calls(STUDY / "run.sh", fake_cream, {"SIZE": size, "RUNS": str(runs_dir),
                                                                  "STUDY_DATA": data, "SEEDS": "0"}))
            assert [r["config"] for r in runs] == [str(config.relative_to(REPO))] * len(METHODS)
            assert not list(runs_dir.glob("*.yaml"))  # no variant written


# ------------------------------------------------------------------------------------------- the configs
@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_every_run_validates_and_the_runs_differ_in_method_and_seed_only(size, fake_cream, tmp_path, shared_data):
    """Each run of run.sh through `cream run --check`'s loader (cream_train.run.config.load_run_config) with the
    run's overrides; what each will run, every default filled in, is the same but for method, seed and run_dir."""
    from cream_train.run.config import load_run_config

    runs = run_calls(calls(STUDY / "run.sh", fake_cream, {"SIZE": size, "RUNS": str(tmp_path),
                                                          "STUDY_DATA": str(shared_data)}))
    settings = []
    for r in runs:
        cfg, _, table = load_run_config(REPO / r["config"], {"method": r["method"], "seed": r["seed"],
                                                             "run_dir": r["out"],
                                                             "prompts": local_prompts(CONFIGS[size], shared_data)})
        assert (cfg.method, cfg.seed, Path(cfg.run_dir)) == (r["method"], r["seed"], Path(r["out"]))
        assert table.num_rows == 16597  # D_U as paper.yaml's from shared_data: without SIQA's train questions
        settings.append({k: v for k, v in cfg.to_dict().items() if k not in ("method", "seed", "run_dir")})
    assert all(s == settings[0] for s in settings[1:])
    label = settings[0]["label"]
    assert label["reward_model"] and label["engine"] == "hf"  # the rm row's reward model scores with hf only


def test_the_stages_counted_once_have_one_fingerprint(shared_data):
    """What run.sh's --reuse-from links and the README's hours count once: within a seed, the prompt split, SFT,
    the evaluation of M0 and M1 and iteration-1 samples (and iteration-1 labels for cream and cream-no-rc); across
    seeds, the evaluation of M0 alone (and the SFT table, no model)."""
    from cream_train.run.config import load_run_config
    from cream_train.run.plan import plan_run

    def fingerprints(method, seed):
        cfg, _, table = load_run_config(CONFIGS["1b"], {"method": method, "seed": seed, "run_dir": f"/x/{seed}",
                                                        "prompts": local_prompts(CONFIGS["1b"], shared_data)},
                                        machine_checks=None)
        return {s.name: s.fingerprint for s in plan_run(cfg, table)}

    cream = fingerprints("cream", 0)

    def same(other):
        return {k for k, fp in cream.items() if other.get(k) == fp}

    shared = {"prompts", "sft-data", "train-M1", "eval-M0", "eval-M1", "sample-1"}
    assert same(fingerprints("srlm", 0)) == same(fingerprints("rm", 0)) == shared
    assert same(fingerprints("cream-no-rc", 0)) == shared | {"label-1"}
    assert same(fingerprints("cream", 1)) == {"eval-M0", "sft-data"}


@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_cream_run_check_accepts_each_config(size, cream_exe, shared_data, tmp_path):
    config = offline_copy(CONFIGS[size], tmp_path, shared_data)  # its task prompts from shared_data, not the Hub
    r = cream_exe("run", config, "--method", "rm", "--seed", "2", "--check", env={"HF_HUB_OFFLINE": "1"})
    assert r.code == 0, r
    assert "valid — method rm, T = 2, 16597 prompts" in r.out


@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_each_config_keeps_the_papers_settings_and_data(size):
    cfg, paper = load(CONFIGS[size]), load(PAPER)
    assert cfg["model"] == {"1b": "meta-llama/Llama-3.2-1B-Instruct", "8b": paper["model"]}[size]
    assert cfg["iterations"] == paper["iterations"] and cfg["method"] == "cream"
    for key in ("n", "temperature", "top_p", "max_new_tokens", "engine"):
        assert cfg["sample"][key] == paper["sample"][key], key
    for key in ("consistency", "scope", "clip_c"):
        assert cfg["label"][key] == paper["label"][key], key
    assert cfg["label"]["scope"] == "dataset"  # CREAM's default row: one dataset-mean C per iteration
    for key in ("beta", "lr", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm", "max_length", "long_pairs",
                "lora"):
        assert cfg["train"][key] == paper["train"][key], key
    for key in ("lr", "epochs", "max_length"):
        assert cfg["sft"][key] == paper["sft"][key], key
    for section in ("sft", "train"):  # the authors' effective batch of 32
        s = cfg[section]
        processes = s.get("num_processes", 1) if s.get("launcher", "none") != "none" else 1
        assert s["batch_size"] * s.get("grad_accum", 1) * processes == PAPER_BATCH, section
    for key in ("tasks", "max_new_tokens", "extract", "batch_size"):
        assert cfg["eval"][key] == paper["eval"][key], key
    for section, key in (("sft", "data"), ("eval", "data_dir")):  # the same files, from one folder further down
        assert (STUDY / cfg[section][key]).resolve() == (PAPER.parent / paper[section][key]).resolve()

    def sources(entries, folder):
        return [e if "source" not in e else {**e, "source": (folder / e["source"]).resolve()} for e in entries]

    assert sources(cfg["prompts"]["sources"], STUDY) == sources(paper["prompts"]["sources"], PAPER.parent)
    assert cfg["prompts"]["suffix"] == paper["prompts"]["suffix"]
    path = cfg["train"].get("accelerate_config")
    assert path is None or (STUDY / path).is_file()


def test_the_two_sizes_differ_in_model_and_hardware_only():
    small, large = load(CONFIGS["1b"]), load(CONFIGS["8b"])

    def what_runs(cfg):
        out = {k: v for k, v in cfg.items() if k not in ("model", "run_dir")}
        for section, keys in LAUNCH.items():
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
        return out

    assert what_runs(small) == what_runs(large)
    assert large["sample"]["data_parallel"] == large["label"]["data_parallel"] == 8
    assert large["train"]["num_processes"] == large["sft"]["num_processes"] == 8
    assert "data_parallel" not in small["sample"] and small["train"].get("launcher", "none") == "none"


def test_oracle_scores_is_set_where_cream_has_it():
    """The premise table's diagnostic (label.oracle_scores): in both configs while the label stage has it."""
    from dataclasses import fields

    from cream_data.stages.label_config import LabelConfig

    has_it = "oracle_scores" in {f.name for f in fields(LabelConfig)}
    for path in CONFIGS.values():
        assert load(path)["label"].get("oracle_scores", False) is has_it, path


# ------------------------------------------------------------------------------------------- Slurm
def test_sbatch_is_valid_bash_and_runs_its_array_tasks_seed(fake_cream, fake_data, tmp_path):
    script = STUDY / "study.sbatch"
    r = subprocess.run([bash(), "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    text = script.read_text(encoding="utf-8")
    for needle in ("#SBATCH --array=0-2", "#SBATCH --gpus-per-node=8", "#SBATCH --requeue",
                   "exec bash examples/study-gpu/run.sh"):
        assert needle in text, needle
    env = {"SLURM_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1", "SIZE": "1b", "RUNS": str(tmp_path),
           "STUDY_DATA": str(fake_data)}
    runs = run_calls(calls(script, fake_cream, env))
    assert [(r["method"], r["seed"]) for r in runs] == [(m, 1) for m in METHODS]
    assert {r["config"] for r in runs} == {str(tmp_path / CONFIGS["1b"].name)}  # STUDY_DATA reached run.sh
    assert load(tmp_path / CONFIGS["1b"].name)["eval"]["data_dir"] == str(fake_data.resolve())
    r = subprocess.run([bash(), str(script)], capture_output=True, text=True, cwd=REPO, timeout=30,
                       env={k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"})
    assert r.returncode != 0 and "submit this script with sbatch" in r.stderr


def test_the_study_is_linked_from_the_readme_and_the_results_page():
    assert "examples/study-gpu/README.md" in (REPO / "README.md").read_text(encoding="utf-8")
    assert "../examples/study-gpu/README.md" in (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
