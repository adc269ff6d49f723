"""The scale-out recipes: examples/scale/*.yaml, their accelerate config files and the Slurm script.

Read as plain YAML (what each recipe promises: GPUs in use per machine, the authors' effective batch of 32, the
paper's settings), and once through `cream run --check` (the run config's own validation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.example_configs import offline_copy

SCALE = REPO / "examples" / "scale"
SLURM = REPO / "examples" / "slurm"
PAPER = REPO / "examples" / "paper.yaml"
RECIPES = ["one_gpu.yaml", "eight_gpu.yaml", "eight_gpu_lora.yaml", "two_nodes.yaml", "two_nodes_srun.yaml"]
ACCELERATE = {"zero3.yaml": "DEEPSPEED", "fsdp.yaml": "FSDP"}
PAPER_BATCH = 32  # 4 per device x 8 GPUs (docs/PAPER.md)


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def shard_gpus(section: dict) -> int:
    """GPUs one sample/label shard process is pinned to: gpus_per_process, else the vllm engine's tensor parallel
    size, else 1 (the run's default)."""
    if section.get("gpus_per_process") is not None:
        return section["gpus_per_process"]
    return section.get("tensor_parallel_size", 1) if section.get("engine") == "vllm" else 1


def machines(cfg: dict) -> int:
    return (cfg.get("nodes") or {}).get("num_machines", 1)


def effective_batch(cfg: dict, name: str) -> int:
    s = cfg[name]
    processes = s.get("num_processes", 1) if s.get("launcher", "none") != "none" else 1
    spans = machines(cfg) if s.get("launcher", "none") != "none" else 1
    return s.get("batch_size", 4) * s.get("grad_accum", 1) * processes * spans


# ------------------------------------------------------------------------------------------- the run configs
def test_the_recipes_and_their_readme_are_there_and_multi_gpu_md_is_gone():
    assert sorted(p.name for p in SCALE.glob("*.yaml")) == sorted(RECIPES)
    assert (SCALE / "README.md").is_file() and (SLURM / "README.md").is_file()
    assert not (REPO / "examples" / "multi_gpu.md").exists()
    for doc in (REPO / "README.md", REPO / "docs" / "PAPER.md"):
        text = doc.read_text(encoding="utf-8")
        assert "multi_gpu.md" not in text and "examples/scale/README.md" in text, doc


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_says_its_hardware_and_command_first(name):
    text = (SCALE / name).read_text(encoding="utf-8")
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3, "a comment block first"
    assert "GPU" in header[0] or "MACHINES" in header[0]
    assert f"cream run examples/scale/{name}" in "\n".join(header)


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_keeps_the_papers_settings_and_paths(name):
    cfg, paper = load(SCALE / name), load(PAPER)
    for key in ("model", "method", "iterations", "seed"):
        assert cfg[key] == paper[key], key
    for key in ("n", "temperature", "top_p", "max_new_tokens", "engine"):
        assert cfg["sample"][key] == paper["sample"][key], key
    for key in ("consistency", "scope"):
        assert cfg["label"][key] == paper["label"][key], key
    same_train = ("beta", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm", "max_length", "long_pairs")
    for key in same_train + (() if cfg["train"].get("lora") else ("lr",)):
        assert cfg["train"][key] == paper["train"][key], key
    for key in ("epochs", "max_length") + (() if cfg["sft"].get("lora") else ("lr",)):
        assert cfg["sft"][key] == paper["sft"][key], key
    for key in ("tasks", "max_new_tokens", "extract"):
        assert cfg["eval"][key] == paper["eval"][key], key
    # paths are relative to the config's folder: the same files as paper.yaml's, one folder further down
    for section, key in (("sft", "data"), ("eval", "data_dir")):
        mine = (SCALE / cfg[section][key]).resolve()
        assert mine == (PAPER.parent / paper[section][key]).resolve(), (section, key)

    def sources(entries, folder):  # D_U's mix, each file resolved against its config's folder
        return [e if "source" not in e else {**e, "source": (folder / e["source"]).resolve()} for e in entries]

    assert sources(cfg["prompts"]["sources"], SCALE) == sources(paper["prompts"]["sources"], PAPER.parent)
    assert cfg["prompts"]["suffix"] == paper["prompts"]["suffix"]
    assert (SCALE / cfg["run_dir"]).resolve().parent == (REPO / "runs").resolve()


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_keeps_the_authors_effective_batch(name):
    cfg = load(SCALE / name)
    assert effective_batch(cfg, "train") == PAPER_BATCH
    assert effective_batch(cfg, "sft") == PAPER_BATCH


@pytest.mark.parametrize("name", RECIPES)
def test_accelerate_config_paths_resolve_beside_the_recipe(name):
    cfg = load(SCALE / name)
    for section in ("sft", "train"):
        path = cfg[section].get("accelerate_config")
        if path is not None:
            assert cfg[section]["launcher"] == "accelerate"
            assert (SCALE / path).is_file(), path


def test_one_gpu_runs_every_stage_as_one_process_with_vllm_sampling():
    cfg = load(SCALE / "one_gpu.yaml")
    assert "nodes" not in cfg
    assert cfg["sample"]["engine"] == "vllm"
    assert cfg["sample"].get("data_parallel", 1) * shard_gpus(cfg["sample"]) == 1
    assert cfg["label"].get("data_parallel", 1) == 1
    for section in ("sft", "train"):
        assert cfg[section].get("launcher", "none") == "none"
        assert cfg[section]["batch_size"] == 4 and cfg[section]["grad_accum"] == 8


def test_eight_gpu_fills_eight_gpus_in_every_model_stage():
    cfg = load(SCALE / "eight_gpu.yaml")
    assert "nodes" not in cfg
    assert cfg["sample"]["data_parallel"] * shard_gpus(cfg["sample"]) == 8
    assert cfg["label"]["data_parallel"] * shard_gpus(cfg["label"]) == 8
    for section in ("sft", "train"):
        s = cfg[section]
        assert (s["launcher"], s["num_processes"], s["accelerate_config"]) == ("accelerate", 8,
                                                                               "accelerate/zero3.yaml")
        assert (s["batch_size"], s["grad_accum"]) == (4, 1)
    assert cfg["train"]["lora"] is False


def test_eight_gpu_lora_trains_adapters_with_plain_ddp():
    cfg = load(SCALE / "eight_gpu_lora.yaml")
    assert "nodes" not in cfg
    assert cfg["sample"]["data_parallel"] * shard_gpus(cfg["sample"]) == 8
    assert cfg["label"]["data_parallel"] * shard_gpus(cfg["label"]) == 8
    for section in ("sft", "train"):
        s = cfg[section]
        assert s["lora"] is True
        assert (s["lora_r"], s["lora_alpha"], s["lora_target"]) == (16, 32, "all-linear")
        assert (s["launcher"], s["num_processes"]) == ("accelerate", 8)
        assert "accelerate_config" not in s  # no DeepSpeed/FSDP: cream adds --multi_gpu


def test_two_nodes_spans_two_machines_of_eight_gpus():
    cfg = load(SCALE / "two_nodes.yaml")
    nodes = cfg["nodes"]
    assert (nodes["launcher"], nodes["num_machines"], nodes["machine_rank"], nodes["main_process_port"]) == (
        "followers", 2, 0, 29500)
    assert isinstance(nodes["main_process_ip"], str) and nodes["main_process_ip"]
    assert (nodes["start_timeout"], nodes["alive_timeout"]) == (60, 60)
    s = cfg["sample"]
    assert (s["tensor_parallel_size"], s["data_parallel"]) == (2, 4)
    assert s["data_parallel"] * shard_gpus(s) == 8  # per machine
    assert cfg["label"]["data_parallel"] * shard_gpus(cfg["label"]) == 8
    for section in ("sft", "train"):
        t = cfg[section]
        assert (t["launcher"], t["num_processes"], t["accelerate_config"]) == ("accelerate", 8,
                                                                               "accelerate/zero3.yaml")
        assert (t["batch_size"], t["grad_accum"]) == (2, 1)


def test_two_nodes_srun_is_two_nodes_with_one_driver():
    """The Slurm recipe: two_nodes.yaml's settings, the nodes section alone differs (srun: no rank, no address)."""
    srun, followers = load(SCALE / "two_nodes_srun.yaml"), load(SCALE / "two_nodes.yaml")
    assert srun["nodes"] == {"launcher": "srun", "num_machines": 2, "main_process_port": 29500}
    assert {k: v for k, v in srun.items() if k not in ("nodes", "run_dir")} == {
        k: v for k, v in followers.items() if k not in ("nodes", "run_dir")}
    assert srun["run_dir"] != followers["run_dir"]


# ------------------------------------------------------------------------------------------- accelerate files
@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_config_files(name):
    cfg = load(SCALE / "accelerate" / name)
    assert cfg["distributed_type"] == ACCELERATE[name]
    assert cfg["compute_environment"] == "LOCAL_MACHINE"
    assert cfg["mixed_precision"] == "bf16" and cfg["use_cpu"] is False
    assert (cfg["num_machines"], cfg["machine_rank"], cfg["num_processes"]) == (1, 0, 8)
    if name == "zero3.yaml":
        ds = cfg["deepspeed_config"]
        assert ds["zero_stage"] == 3 and ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
        assert (ds["offload_optimizer_device"], ds["offload_param_device"]) == ("none", "none")
        assert ds["deepspeed_multinode_launcher"] == "standard"  # each machine starts its own accelerate launch
        # left to the trainer ("auto"), i.e. to the run config's grad_accum and max_grad_norm
        assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds
    else:
        fsdp = cfg["fsdp_config"]
        assert fsdp["fsdp_version"] == 2
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one gathered checkpoint on save


@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_reads_the_config_files(name):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(SCALE / "accelerate" / name))
    assert str(cfg.distributed_type).endswith(ACCELERATE[name])


# ------------------------------------------------------------------------------------------- Slurm
def test_sbatch_script_is_valid_bash_and_starts_one_driver():
    script = SLURM / "cream.sbatch"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    r = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    text = script.read_text(encoding="utf-8")
    for needle in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --cpus-per-task=8",
                   "#SBATCH --gpus-per-node=8", "#SBATCH --requeue", "SRUN_CPUS_PER_TASK",
                   "examples/scale/two_nodes_srun.yaml", 'exec "$CREAM" run "$CONFIG"'):
        assert needle in text, needle
    assert "--machine-rank" not in text and "\nsrun " not in text  # one driver: it starts the job steps itself
    assert load(SCALE / "two_nodes_srun.yaml")["nodes"]["num_machines"] == 2  # its default config, its node count


def test_sbatch_script_runs_one_driver_and_checks_the_config(tmp_path):
    """The script under a fake cream: one `cream run CONFIG`; a config whose num_machines differs from the job's
    node count, or whose nodes.launcher is not srun, stops it with exit 2."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cream").write_text('#!/bin/bash\necho "cream $* (SRUN_CPUS_PER_TASK=$SRUN_CPUS_PER_TASK)"\n')
    (fake / "python3").write_text(f'#!/bin/bash\nexec "{sys.executable}" "$@"\n')  # with pyyaml
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ.get('PATH', '')}", "SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_JOB_NODELIST": "node-[1-2]", "SLURM_CPUS_PER_TASK": "8", "HOME": str(tmp_path)}

    def sbatch(**more):
        return subprocess.run([bash, str(SLURM / "cream.sbatch")], capture_output=True, text=True, cwd=REPO,
                              env={**env, **more}, timeout=60)

    r = sbatch()
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("cream ")] == [
        "cream run examples/scale/two_nodes_srun.yaml (SRUN_CPUS_PER_TASK=8)"]
    r = sbatch(SLURM_JOB_NUM_NODES="3")
    assert r.returncode == 2 and "num_machines 2 but the job has 3 nodes" in r.stderr and r.stdout == ""
    r = sbatch(CONFIG="examples/scale/two_nodes.yaml")
    assert r.returncode == 2 and "nodes.launcher followers" in r.stderr and r.stdout == ""


def test_the_slurm_readme_keeps_the_follower_recipe():
    text = (SLURM / "README.md").read_text(encoding="utf-8")
    for needle in ("nodes.launcher: srun", "--kill-on-bad-exit=1", "Without Slurm: followers", "--machine-rank 1",
                   "nodes.start_timeout", "nodes.alive_timeout", "RUN/.machines/<rank>.alive"):
        assert needle in text, needle


# ------------------------------------------------------------------------------------------- the run's own check
@pytest.mark.parametrize("name", RECIPES)
def test_cream_run_check_accepts_each_recipe(name, cream_exe, shared_data, tmp_path):
    recipe = offline_copy(SCALE / name, tmp_path, shared_data)  # its task prompts from shared_data, not the Hub
    r = cream_exe("run", recipe, "--check")
    assert r.code == 0, r
    assert "valid" in r.out
    plan = cream_exe("run", recipe, "--plan")  # the launch keys reach the command lines
    assert plan.code == 0, plan
    many = name != "one_gpu.yaml"  # one GPU: each stage is its own command, no shards, no launcher
    srun = name == "two_nodes_srun.yaml"  # each stage over both nodes: one srun, its tasks' shards filled in by each
    assert ("--shard 0/" in plan.out) == (many and not srun) and ("accelerate.commands.launch" in plan.out) == many
    assert ("srun --nodes 2 --ntasks-per-node 4 " in plan.out and "--shard '{SLURM_PROCID}/{SLURM_NTASKS}'"
            in plan.out) == srun
