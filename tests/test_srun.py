"""A run on several machines: ``nodes.launcher: srun`` (one `cream run`, each stage that spans machines one Slurm
job step) and ``nodes.launcher: followers`` (every machine its own `cream run`, bounded by heartbeats).

* under a fake ``srun`` (FAKE_SRUN: the step's tasks as concurrent processes on this machine, with Slurm's task
  variables) a two-machine run writes the tables of the one-process run, with the same fingerprints; its training
  runs as accelerate over both "nodes" with no follower;
* `cream run --plan` writes the srun lines on a login node; `cream run` itself refuses outside an allocation;
* :mod:`cream_train.run.slurm_task` fills in each task's shard, rank, GPUs and record file;
* a follower whose machine 0 never starts, or whose machine 0 goes silent, stops with one line within its
  (shrunk) deadline; machine 0 stops waiting for the shards of a silent machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cream_data.errors import CreamError
from cream_data.tables import io
from tests.support import REPO
from tests.support.cli import cream_executable
from tests.support.processes import ENV
from tests.support.runs import write_tiny_run_config

FAKE_SRUN = '''
import os, signal, subprocess, sys, threading, time

args, nodes, per_node, label = sys.argv[1:], 1, 1, False
while args and args[0].startswith("-"):
    opt = args.pop(0)
    if opt == "--nodes":
        nodes = int(args.pop(0))
    elif opt == "--ntasks-per-node":
        per_node = int(args.pop(0))
    elif opt == "--label":
        label = True
    elif opt != "--kill-on-bad-exit=1":
        sys.exit(f"fake srun: unexpected option {opt}")
total, lock, procs = nodes * per_node, threading.Lock(), []
for i in range(total):
    env = {**os.environ, "SLURM_PROCID": str(i), "SLURM_NTASKS": str(total), "SLURM_NODEID": str(i // per_node),
           "SLURM_LOCALID": str(i % per_node), "SLURM_JOB_NODELIST": ",".join(["localhost"] * nodes),
           "SLURM_JOB_ID": os.environ.get("SLURM_JOB_ID", "1")}
    procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs])


def relay(i, p):
    for line in p.stdout:
        with lock:
            sys.stdout.buffer.write((f"{i}: ".encode() if label else b"") + line)
            sys.stdout.buffer.flush()


threads = [threading.Thread(target=relay, args=(i, p)) for i, p in enumerate(procs)]
for t in threads:
    t.start()
while any(p.poll() is None for p in procs):
    if any(p.poll() not in (None, 0) for p in procs):
        for p in procs:
            if p.poll() is None:
                p.terminate()
    time.sleep(0.1)
for t in threads:
    t.join()
sys.exit(max(128 - p.returncode if p.returncode < 0 else p.returncode for p in procs))
'''


def fake_srun(folder: Path) -> dict[str, str]:
    """FAKE_SRUN as ``srun`` in ``folder``; the environment of a `cream run` inside a (fake) allocation."""
    folder.mkdir(exist_ok=True)
    srun = folder / "srun"
    srun.write_text(f"#!{sys.executable}\n{FAKE_SRUN}")
    srun.chmod(0o755)
    return {**ENV, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}


# 1 iteration of the tiny run, no evaluation: one sample, label and train stage to shard, launch and compare
ONE_ITERATION = {"iterations": 1, "seed": 0, "sft": {"limit": 8}, "sample": {"max_new_tokens": 24, "batch_size": 1},
                 "label": {"batch_size": 4}, "train": {"warmup_ratio": 0.0, "batch_size": 4}, "eval": {"models": "none"}}


def config(tmp: Path, model: Path, name: str, **overrides) -> Path:
    """TMP/NAME.yaml: :data:`ONE_ITERATION` of ``model``, changed by ``overrides`` (e.g. the nodes section)."""
    return write_tiny_run_config(tmp, ONE_ITERATION, name=name, model=model, **overrides)


def run_cream(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(cream_executable()), *map(str, args)], check=False, capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **env}, timeout=timeout, stdin=subprocess.DEVNULL)


def tables(run: Path) -> dict[str, list[dict]]:
    """Iteration 1's tables, rows in key order, the run's own path written RUN (its models are named by path)."""
    out = {}
    for sub, kind, keys in (("responses", "responses", ["prompt_id", "response_idx"]),
                            ("scores", "scores", ["prompt_id", "response_idx", "scorer"]),
                            ("preferences", "preferences", ["prompt_id"])):
        rows = io.read_table(run / "iter-1" / sub, kind).sort_by([(k, "ascending") for k in keys]).to_pylist()
        out[kind] = [{k: v.replace(str(run), "RUN") if isinstance(v, str) else v for k, v in r.items()} for r in rows]
    return out


def assert_same_tables(a: dict, b: dict, atol: float = 1e-5) -> None:
    """Equal rows; floats (log-probabilities, rewards, weights) within ``atol``: a shard scores other batches."""
    for kind, rows in a.items():
        assert len(rows) == len(b[kind]) > 0, kind
        for ra, rb in zip(rows, b[kind]):
            assert ra.keys() == rb.keys(), kind
            for k, x in ra.items():
                y = rb[k]
                if isinstance(x, float) or (isinstance(x, list) and x and isinstance(x[0], float)):
                    np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), atol=atol, rtol=0,
                                               err_msg=f"{kind}.{k}")
                else:
                    assert x == y, f"{kind}.{k}: {x!r} != {y!r}"


def stages(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["stages"]


# ------------------------------------------------------------------------------------------- srun end to end
@pytest.fixture(scope="module")
def srun_run(tmp_path_factory, tiny_model):
    """The run done in one process (--in-process), and the same run as one `cream run` under a fake srun with
    nodes {launcher: srun, num_machines: 2}: sample and label one shard per "node", training on the driver."""
    from cream_train.run.loop import run

    tmp = tmp_path_factory.mktemp("srun")
    single = run(config(tmp, tiny_model, "single"), log=lambda m: None, in_process=True).run_dir
    env = fake_srun(tmp / "bin")
    cfg = config(tmp, tiny_model, "srun", nodes={"launcher": "srun", "num_machines": 2})
    r = run_cream("run", cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, single, tmp / "srun", env, r.stderr


@pytest.mark.slow
def test_srun_run_writes_the_tables_of_the_one_process_run(srun_run):
    _, single, run, _, err = srun_run
    assert_same_tables(tables(single), tables(run))
    # the same stages with the same fingerprints (the nodes keys are no stage's input): resuming is unchanged
    a, b = stages(single), stages(run)
    assert list(a) == list(b) and all(a[s]["fingerprint"] == b[s]["fingerprint"] for s in a)
    sample, label = b["sample-1"], b["label-1"]
    assert sample["commands"][0].startswith("srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 --label ")
    assert "-m cream_train.run.slurm_task" in sample["commands"][0]
    assert sample["commands"][0].endswith("--shard '{SLURM_PROCID}/{SLURM_NTASKS}'")
    assert sample["rows"] == sample["rows_all_machines"] == 12  # both tasks' records, merged
    assert label["pairing"]["pairs"] == a["label-1"]["pairing"]["pairs"]
    assert not b["train-M2"]["commands"][0].startswith("srun")  # launcher none: the driver's own stage
    log = (run / "logs" / "sample-1.log").read_text()
    assert "0: " in log and "1: " in log  # one log for the step, each line with its task
    assert not list((run / "logs").glob("*.shard-*")) and not (run / ".machines").exists()  # no follower
    assert "sample-1 0 │" in err and "sample-1 1 │" in err  # the tasks' lines reach the user, by task


@pytest.mark.slow
def test_srun_trains_over_two_nodes_with_accelerate(srun_run, tiny_model):
    """Training under launcher accelerate is one task per node, each `accelerate launch` with its node's rank and
    the first node's address; the stages before it are kept (finished, same fingerprints)."""
    tmp, single, done, env, _ = srun_run
    run = tmp / "srun-ddp"
    shutil.copytree(done, run)
    port = _free_port()
    cfg = config(tmp, tiny_model, "srun-ddp", train={"batch_size": 2, "launcher": "accelerate", "num_processes": 1},
                 nodes={"launcher": "srun", "num_machines": 2, "main_process_port": port})
    r = run_cream("run", cfg, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sample-1: done earlier, skipped" in r.stderr and "label-1: done earlier, skipped" in r.stderr
    line = stages(run)["train-M2"]["commands"][0]
    assert line.startswith("srun --nodes 2 --ntasks-per-node 1 ") and "accelerate.commands.launch" in line
    assert "--num_machines 2 --machine_rank '{SLURM_NODEID}' --main_process_ip '{first_node}'" in line
    # 2 nodes x 1 process x 2 pairs = the one-process run's 4: the same update M1 -> M2, up to float noise (the
    # all-reduce sums in another order; Adam divides by sqrt(v), so a near-zero gradient's noise shows in its step)
    from safetensors.numpy import load_file

    m1, a, b = (load_file(str(p)) for p in (single / "models" / "M1" / "model.safetensors",
                                            single / "models" / "M2" / "model.safetensors",
                                            run / "models" / "M2" / "model.safetensors"))
    step = max(float(np.abs(a[k] - m1[k]).max()) for k in a)
    assert step > 1e-4  # training moved the weights (lr 1e-3)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 0.1 * step
    moved = sum(int((a[k] != m1[k]).sum()) for k in a)
    agree = sum(int((np.sign(a[k] - m1[k]) == np.sign(b[k] - m1[k])).sum()) for k in a)
    assert agree >= 0.99 * sum(v.size for v in a.values()) and moved > 0  # the same direction almost everywhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tasks_user_error_is_the_stages_one_line(tmp_path, monkeypatch):
    """A task that refuses its input (exit 2) ends the step; `cream run` repeats its line, the task's label off."""
    from cream_train.run.launch import Launcher
    from cream_train.run.stage_process import StageRunner

    for key, value in fake_srun(tmp_path / "bin").items():
        monkeypatch.setenv(key, value)
    lines: list[str] = []
    runner = StageRunner(tmp_path / "run", lines.append)
    with pytest.raises(CreamError) as err:
        runner.run("sample-1", ["sample", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--model", "m"],
                   Launcher(num_machines=2, node_launcher="srun"))
    assert type(err.value) is CreamError and err.value.exit_code == 2
    assert str(err.value).startswith(f"stage sample-1: {tmp_path / 'missing'}: no such file or folder")
    assert str(err.value).endswith(f"(log: {tmp_path / 'run' / 'logs' / 'sample-1.log'})")
    # whichever task fails first is the one shown: --kill-on-bad-exit stops the other before it prints
    assert any(re.match(r"\[dim\]  sample-1 [01] │\[/\] error:", line) for line in lines), lines
    assert runner.commands["sample-1"][0].startswith("srun --nodes 2 --ntasks-per-node 1 ")


# ------------------------------------------------------------------------------------------- plan, refusals
def test_plan_writes_srun_lines_on_a_login_node(tmp_path, tiny_model):
    cfg = config(tmp_path, tiny_model, "planned", train={"batch_size": 2, "launcher": "accelerate", "num_processes": 4},
                 label={"data_parallel": 4}, nodes={"launcher": "srun", "num_machines": 2})
    login = {**ENV, "SLURM_JOB_ID": ""}  # no allocation, no srun: the plan needs neither
    r = run_cream("run", cfg, "--plan", env=login)
    assert r.returncode == 0, r.stderr
    lines = [line.strip() for line in r.stdout.splitlines()]
    srun = [line for line in lines if line.startswith("srun ")]
    assert len(srun) == 3, r.stdout  # sample-1, label-1, train-M2
    assert srun[0].startswith("srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 --label python -m "
                              "cream_train.run.slurm_task cream sample ")
    assert srun[1].startswith("srun --nodes 2 --ntasks-per-node 4 --kill-on-bad-exit=1 --label python -m "
                              "cream_train.run.slurm_task --pin-gpus 1 cream label ")
    assert all(s.endswith("--shard '{SLURM_PROCID}/{SLURM_NTASKS}'") for s in srun[:2])
    assert srun[2].startswith("srun --nodes 2 --ntasks-per-node 1 --kill-on-bad-exit=1 --label python -m "
                              "cream_train.run.slurm_task python -m accelerate.commands.launch --num_processes 8 "
                              "--multi_gpu --num_machines 2 --machine_rank '{SLURM_NODEID}' --main_process_ip "
                              "'{first_node}' --main_process_port 29500 -m cli.main train ")
    assert any(line.startswith("cream train ") and "--stage sft" in line for line in lines)  # SFT: the driver's
    assert not (tmp_path / "planned").exists()
    r = run_cream("run", cfg, "--check", env=login)
    assert r.returncode == 0 and "launcher: srun" in r.stdout, r.stderr


def test_srun_mode_refuses_to_start_outside_an_allocation(tmp_path, tiny_model):
    cfg = config(tmp_path, tiny_model, "refused", nodes={"launcher": "srun", "num_machines": 2})
    cases = [({**ENV, "SLURM_JOB_ID": ""}, "not inside a Slurm allocation (SLURM_JOB_ID is unset)"),
             ({**ENV, "SLURM_JOB_ID": "7", "PATH": str(Path(sys.executable).parent)}, "`srun` is not on PATH")]
    for env, needle in cases:
        r = run_cream("run", cfg, env=env)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
        assert "nodes.launcher srun" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "refused").exists()
    r = run_cream("run", cfg, "--machine-rank", "1", "--check", env=cases[0][0])
    assert r.returncode == 2 and "--machine-rank: got 1 with nodes.launcher srun" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------- one Slurm task
def task(*argv: str, env: dict, pin: int | None = None) -> subprocess.CompletedProcess:
    """`python -m cream_train.run.slurm_task …` printing what its command received (argv and environment)."""
    show = ("import json, os, sys; print(json.dumps([sys.argv[1:], {k: os.environ.get(k) for k in "
            "('CUDA_VISIBLE_DEVICES', 'CREAM_RESULT_FILE', 'CREAM_RUN_PID')}]))")
    pinning = ["--pin-gpus", str(pin)] if pin is not None else []
    return subprocess.run([sys.executable, "-m", "cream_train.run.slurm_task", *pinning, sys.executable, "-c", show,
                           *argv], check=False, capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env})


def test_a_task_fills_in_its_shard_rank_gpus_and_record():
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_NODEID": "1", "SLURM_LOCALID": "1",
             "SLURM_STEP_NODELIST": "gpu[007-009,012],login1", "CUDA_VISIBLE_DEVICES": "4,5,6,7",
             "CREAM_RESULT_FILE": "/r/.sample-1.task-{SLURM_PROCID}.result.json", "CREAM_RUN_PID": "123"}
    r = task("--shard", "{SLURM_PROCID}/{SLURM_NTASKS}", "--rank", "{SLURM_NODEID}", "--ip", "{first_node}",
             "{not_a_field}", env={**slurm, "CREAM_RUN_HOST": socket.gethostname()}, pin=2)
    assert r.returncode == 0, r.stderr
    argv, env = json.loads(r.stdout)
    assert argv == ["--shard", "5/8", "--rank", "1", "--ip", "gpu007", "{not_a_field}"]
    assert env == {"CUDA_VISIBLE_DEVICES": "6,7", "CREAM_RESULT_FILE": "/r/.sample-1.task-5.result.json",
                   "CREAM_RUN_PID": "123"}  # the run's host: its pid is watched
    r = task(env={**slurm, "CREAM_RUN_HOST": "another-node"})
    assert json.loads(r.stdout)[1] == {"CUDA_VISIBLE_DEVICES": "4,5,6,7",  # not pinned: a lone task per node
                                       "CREAM_RESULT_FILE": "/r/.sample-1.task-5.result.json", "CREAM_RUN_PID": None}
    r = task("--shard", "{SLURM_PROCID}/{SLURM_NTASKS}", env={})  # not under srun
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [(
        "error: {SLURM_PROCID}: SLURM_PROCID is not set; usage: python -m cream_train.run.slurm_task [--pin-gpus G] "
        "COMMAND [ARG …] (inside a Slurm job step)")], r.stderr
    r = task(env={**slurm, "SLURM_LOCALID": "3"}, pin=2)
    assert r.returncode == 2 and "needs 8 GPUs; 4 are available" in r.stderr


def test_first_host_of_a_slurm_host_list():
    from cream_train.run.slurm_task import first_host

    assert first_host("gpu[007-009,012],login1") == "gpu007"
    assert first_host("n1,n2") == "n1"
    assert first_host("node-a") == "node-a"
    assert first_host("rack[1-2]-node[03-04]") == "rack1-node03"
    assert first_host("a[3,1-2]") == "a3"


# ------------------------------------------------------------------------------------------- followers: heartbeats
FOLLOWER = {"num_machines": 2, "main_process_ip": "127.0.0.1", "start_timeout": 2, "alive_timeout": 2}


def errors_of(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_follower_whose_machine_0_never_starts_stops_within_its_deadline(tmp_path, tiny_model):
    cfg = config(tmp_path, tiny_model, "alone", nodes=FOLLOWER)
    t0 = time.monotonic()
    r = run_cream("run", cfg, "--machine-rank", "1", env=ENV, timeout=60)
    took = time.monotonic() - t0
    [line] = errors_of(r.stderr)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == line, r.stderr
    assert 2 <= took < 30, took  # start_timeout 2 s, plus the command's start
    run = tmp_path / "alone"
    assert f"machine 1: no heartbeat from machine 0 in {run} within 2 s" in line
    assert "0.alive never appeared; nodes.start_timeout" in line and "file system both machines share" in line
    assert not (run / ".machines" / "1.alive").exists()  # its own heartbeat is gone with it
    # a manifest there but no machine 0 (a copy of the run directory, not the shared one): its first wait stops
    (run / "manifest.json").write_text(json.dumps({"stages": {}, "models": {}}))
    r = run_cream("run", cfg, "--machine-rank", "1", env=ENV, timeout=60)
    [line] = errors_of(r.stderr)
    assert r.returncode == 2 and f"machine 1: no heartbeat from machine 0 in {run} within 2 s" in line, r.stderr


def test_a_follower_stops_when_machine_0s_heartbeat_goes_still(tmp_path, tiny_model):
    """The test is machine 0: its manifest and its heartbeat, stopped once the follower waits on it. The follower
    stops within alive_timeout (2 s) of the last beat, with one line."""
    from cream_train.run.heartbeat import Heartbeat

    cfg = config(tmp_path, tiny_model, "silent", nodes=FOLLOWER)
    run = tmp_path / "silent"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stages": {}, "models": {}}))
    with Heartbeat(run, 0, timeout=2):
        proc = subprocess.Popen([str(cream_executable()), "run", str(cfg), "--machine-rank", "1"], cwd=REPO,
                                env={**os.environ, **ENV}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        seen: list[str] = []

        def read():
            for line in proc.stderr:  # as it comes: the test watches for the follower's wait
                seen.append(line)  # noqa: PERF402

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any("waiting for machine 0" in line for line in seen):  # it waits on machine 0's first stage
            assert proc.poll() is None and time.monotonic() < deadline, seen
            time.sleep(0.1)
        time.sleep(1.5)  # three beats: it has seen machine 0 alive (a look every 0.5 s)
    t0 = time.monotonic()
    assert proc.wait(timeout=30) == 2
    took = time.monotonic() - t0
    reader.join(5)
    [line] = errors_of("".join(seen))
    assert took < 10, took  # alive_timeout 2 s
    assert f"machine 1: machine 0's heartbeat ({run / '.machines' / '0.alive'}) has not changed for" in line
    assert "nodes.alive_timeout 2" in line and "rerun every machine" in line


def test_machine_0_stops_waiting_for_the_shards_of_a_silent_machine(tmp_path):
    from cream_train.run.heartbeat import Heartbeat
    from cream_train.run.machines import wait_for_shards
    from cream_train.run.sections import NodesSection

    nodes = NodesSection(num_machines=3, main_process_ip="h", alive_timeout=1.0)
    said: list[str] = []
    with Heartbeat(tmp_path, 1, timeout=1.0):  # machine 1 beats; machine 2 never started
        t0 = time.monotonic()
        with pytest.raises(CreamError) as err:
            wait_for_shards(tmp_path / "responses", "sample-1", said.append, tmp_path, nodes)
    assert 1.0 <= time.monotonic() - t0 < 5
    said_first = re.escape(f"sample-1: machine 2's heartbeat ({tmp_path / '.machines' / '2.alive'}) has not changed "
                           "for ") + r"\d+ s while machine 0 waits for its shards"
    assert re.match(said_first, str(err.value)), err.value
    assert "--machine-rank 2" in str(err.value) and said == [
        "  sample-1: this machine's shards are done; waiting for the other machines' shards"]


def test_a_pulse_counts_changes_only(tmp_path):
    from cream_train.run.heartbeat import Heartbeat, Pulse, heartbeat_file

    heartbeat_file(tmp_path, 0).parent.mkdir()
    heartbeat_file(tmp_path, 0).write_text("a previous run's last beat")
    pulse = Pulse(tmp_path, 0)
    assert pulse.silence() < 1 and not pulse.seen  # what was there before does not count
    with Heartbeat(tmp_path, 0, timeout=0.4) as beat:
        time.sleep(0.3)
        assert pulse.silence() < 0.3 and pulse.seen and beat.beats >= 2
    pulse.silence()  # its last beat
    time.sleep(0.3)
    assert pulse.silence() >= 0.3  # stopped: the file no longer changes
