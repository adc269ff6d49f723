"""The GPU study: examples/study-gpu/ (two run configs, run.sh, study.sbatch, README.md).

What is checked, offline (models named by Hub id are only checked for their form): every run that run.sh starts —
each method x seed of each config — is a config `cream run --check` accepts (its loader, with run.sh's overrides);
those runs differ in method, seed and run directory only; both configs keep examples/paper.yaml's settings and data;
`run.sh --plan` prints every run's stages without writing anything; the Slurm script hands its array task's seed to
run.sh; and the README's GPU-hours tables are recomputed here from the README's own inputs table, so a changed
input without changed hours (or the reverse) fails.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.example_configs import local_prompts, offline_copy
from tests.support.scripts import bash, cream_calls, load, run_script, write_fake_cream

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


@pytest.fixture(scope="module")
def fake_cream(tmp_path_factory) -> Path:
    """A `cream` that prints its arguments: run.sh's every call, in order, without running anything."""
    return write_fake_cream(tmp_path_factory.mktemp("fake"))


def calls(script: Path, fake: Path, env: dict, *args: str) -> list[list[str]]:
    """The `cream …` calls a script makes under the fake cream, each as its argument list (after `cream`)."""
    return cream_calls(run_script(script, fake, env, *args, cwd=REPO, timeout=60))


def run_calls(found: list[list[str]]) -> list[dict]:
    """The `cream run` calls as {config, method, seed, out, reuse}."""
    out = []
    for argv in found:
        if argv[0] != "run":
            continue
        flags = argv[2:]
        pairs = list(zip(flags[::2], flags[1::2]))
        assert all(k.startswith("--") for k, _ in pairs) and len(flags) % 2 == 0, argv
        one = {k: v for k, v in pairs if k != "--reuse-from"}
        out.append({"config": argv[1], "method": one["--method"], "seed": int(one["--seed"]), "out": one["--out"],
                    "reuse": [v for k, v in pairs if k == "--reuse-from"]})
    return out


# ------------------------------------------------------------------------------------------- run.sh
@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_run_sh_runs_every_method_and_seed_then_inspects_each_seed_and_all(size, fake_cream, tmp_path):
    runs_dir = tmp_path / "runs"
    found = calls(STUDY / "run.sh", fake_cream, {"SIZE": size, "RUNS": str(runs_dir)})
    runs = run_calls(found)
    assert sorted((r["method"], r["seed"]) for r in runs) == sorted((m, s) for m in METHODS for s in SEEDS)
    assert {r["config"] for r in runs} == {str(CONFIGS[size].relative_to(REPO))}
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


def test_run_sh_takes_seeds_and_methods_from_the_environment(fake_cream, tmp_path):
    runs = run_calls(calls(STUDY / "run.sh", fake_cream, {"SEEDS": "7", "METHODS": "srlm cream",
                                                          "RUNS": str(tmp_path)}))
    assert [(r["method"], r["seed"], r["reuse"]) for r in runs] == [
        ("srlm", 7, []), ("cream", 7, [str(tmp_path / "seed-7" / "srlm")])]


def test_run_sh_refuses_what_it_cannot_run(fake_cream):
    for env, args, needle in (({"SIZE": "3b"}, (), "SIZE=3b: expected 1b or 8b"),
                              ({}, ("--bogus",), "unknown argument '--bogus'"),
                              ({"CONFIG": "nowhere.yaml"}, (), "config not found: nowhere.yaml"),
                              ({"SEEDS": " "}, (), "SEEDS and METHODS must each name at least one")):
        r = subprocess.run([bash(), str(STUDY / "run.sh"), *args], capture_output=True, text=True, cwd=REPO,
                           timeout=60, env={**os.environ, "CREAM": str(fake_cream), **env})
        assert r.returncode == 2 and needle in r.stderr and r.stdout == "", (env, args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_run_sh_plan_prints_every_run_offline_and_writes_nothing(tmp_path, shared_data):
    """The real `cream run --plan` for one seed of the 1B study, with the Hub unreachable."""
    from tests.support.cli import cream_executable

    runs_dir = tmp_path / "runs"
    config = offline_copy(CONFIGS["1b"], tmp_path / "config", shared_data)  # its task prompts from shared_data
    r = subprocess.run([bash(), str(STUDY / "run.sh"), "--plan"], capture_output=True, text=True, cwd=REPO,
                       timeout=300, env={**os.environ, "CREAM": str(cream_executable()), "CONFIG": str(config),
                                         "SEEDS": "0", "RUNS": str(runs_dir), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("13 stages: 0 done or reused, 13 to run") == len(METHODS)
    labels = [line for line in r.stdout.splitlines() if line.strip().startswith("cream label ")]
    assert len(labels) == 2 * len(METHODS)
    assert all("--reward-model Skywork/Skywork-Reward-Llama-3.1-8B-v0.2" in line and "--oracle-scores" in line
               for line in labels)
    assert sum("--reward judge" in line for line in labels) == 2 and sum("--reward rm" in line for line in labels) == 2
    assert f"inspect {runs_dir / 'seed-0' / 'cream'} " in r.stderr
    assert not runs_dir.exists()


# ------------------------------------------------------------------------------------------- the configs
@pytest.mark.parametrize("size", sorted(CONFIGS))
def test_every_run_validates_and_the_runs_differ_in_method_and_seed_only(size, fake_cream, tmp_path, shared_data):
    """Each run of run.sh through `cream run --check`'s loader (cream_train.run.config.load_run_config) with the
    run's overrides; what each will run, every default filled in, is the same but for method, seed and run_dir."""
    from cream_train.run.config import load_run_config

    runs = run_calls(calls(STUDY / "run.sh", fake_cream, {"SIZE": size, "RUNS": str(tmp_path)}))
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
def test_sbatch_is_valid_bash_and_runs_its_array_tasks_seed(fake_cream, tmp_path):
    script = STUDY / "study.sbatch"
    r = subprocess.run([bash(), "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    text = script.read_text(encoding="utf-8")
    for needle in ("#SBATCH --array=0-2", "#SBATCH --gpus-per-node=8", "#SBATCH --requeue",
                   "exec bash examples/study-gpu/run.sh"):
        assert needle in text, needle
    env = {"SLURM_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1", "SIZE": "1b", "RUNS": str(tmp_path)}
    runs = run_calls(calls(script, fake_cream, env))
    assert [(r["method"], r["seed"]) for r in runs] == [(m, 1) for m in METHODS]
    assert {r["config"] for r in runs} == {str(CONFIGS["1b"].relative_to(REPO))}
    r = subprocess.run([bash(), str(script)], capture_output=True, text=True, cwd=REPO, timeout=30,
                       env={k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"})
    assert r.returncode != 0 and "submit this script with sbatch" in r.stderr


# ------------------------------------------------------------------------------------------- GPU hours
def readme_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of the text as (header cells, body rows of cells)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def named(rows: list[list[str]]) -> dict[str, list[str]]:
    found = {}
    for row in rows:
        m = re.fullmatch(r"`(\w+)`", row[0])
        assert m, row
        found[m.group(1)] = row[1:]
    return found


def readme_numbers() -> tuple[dict, dict, dict]:
    """The README's inputs for each size, and its hours per row name for each size."""
    wanted = {("input", "value", "basis"), ("input", "1B", "8B", "basis"), ("stage", "formula", "1B", "8B"),
              ("total", "formula", "1B", "8B")}
    found = [(tuple(h), rows) for h, rows in readme_tables((STUDY / "README.md").read_text(encoding="utf-8"))]
    assert sorted(h for h, _ in found if h in wanted) == sorted(wanted), "one table of each"
    tables = {h: named(rows) for h, rows in found if h in wanted}
    shared = {k: number(v[0]) for k, v in tables[("input", "value", "basis")].items()}
    inputs = {size: {**shared, **{k: number(v[i]) for k, v in tables[("input", "1B", "8B", "basis")].items()}}
              for i, size in enumerate(("1B", "8B"))}
    hours = {size: {k: number(v[i + 1]) for h in (("stage", "formula", "1B", "8B"), ("total", "formula", "1B", "8B"))
                    for k, v in tables[h].items()} for i, size in enumerate(("1B", "8B"))}
    return inputs["1B"], inputs["8B"], hours


def estimate(v: dict) -> dict[str, float]:
    """The README's formulas: hours of each stage, run, seed and the study (see its GPU-hours section)."""
    peak, h = v["peak_flops"], 3600
    q = v["prompts"] / v["iterations"]
    r = q * v["n"]
    seq = v["prompt_tokens"] + v["response_tokens"]
    fwd, trn = v["mfu_forward"] * peak * h, v["mfu_train"] * peak * h
    s = {"sft": v["sft_examples"] * v["sft_epochs"] * v["sft_tokens"] * 6 * v["params"] / trn,
         "sample": r * v["response_tokens"] / v["vllm_tok_s"] / h,
         "label_1": r * seq * 2 * (v["label_models_1"] * v["params"] + v["rm_params"]) / fwd,
         "label_2": r * seq * 2 * (v["label_models_2"] * v["params"] + v["rm_params"]) / fwd,
         "judge": math.ceil(r / v["judge_batch"]) * v["judge_steps"] * v["hf_step_s"] / h
         + r * v["judge_tokens"] * 2 * v["params"] / fwd,
         "train": q * 2 * seq * 6 * v["params"] / trn,
         "eval": v["eval_batches"] * v["eval_steps"] * v["hf_step_s"] / h}
    run = s["sft"] + 2 * s["sample"] + s["label_1"] + s["label_2"] + 2 * s["train"] + 4 * s["eval"]
    per_method = s["sample"] + s["label_2"] + 2 * s["train"] + 2 * s["eval"]
    seed = s["sft"] + s["sample"] + 2 * s["eval"] + 4 * per_method + 3 * s["label_1"] + 2 * s["judge"]
    k, gpus = v["seeds"], v["gpus"]
    study = k * seed - (k - 1) * s["eval"]
    evals = (10 * k - (k - 1)) * s["eval"]
    wall = (study - evals) / gpus + evals
    return {**s, "run": run, "run_srlm": run + 2 * s["judge"], "seed": seed,
            "seed_wall": (seed - 10 * s["eval"]) / gpus + 10 * s["eval"], "study": study, "study_wall": wall,
            "study_allocated": gpus * wall}


def test_readme_hours_are_the_arithmetic_of_its_inputs():
    small, large, hours = readme_numbers()
    for size, inputs in (("1B", small), ("8B", large)):
        want = estimate(inputs)
        assert set(hours[size]) == set(want), size
        wrong = {k: (hours[size][k], round(want[k], 2)) for k in want if abs(hours[size][k] - want[k]) > 0.0051}
        assert not wrong, f"{size}: README shows vs its inputs give (README hours to update): {wrong}"
    assert small["gpus"] == 1 and large["gpus"] == 8  # what the configs use
    assert (small["seeds"], small["iterations"], small["n"]) == (len(SEEDS), 2, 5)


def test_readme_inputs_match_the_configs_and_data(shared_data):
    small, large, _ = readme_numbers()
    paper = load(PAPER)
    assert small["n"] == paper["sample"]["n"] and small["iterations"] == paper["iterations"]
    for path in CONFIGS.values():
        assert small["judge_batch"] == load(path)["label"]["batch_size"], path
    assert small["eval_steps"] == paper["eval"]["max_new_tokens"]
    # D_U from the Hub: the 16,597 prompts read offline (above) and SIQA's train questions, one per train label
    siqa_train = sum(1 for line in (shared_data / "siqa" / "train-labels.lst").open(encoding="utf-8") if line.strip())
    assert small["prompts"] == large["prompts"] == 16597 + siqa_train
    sizes = {}
    for task, name in (("arc_easy", "arc/ARC-Easy-Test.jsonl"), ("arc_challenge", "arc/ARC-Challenge-Test.jsonl"),
                       ("openbookqa", "openbookqa/test.jsonl"), ("siqa", "siqa/dev.jsonl"),
                       ("gsm8k", "gsm8k/test.jsonl")):
        sizes[task] = sum(1 for line in (shared_data / name).open(encoding="utf-8") if line.strip())
    batch = paper["eval"]["batch_size"]
    assert small["eval_batches"] == sum(math.ceil(n / batch) for n in sizes.values())
    text = (STUDY / "README.md").read_text(encoding="utf-8")
    assert f"{sum(sizes.values()):,} questions" in text
    # the derived figures the prose states
    q = small["prompts"] / small["iterations"]
    r, seq = q * small["n"], small["prompt_tokens"] + small["response_tokens"]
    for figure in (f"Q = prompts / iterations = {q:,.1f}", f"R = Q · n = {r:,.1f}",
                   f"= {r * small['response_tokens'] / 1e6:.1f} M tokens", f"= {r * seq / 1e6:.1f} M tokens",
                   f"= {q * 2 * seq / 1e6:.1f} M tokens",
                   f"{int(small['eval_batches'] * small['eval_steps']):,} decode",
                   f"{sum(sizes.values()) * int(small['eval_steps']) / 1e6:.1f} M tokens"):
        assert figure in text, figure
    for params, shown in ((large["params"], "53,400 tokens/s at 8B"), (small["params"], "346,000 at")):
        bound = 256 * 3.35e12 / (2 * params)
        assert shown.split(" ")[0] == f"{round(bound, -2 if params > 5e9 else -3):,.0f}", (bound, shown)
        assert shown in text


def test_the_study_is_linked_from_the_readme_and_the_results_page():
    assert "examples/study-gpu/README.md" in (REPO / "README.md").read_text(encoding="utf-8")
    assert "../examples/study-gpu/README.md" in (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
