"""cream_train/run/launch.py: a stage's settings as its command line, parsed back by the real `cream` app into an equal
config; the processes a Launcher starts (shards pinned to GPUs, accelerate, torchrun) checked against the launchers'
own argument parsers; the settings' validation; and a generated command line run for real."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cream_data.errors import CreamError
from cream_data.settings import Settings, SettingsError, setting
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.label_config import LabelConfig
from cream_data.stages.sample_config import SampleConfig
from cream_data.inputs.prompts_config import PromptsConfig
from cream_data.tables import io
from cream_train.config import DPOTrainConfig, SFTTrainConfig
from cream_train.run.launch import Launcher, Process, launch_commands, shell_line, stage_argv
from tests.support.commands import parse, rebuild

REPO = Path(__file__).resolve().parents[1]
PY = "/opt/py/bin/python"
CREAM = [PY, "-m", "cli.main"]


def judge_template(tmp_path) -> str:
    path = tmp_path / "judge prompt.txt"
    path.write_text("Rate it.\nRequest: {request}\nResponse: {response}\nEnd with 'Score: k'.\n")
    return str(path)


def non_default_configs(tmp_path) -> dict:
    """A config of each command with many settings off their defaults: ints (one negative), floats, strings with
    spaces or a leading dash or empty, lists, bools, optional values set."""
    return {
        "sample": SampleConfig(model="my models/M 1", n=3, seed=-7, temperature=0.0, top_p=0.5, max_new_tokens=17,
                               engine="vllm", batch_size=32, iteration=2, limit=9, prompts_per_part=5,
                               tensor_parallel_size=2, device="cuda:1", trust_remote_code=True),
        "label": LabelConfig(model="M 1", ref="M0", prev_model="M0", prev_ref="base model", consistency="spearman",
                             scope="prompt", clip_c=True, batch_size=3, max_batch_tokens=1000, iteration=4,
                             prompts="/data/my prompts", judge_max_new_tokens=12, judge_mode="parse",
                             judge_template=judge_template(tmp_path), reward_model="org/rm", trust_remote_code=True,
                             consistency_between="current,rm", pair_policy="both", human_answers=True),
        "eval": EvalConfig(tasks=("gsm8k", "arc_easy"), limit=3, data_dir="/data dir", label="M 1", device="cpu",
                           trust_remote_code=True, max_new_tokens=64, batch_size=2, suffix="", extract="authors"),
        "train dpo": DPOTrainConfig(data="prefs dir", model="M 0", out="out dir", lr=2e-5, epochs=2.5, max_steps=10,
                                    batch_size=2, grad_accum=3, warmup_ratio=0.0, weight_decay=0.01,
                                    max_grad_norm=0.5, max_length=512, lora=True, lora_r=8, lora_alpha=4,
                                    lora_dropout=0.2, lora_target="q_proj,v_proj", gradient_checkpointing=True,
                                    seed=5, report_to="tensorboard", logging_steps=2, overwrite=True, method="dpo",
                                    beta=0.25, reference="computed", split="iter_2", long_pairs="truncate"),
        "train sft": SFTTrainConfig(data="sft table", model="M 0", out="sft out", epochs=3.0, limit=100,
                                    max_length=64, lora=True, seed=9),
        "prompts": PromptsConfig(layout="generic", limit=2, split="test", suffix="-- be brief", dedupe=True,
                                 prompt_field="q", answer_field="gold", id_field="uid", system_field="sys",
                                 split_into=3, seed=4),
    }


def argv_of(key: str, cfg, *, full: bool = False) -> list[str]:
    """The stage's command line as `cream run` will write it: its positional input, --out and the settings."""
    if key.startswith("train"):
        return stage_argv("train", cfg, positional=[cfg.data], skip=("data",), extra={"--stage": cfg.stage},
                          full=full)
    positional = {"sample": ["prompts table"], "label": ["responses"], "eval": [], "prompts": ["src.jsonl"]}[key]
    extra = {"--out": "out dir", **({"--model": "M 1"} if key == "eval" else {})}
    return stage_argv(key, cfg, positional=positional, extra=extra, full=full)


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("full", [False, True], ids=["changed", "full"])
@pytest.mark.parametrize("key", ["sample", "label", "eval", "train dpo", "train sft", "prompts"])
def test_a_config_round_trips_through_the_real_command_line(tmp_path, key, full):
    cfg = non_default_configs(tmp_path)[key]
    argv = argv_of(key, cfg, full=full)
    assert rebuild(argv) == cfg
    assert type(rebuild(argv)) is type(cfg)


@pytest.mark.parametrize("key", ["sample", "label", "eval", "train dpo", "train sft", "prompts"])
def test_default_configs_round_trip_and_full_writes_every_setting(key):
    cfg = {"sample": SampleConfig(model="m"), "label": LabelConfig(model="m"), "eval": EvalConfig(),
           "train dpo": DPOTrainConfig(data="d", model="m", out="o"),
           "train sft": SFTTrainConfig(data="d", model="m", out="o"), "prompts": PromptsConfig()}[key]
    short, full = argv_of(key, cfg), argv_of(key, cfg, full=True)
    assert rebuild(short) == cfg == rebuild(full)
    assert len(short) < len(full)
    assert not [a for a in short if a.startswith("--") and a not in ("--out", "--model", "--stage")]


def test_only_changed_settings_are_written():
    # vllm's batch size 512 is what the engine resolves by itself: left out like a default
    cfg = SampleConfig(model="m", n=4, engine="vllm", batch_size=512)
    assert stage_argv("sample", cfg, positional=["P"], extra={"--out": "D"}) == [
        "sample", "P", "--out", "D", "--model", "m", "--n", "4", "--engine", "vllm"]
    cfg = SampleConfig(model="m", engine="vllm", batch_size=8)  # hf's default, not vllm's: written
    assert stage_argv("sample", cfg)[-4:] == ["--engine", "vllm", "--batch-size", "8"]
    assert rebuild(["sample", "P", "--out", "D", *stage_argv("sample", cfg)[1:]]) == cfg


def test_a_default_the_two_train_stages_disagree_on():
    """--lr defaults to each stage's own (DPO 1e-6, SFT 2e-5): SFT's default is left out, the same value for DPO
    is written, and each parses back to its own."""
    sft = SFTTrainConfig(data="d", model="m", out="o", lr=2e-5)
    dpo = DPOTrainConfig(data="d", model="m", out="o", lr=2e-5)
    assert "--lr" not in argv_of("train sft", sft)
    assert argv_of("train dpo", dpo)[-2:] == ["--lr", "2e-05"]
    assert rebuild(argv_of("train sft", sft)).lr == rebuild(argv_of("train dpo", dpo)).lr == 2e-5


def test_bools_are_written_in_their_flag_form():
    cfg = DPOTrainConfig(data="d", model="m", out="o", lora=True, overwrite=True)
    argv = argv_of("train dpo", cfg)
    assert "--lora" in argv and "--overwrite" in argv and "--no-gradient-checkpointing" not in argv
    full = argv_of("train dpo", cfg, full=True)
    assert "--no-gradient-checkpointing" in full  # False of a --x/--no-x flag
    assert "--overwrite" in full and not [a for a in full if a.startswith("--no-overwrite")]
    assert rebuild(full) == cfg
    assert "--trust-remote-code" not in argv_of("sample", SampleConfig(model="m"), full=True)  # absent is False


@dataclasses.dataclass(frozen=True)
class _Toggles(Settings):
    """Bools that default to True (no stage has one yet): with a --no- form and without."""

    paired: bool = setting(True, flag="--paired/--no-paired", help="A bool with a --no- form.")
    bare: bool = setting(True, help="A bool whose flag has no --no- form.")
    names: tuple[str, ...] = setting(("a",), help="A list.")


def test_what_no_command_line_can_say_is_refused():
    assert stage_argv("x", _Toggles(paired=False)) == ["x", "--no-paired"]
    with pytest.raises(ValueError, match="--bare: False cannot be written"):
        stage_argv("x", _Toggles(bare=False))
    for item in ("a,b", " a", ""):
        with pytest.raises(ValueError, match="--names: .* cannot be an item"):
            stage_argv("x", _Toggles(names=("ok", item)))
    with pytest.raises(ValueError, match=r"--max-length: None cannot be written .* gives 2048"):
        argv_of("train dpo", DPOTrainConfig(data="d", model="m", out="o", max_length=None))
    with pytest.raises(ValueError, match="starts with '-'"):
        stage_argv("train", DPOTrainConfig(data="-d", model="m", out="o"), positional=["-d"], skip=("data",))
    with pytest.raises(ValueError, match="skip names no setting of SampleConfig: outt"):
        stage_argv("sample", SampleConfig(model="m"), skip=("outt",))
    with pytest.raises(ValueError, match="'--n'"):  # a setting's flag given twice
        stage_argv("sample", SampleConfig(model="m"), extra={"--n": "3"})
    assert stage_argv("sample", SampleConfig(model="m"), extra={"--n": "3", "--overwrite": None}, skip=("n",)) == [
        "sample", "--n", "3", "--overwrite", "--model", "m"]


def test_stage_commands_get_their_own_non_setting_options():
    """--out, --shard and --overwrite reach the command as its own parameters, not as settings."""
    argv = stage_argv("sample", SampleConfig(model="m"), positional=["P"], extra={"--out": "D", "--overwrite": None})
    proc = launch_commands(argv, Launcher(data_parallel=2, gpus_per_process=0), python=PY)[1]
    sub = parse(proc.argv[3:])
    assert (sub.params["prompts"], sub.params["out_dir"], sub.params["shard"], sub.params["overwrite"]) == (
        Path("P"), Path("D"), "1/2", True)


# ---------------------------------------------------------------------------- launcher settings
def test_launcher_validation_names_every_problem_at_once():
    with pytest.raises(SettingsError) as e:
        Launcher(launcher="slurm", num_processes=0, gpus_per_process=-1, data_parallel=0, main_process_port=0)
    assert [k for k, _ in e.value.keyed] == ["launcher", "num_processes", "data_parallel", "gpus_per_process",
                                             "main_process_port"]
    assert str(e.value).startswith("launch settings: launcher: got 'slurm', expected one of none, accelerate")
    with pytest.raises(SettingsError) as e:
        Launcher(launcher="torchrun", data_parallel=2, gpus_per_process=2, num_machines=2, machine_rank=2,
                 accelerate_config="acc.yaml")
    assert sorted(k for k, _ in e.value.keyed) == ["accelerate_config", "data_parallel", "gpus_per_process",
                                                   "machine_rank", "main_process_ip"]
    text = str(e.value)
    assert "machine_rank: got 2, expected < num_machines (2)" in text
    assert "main_process_ip: missing; num_machines 2 needs the address of machine 0" in text
    assert "accelerate_config: only with launcher accelerate" in text
    with pytest.raises(SettingsError, match="num_processes: got 2 with launcher none"):
        Launcher(num_processes=2)
    with pytest.raises(SettingsError, match="gpus_per_process: 0 .CPU. with accelerate starts one process only"):
        Launcher(launcher="accelerate", num_processes=2, gpus_per_process=0)
    Launcher(launcher="torchrun", num_processes=2, gpus_per_process=0)  # CPU processes: torchrun can


def test_check_for_stage():
    assert Launcher(data_parallel=4).check_for("sample") == []
    assert Launcher(data_parallel=4).check_for("label") == []
    assert Launcher(launcher="torchrun", num_processes=8).check_for("train") == []
    assert Launcher(launcher="accelerate", num_processes=2).check_for("sample") == [
        "launcher: accelerate starts train only, not sample (use launcher none, with data_parallel for shard "
        "processes)"]
    # eval has no --shard (cli/eval.py), so it cannot be split into shard processes
    assert Launcher(data_parallel=2).check_for("eval") == [
        "data_parallel: eval takes no --shard; only sample and label run as shard processes"]
    assert [p.split(":")[0] for p in Launcher(data_parallel=2, num_machines=2, main_process_ip="h").check_for(
        "train")] == ["data_parallel", "num_machines"]
    with pytest.raises(SettingsError, match="launch settings: data_parallel: eval takes no --shard"):
        launch_commands(["eval", "--model", "m", "--out", "o"], Launcher(data_parallel=2))


# ---------------------------------------------------------------------------- processes
def test_a_lone_process_is_the_command_itself():
    [proc] = launch_commands(["sample", "P", "--out", "D"], Launcher(), python=PY)
    assert proc == Process([*CREAM, "sample", "P", "--out", "D"], {}, "sample")
    [proc] = launch_commands(["sample", "P"], Launcher(), cream=["cream"])
    assert proc.argv == ["cream", "sample", "P"]
    assert launch_commands(["x"], Launcher())[0].argv[:3] == [sys.executable, "-m", "cli.main"]


def test_shard_processes_are_pinned_to_their_gpus():
    procs = launch_commands(["sample", "P", "--out", "D"], Launcher(data_parallel=4, gpus_per_process=2), python=PY)
    assert [p.argv for p in procs] == [[*CREAM, "sample", "P", "--out", "D", "--shard", f"{i}/4"] for i in range(4)]
    assert [p.env for p in procs] == [{"CUDA_VISIBLE_DEVICES": d} for d in ("0,1", "2,3", "4,5", "6,7")]
    assert [p.name for p in procs] == [f"sample shard {i}/4" for i in range(4)]
    # the parent's own visible GPUs are handed out, in order
    procs = launch_commands(["label", "R"], Launcher(data_parallel=2, gpus_per_process=2), devices="4,5,6,7")
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in procs] == ["4,5", "6,7"]
    with pytest.raises(CreamError, match="needs 6 GPUs; 4 are available .4,5,6,7."):
        launch_commands(["label", "R"], Launcher(data_parallel=3, gpus_per_process=2), devices=["4", "5", "6", "7"])
    # CPU: no pinning
    assert [p.env for p in launch_commands(["sample", "P"], Launcher(data_parallel=3, gpus_per_process=0))] == [{}] * 3
    with pytest.raises(ValueError, match="already has --shard"):
        launch_commands(["sample", "P", "--shard", "0/2"], Launcher(data_parallel=2))


def test_shards_over_several_machines():
    machine = Launcher(data_parallel=2, num_machines=3, machine_rank=1, main_process_ip="10.0.0.1")
    procs = launch_commands(["label", "R", "--out", "D"], machine, python=PY)
    assert [p.argv[-2:] for p in procs] == [["--shard", "2/6"], ["--shard", "3/6"]]
    assert [p.env for p in procs] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]  # local GPUs
    every = [p.argv[-1] for r in range(3) for p in launch_commands(
        ["label", "R"], dataclasses.replace(machine, machine_rank=r))]
    assert every == [f"{i}/6" for i in range(6)]  # each shard exactly once over the machines
    # one process per machine: sharded by machine, not pinned
    [proc] = launch_commands(["sample", "P"], Launcher(num_machines=2, machine_rank=1, main_process_ip="h"))
    assert proc.argv[-2:] == ["--shard", "1/2"] and proc.env == {}


ARGV = ["train", "prefs", "--stage", "dpo", "--model", "m", "--out", "o"]


def test_accelerate_commands():
    pytest.importorskip("accelerate")
    from accelerate.commands.launch import launch_command_parser

    [proc] = launch_commands(ARGV, Launcher(launcher="accelerate", num_processes=4), python=PY)
    assert proc.argv == [PY, "-m", "accelerate.commands.launch", "--num_processes", "4", "--multi_gpu", "-m",
                         "cli.main", *ARGV]
    assert proc.env == {} and proc.name == "train (accelerate, 4 processes)"
    args = launch_command_parser().parse_args(proc.argv[3:])
    assert (args.num_processes, args.multi_gpu, args.module, args.training_script, args.training_script_args) == (
        4, True, True, "cli.main", ARGV)
    two = Launcher(launcher="accelerate", num_processes=4, accelerate_config="ds zero3.yaml", num_machines=2,
                   machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29600)
    [proc] = launch_commands(ARGV, two, python=PY)
    assert proc.argv == [PY, "-m", "accelerate.commands.launch", "--num_processes", "8", "--config_file",
                         "ds zero3.yaml", "--num_machines", "2", "--machine_rank", "1", "--main_process_ip",
                         "10.0.0.1", "--main_process_port", "29600", "-m", "cli.main", *ARGV]
    args = launch_command_parser().parse_args(proc.argv[3:])
    assert (args.num_processes, args.config_file, args.num_machines, args.machine_rank, args.main_process_ip,
            args.main_process_port, args.multi_gpu) == (8, "ds zero3.yaml", 2, 1, "10.0.0.1", 29600, False)
    [proc] = launch_commands(ARGV, Launcher(launcher="accelerate", gpus_per_process=0), python=PY)
    assert proc.argv[3:7] == ["--num_processes", "1", "--cpu", "-m"]
    assert launch_command_parser().parse_args(proc.argv[3:]).cpu is True


def test_torchrun_commands():
    pytest.importorskip("torch")
    from torch.distributed.run import parse_args

    [proc] = launch_commands(ARGV, Launcher(launcher="torchrun", num_processes=2), python=PY)
    assert proc.argv == [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cli.main", *ARGV]
    args = parse_args(proc.argv[3:])
    assert (args.nproc_per_node, args.module, args.training_script, args.training_script_args) == (
        "2", True, "cli.main", ARGV)
    two = Launcher(launcher="torchrun", num_processes=8, num_machines=4, machine_rank=3, main_process_ip="node0")
    [proc] = launch_commands(ARGV, two, python=PY)
    assert proc.argv[3:15] == ["--nproc_per_node", "8", "--nnodes", "4", "--node_rank", "3", "--master_addr",
                               "node0", "--master_port", "29500", "-m", "cli.main"]
    args = parse_args(proc.argv[3:])
    assert (args.nnodes, args.node_rank, args.master_addr, args.master_port) == ("4", 3, "node0", 29500)
    assert proc.name == "train (torchrun, 32 processes)"
    [proc] = launch_commands(ARGV, Launcher(launcher="torchrun", main_process_port=29700), python=PY)
    assert proc.argv[5:7] == ["--master_port", "29700"]


def test_srun_starts_a_stage_as_one_job_step_over_every_machine():
    """nodes.launcher srun: one `srun` per stage; each task fills in its own shard or rank (cream_train/slurm_task)."""
    task = [PY, "-m", "cream_train.run.slurm_task"]
    shards = Launcher(data_parallel=4, gpus_per_process=2, num_machines=2, node_launcher="srun")  # no address needed
    [proc] = launch_commands(["sample", "P", "--out", "D", "--model", "m"], shards, python=PY)
    assert proc.argv == ["srun", "--nodes", "2", "--ntasks-per-node", "4", "--kill-on-bad-exit=1", "--label", *task,
                         "--pin-gpus", "2", *CREAM, "sample", "P", "--out", "D", "--model", "m", "--shard",
                         "{SLURM_PROCID}/{SLURM_NTASKS}"]
    assert (proc.env, proc.tasks, proc.name) == ({}, 8, "sample (srun: 2 nodes x 4 tasks)")
    sub = parse(proc.argv[proc.argv.index("cli.main") + 1:])
    assert sub.params["shard"] == "{SLURM_PROCID}/{SLURM_NTASKS}"  # what the task fills in is the --shard value
    # one shard per machine: not pinned (a lone process per machine sees its machine's GPUs), as without srun
    [proc] = launch_commands(["label", "R"], dataclasses.replace(shards, data_parallel=1), cream=["cream"])
    assert proc.argv[4:] == ["1", "--kill-on-bad-exit=1", "--label", sys.executable, "-m", "cream_train.run.slurm_task",
                             "cream", "label", "R", "--shard", "{SLURM_PROCID}/{SLURM_NTASKS}"]
    with pytest.raises(SettingsError, match="machine_rank: got 1 with node_launcher srun, which runs one `cream run`"):
        dataclasses.replace(shards, machine_rank=1)


def test_srun_trains_with_one_launcher_per_node():
    pytest.importorskip("accelerate")
    pytest.importorskip("torch")
    from accelerate.commands.launch import launch_command_parser
    from torch.distributed.run import parse_args

    acc = Launcher(launcher="accelerate", num_processes=8, num_machines=2, node_launcher="srun")
    [proc] = launch_commands(ARGV, acc, python=PY)
    head = ["srun", "--nodes", "2", "--ntasks-per-node", "1", "--kill-on-bad-exit=1", "--label", PY, "-m",
            "cream_train.run.slurm_task", PY]
    assert proc.argv[:11] == head and proc.tasks == 2
    assert "--machine_rank {SLURM_NODEID} --main_process_ip {first_node}" in " ".join(proc.argv)
    filled = [a.replace("{SLURM_NODEID}", "1").replace("{first_node}", "node0") for a in proc.argv[13:]]  # task 1's
    args = launch_command_parser().parse_args(filled)
    assert (args.num_processes, args.num_machines, args.machine_rank, args.main_process_ip, args.main_process_port,
            args.training_script_args) == (16, 2, 1, "node0", 29500, ARGV)
    [proc] = launch_commands(ARGV, dataclasses.replace(acc, main_process_ip="10.0.0.1"), python=PY)
    assert "--main_process_ip 10.0.0.1 --main_process_port 29500" in " ".join(proc.argv)  # the address, as given
    tr = Launcher(launcher="torchrun", num_processes=4, num_machines=3, node_launcher="srun")
    [proc] = launch_commands(ARGV, tr, python=PY)
    assert proc.argv[:11] == ["srun", "--nodes", "3", *head[3:]] and proc.name == "train (srun: 3 nodes x 1 tasks)"
    assert proc.argv[11:21] == ["-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "3",
                                "--node_rank", "{SLURM_NODEID}", "--master_addr", "{first_node}"]
    filled = [a.replace("{SLURM_NODEID}", "2").replace("{first_node}", "node0") for a in proc.argv[13:]]
    args = parse_args(filled)
    assert (args.nnodes, args.node_rank, args.master_addr, args.training_script_args) == ("3", 2, "node0", ARGV)


def test_shell_line_quotes_every_token():
    proc = Process([PY, "-m", "cli.main", "sample", "my prompts", "--suffix", "it's", "--shard", "0/2"],
                   {"CUDA_VISIBLE_DEVICES": "0,1", "NOTE": "a b"}, "sample shard 0/2")
    line = shell_line(proc)
    assert line == ("CUDA_VISIBLE_DEVICES=0,1 NOTE='a b' /opt/py/bin/python -m cli.main sample 'my prompts' "
                    "--suffix 'it'\"'\"'s' --shard 0/2")
    assert shlex.split(line) == ["CUDA_VISIBLE_DEVICES=0,1", "NOTE=a b", *proc.argv]
    with pytest.raises(ValueError, match="A-B"):
        shell_line(Process(["x"], {"A-B": "1"}, "x"))


# ---------------------------------------------------------------------------- run for real
def test_a_generated_command_line_runs(tmp_path):
    """`cream prompts` started from the launcher's Process (and again from its shell line) writes the table."""
    src = tmp_path / "my source.jsonl"
    rows = [{"uid": 7, "q": "Capital of France?", "gold": "Paris"}, {"uid": 8, "q": "Capital of Spain?",
                                                                     "gold": "Madrid"},
            {"uid": 9, "q": "Capital of Peru?", "gold": "Lima"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PromptsConfig(layout="generic", limit=2, suffix="Answer in one word.", prompt_field="q",
                        answer_field="gold", id_field="uid")
    for how, out in (("process", tmp_path / "out a"), ("shell", tmp_path / "out b")):
        argv = stage_argv("prompts", cfg, positional=[str(src)], extra={"--out": str(out)})
        [proc] = launch_commands(argv, Launcher())
        if how == "process":
            r = subprocess.run(proc.argv, env={**os.environ, **proc.env}, cwd=REPO, capture_output=True, text=True,
                               timeout=300)
        else:
            r = subprocess.run(["bash", "-c", shell_line(proc)], cwd=REPO, capture_output=True, text=True,
                               timeout=300)
        assert r.returncode == 0, r.stderr
        assert "wrote 2 prompts (2 with reference answers)" in r.stdout
        table = io.read_table(out, "prompts").to_pylist()
        assert [(t["prompt_id"], t["reference_answer"], t["prompt"]) for t in table] == [
            ("7", "Paris", [{"role": "user", "content": "Capital of France?\nAnswer in one word."}]),
            ("8", "Madrid", [{"role": "user", "content": "Capital of Spain?\nAnswer in one word."}])]


def test_launch_imports_no_heavy_library():
    code = ("import sys, cream_train.run.launch\n"
            "print([m for m in ('torch', 'transformers', 'trl', 'vllm', 'accelerate', 'typer') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
