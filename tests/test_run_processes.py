"""`cream run` starting each model stage as its own process (cream_train/run/stage_process.py), on the tiny model:

* sample and label as 2 data-parallel shard processes and DPO training under `accelerate launch` with 2 processes
  (DDP over gloo) give the tables of a run done in one process, and an M2 equal to its within 1e-6;
* the parent process never imports torch;
* kill -9 of the parent during a stage process, and kill -9 of one shard process: a rerun finishes with the same
  tables, no (prompt_id, response_idx) lost or doubled, finished stages and finished shards not redone (each kill
  test starts where its kill happens: the stages before it linked by `--reuse-from` from the parallel run);
* a child's user error reaches the user as its one line (exit 2); a crash as "stage X failed …, log at …";
* two machines (two `cream run --machine-rank` on one run directory, accelerate multi-node over localhost).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from cream_data.tables import io
from tests.support import REPO
from tests.support.processes import children_of, wait_for
from tests.support.runs import finished_up_to, write_tiny_run_config, write_yaml

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
# The parent as users run it (cli.main), reporting whether torch was imported into it.
PARENT = """
import json, sys
from cli.main import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code
json.dump({"torch": "torch" in sys.modules, "code": code}, open(sys.argv[1], "w"))
sys.exit(code)
"""


# 1 iteration of the tiny run, the last model evaluated on 2 arc_easy items
ONE_ITERATION = {"iterations": 1, "seed": 0, "sft": {"limit": 8}, "sample": {"max_new_tokens": 24, "batch_size": 1},
                 "label": {"batch_size": 4}, "train": {"warmup_ratio": 0.0, "batch_size": 4},
                 "eval": {"tasks": ["arc_easy"], "max_new_tokens": 4, "models": "last"}}


def config(tmp: Path, model: Path, shared: Path, name: str, *layers, **overrides) -> Path:
    """TMP/NAME.yaml: :data:`ONE_ITERATION` of ``model`` (eval data in ``shared``), changed by ``layers`` and
    ``overrides``."""
    return write_tiny_run_config(tmp, ONE_ITERATION, *layers, name=name, model=model, eval={"data_dir": shared},
                                 **overrides)


PARALLEL = dict(sample={"data_parallel": 2}, label={"data_parallel": 2},
                train={"batch_size": 2, "launcher": "accelerate", "num_processes": 2})  # 2 x 2 pairs = the one run's 4
UP_TO_SFT = ("prompts", "sft-data", "train-M1")  # the stages a run has finished when it starts sampling
# The sampling kill tests: the parallel run's sample and label shards, then training in the stage process and no
# evaluation (what they check is iteration 1's tables; train-M2 and eval-M2 are no input of those)
NO_EVAL = {"eval": {"models": "none"}}
SAMPLING_KILL = dict(PARALLEL, train={"batch_size": 2, "launcher": "none", "num_processes": 1})


def start(cfg: Path, *args: str, report: Path | None = None) -> subprocess.Popen:
    report = report or cfg.with_suffix(".parent.json")
    return subprocess.Popen([sys.executable, "-c", PARENT, str(report), "run", str(cfg), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out, err


def tables(run: Path) -> dict:
    """The iteration's tables in a canonical order, run paths made relative (they name the run's models)."""
    out = {}
    for sub, kind, keys in (("responses", "responses", ["prompt_id", "response_idx"]),
                            ("scores", "scores", ["prompt_id", "response_idx", "scorer"]),
                            ("preferences", "preferences", ["prompt_id"])):
        t = io.read_table(run / "iter-1" / sub, kind).sort_by([(k, "ascending") for k in keys]).to_pylist()
        out[kind] = [{k: (v.replace(str(run), "RUN") if isinstance(v, str) else v) for k, v in row.items()}
                     for row in t]
    return out


def weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def assert_close_models(a: Path, b: Path, start: Path) -> None:
    """``b`` trained like ``a`` from ``start``: max |a - b| <= 1e-5 and |b - a| <= 1e-3 |a - start| (norms)."""
    wa, wb, w0 = weights(a), weights(b), weights(start)
    diff = np.concatenate([(wa[k] - wb[k]).ravel() for k in wa])
    step = np.concatenate([(wa[k] - w0[k]).ravel() for k in wa])
    assert np.abs(step).max() > 1e-4  # training moved the weights
    assert np.abs(diff).max() <= 1e-5 and np.linalg.norm(diff) <= 1e-3 * np.linalg.norm(step), (
        np.abs(diff).max(), np.linalg.norm(diff) / np.linalg.norm(step))


def same_tables(a: dict, b: dict, atol: float = 0.0) -> None:
    """Every value equal; floats (log-probabilities, rewards) within ``atol``."""
    for kind in a:
        assert len(a[kind]) == len(b[kind]), kind
        for ra, rb in zip(a[kind], b[kind]):
            assert ra.keys() == rb.keys()
            for k in ra:
                x, y = ra[k], rb[k]
                if isinstance(x, float) or (isinstance(x, list) and x and isinstance(x[0], float)):
                    np.testing.assert_allclose(np.array(x, dtype=float), np.array(y, dtype=float), atol=atol,
                                               rtol=0, err_msg=f"{kind}.{k}")
                else:
                    assert x == y, f"{kind}.{k}: {x!r} != {y!r}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, shared_data):
    """The run done in one process (--in-process), batch 4."""
    from cream_train.run.loop import run

    tmp = tmp_path_factory.mktemp("procs")
    summary = run(config(tmp, tiny_model, shared_data, "single"), log=lambda m: None, in_process=True)
    return tmp, summary.run_dir


@pytest.fixture(scope="module")
def parallel(reference, tiny_model, shared_data):
    """The same run as `cream run` with 2 sample shards, 2 label shards and 2 accelerate training processes."""
    tmp, _ = reference
    cfg = config(tmp, tiny_model, shared_data, "parallel", **PARALLEL)
    code, out, err = finish(start(cfg))
    assert code == 0, err[-3000:]
    return cfg, tmp / "parallel", json.loads(cfg.with_suffix(".parent.json").read_text()), err


@pytest.mark.slow
def test_shards_and_ddp_match_the_single_process_run(reference, parallel):
    _, single = reference
    cfg, run, parent, err = parallel
    assert parent == {"torch": False, "code": 0}  # the parent never imported torch
    # the stage processes: 2 shards each for sample and label, accelerate for training, their logs kept
    logs = {p.name for p in (run / "logs").glob("*.log")}
    assert {"sample-1.shard-0-of-2.log", "sample-1.shard-1-of-2.log", "label-1.shard-0-of-2.log",
            "label-1.shard-1-of-2.log", "train-M1.log", "train-M2.log", "eval-M2.log"} == logs
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert len(stages["sample-1"]["commands"]) == 2 and "--shard 1/2" in stages["sample-1"]["commands"][1]
    assert "accelerate.commands.launch --num_processes 2 --multi_gpu" in stages["train-M2"]["commands"][0]
    assert stages["sample-1"]["rows"] == 12 and stages["label-1"]["pairing"]["pairs"] == 4  # merged records
    assert "distributed_type" not in stages["train-M2"] and stages["train-M2"]["reference"] == "stored"
    assert "MULTI_CPU" in (run / "logs" / "train-M2.log").read_text() or "gloo" in (
        run / "logs" / "train-M2.log").read_text() or stages["train-M2"]["metrics"]
    # identical tables: the same responses, rankings, pairs and weights; log-probabilities within float noise
    # (a shard scores other batches, so padding differs)
    same_tables(tables(single), tables(run), atol=1e-5)
    a, b = tables(single), tables(run)
    assert [r["chosen_idx"] for r in a["preferences"]] == [r["chosen_idx"] for r in b["preferences"]]
    # M1 (SFT, one process both times) identical to 1e-6. M2: one Adam step on 4 pairs, 1 process x 4 vs DDP 2 x 2;
    # the all-reduced gradient differs from one process's in its last bits and Adam's first step (g / |g|) turns
    # that into at most 1 % of the step (lr 1e-3): max |dW| <= 1e-5, and the two updates agree to 0.1 % in norm
    assert_close_models(single / "models" / "M2", run / "models" / "M2", single / "models" / "M1")
    w1a, w1b = weights(single / "models" / "M1"), weights(run / "models" / "M1")
    assert max(float(np.abs(w1a[k] - w1b[k]).max()) for k in w1a) <= 1e-6
    assert "sample-1" in err and "│" in err  # the children's output reached the user, prefixed by stage


def assert_reused(run: Path, stages: tuple[str, ...], donor: Path, err: str) -> None:
    """``run`` took ``stages`` from ``donor`` as links (M1 is the donor's file) and ran none of them itself."""
    recs = json.loads((run / "manifest.json").read_text())["stages"]
    assert all(recs[s]["status"] == "done" and recs[s]["reused_from"] == str(donor.resolve()) for s in stages)
    m1 = "models/M1/model.safetensors"
    assert os.stat(run / m1).st_ino == os.stat(donor / m1).st_ino  # a link, not a copy
    assert not [s for s in stages if (run / "logs" / f"{s}.log").exists()]  # no stage process started for them
    assert all(f"↺ {s}: reused from" in err for s in stages), err[-3000:]


def resumed_rows_once(run: Path) -> None:
    t = io.read_table(run / "iter-1" / "responses", "responses")
    keys = list(zip(t["prompt_id"].to_pylist(), t["response_idx"].to_pylist()))
    assert len(keys) == len(set(keys)) == 12  # 4 prompts x 3, none lost or doubled


@pytest.mark.slow
def test_kill_9_of_the_parent_during_a_stage_process_then_resume(reference, parallel, tiny_model, shared_data):
    tmp, _ = reference
    _, done_run, _, _ = parallel
    cfg = config(tmp, tiny_model, shared_data, "killed-parent", NO_EVAL, **SAMPLING_KILL)
    run, donor = tmp / "killed-parent", finished_up_to(done_run, UP_TO_SFT, tmp / "parent-donor")
    proc = start(cfg, "--reuse-from", str(donor))  # prompts and M1 linked: sampling starts at once
    wait_for(lambda: (run / "manifest.json").is_file(), what="the run to start")
    second = subprocess.run([sys.executable, "-m", "cli.main", "run", str(cfg), "--reuse-from", str(donor)],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)  # the same run, meanwhile
    assert second.returncode == 2 and "is being written by" in second.stderr, second.stderr[-1000:]
    assert len([m for m in second.stderr.splitlines() if m.strip()]) == 1
    shard_done = run / "iter-1" / "responses"
    wait_for(lambda: any(shard_done.glob("_manifest.shard-*.json")), what="a finished sample shard")
    finished = sorted(p.name for p in shard_done.glob("_manifest.shard-*.json"))
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    wait_for(lambda: not children_of(run), timeout=30, what="the stage processes to end with their parent")
    before = json.loads((run / "manifest.json").read_text())["stages"]
    assert before["sample-1"]["status"] == "running" and before["train-M1"]["status"] == "done"
    assert_reused(run, UP_TO_SFT, donor, err)

    code, out, err = finish(start(cfg, "--reuse-from", str(donor)))  # the same command again: M1 is its own now
    assert code == 0, err[-3000:]
    after = json.loads((run / "manifest.json").read_text())["stages"]
    assert after["train-M1"]["finished"] == before["train-M1"]["finished"]  # a finished stage is not redone
    assert "train-M1: done earlier, skipped" in err
    for name in finished:  # a shard finished before the kill is not sampled again
        i = int(name.split(".shard-")[1][:5])
        log = (run / "logs" / f"sample-1.shard-{i}-of-2.log").read_text().split("==== ")[-1]
        assert "sampled 0 prompts" in log and "(2 already done)" in log, log
    resumed_rows_once(run)
    same_tables(tables(done_run), tables(run))  # what the uninterrupted parallel run wrote, value for value


@pytest.mark.slow
def test_kill_9_of_one_shard_process_then_resume(reference, parallel, tiny_model, shared_data):
    tmp, _ = reference
    _, done_run, _, _ = parallel
    cfg = config(tmp, tiny_model, shared_data, "killed-shard", NO_EVAL, **SAMPLING_KILL)
    run, donor = tmp / "killed-shard", finished_up_to(done_run, UP_TO_SFT, tmp / "shard-donor")
    proc = start(cfg, "--reuse-from", str(donor))  # prompts and M1 linked: sampling starts at once
    victim: list[int] = []

    def shard_running():
        victim[:] = [p for p in children_of(run) if "--shard 0/2" in Path(f"/proc/{p}/cmdline").read_bytes()
                     .replace(b"\0", b" ").decode() and b"sample" in Path(f"/proc/{p}/cmdline").read_bytes()]
        return bool(victim) and (run / "iter-1" / "responses").is_dir()

    wait_for(shard_running, what="sample shard 0's process")
    time.sleep(1.0)
    for pid in victim:
        os.kill(pid, signal.SIGKILL)
    code, out, err = finish(proc)
    assert code == 1, err[-2000:]
    line = [m for m in err.splitlines() if m.startswith("error:")][-1]
    assert "stage sample-1 failed (killed by signal 9), log at" in line and "sample-1.shard-0-of-2.log" in line
    wait_for(lambda: not children_of(run), timeout=30, what="the other shard to be stopped")
    assert_reused(run, UP_TO_SFT, donor, err)

    code, out, err = finish(start(cfg, "--reuse-from", str(donor)))
    assert code == 0, err[-3000:]
    resumed_rows_once(run)
    same_tables(tables(done_run), tables(run))


@pytest.mark.slow
def test_kill_9_during_distributed_training_then_resume(reference, parallel, tiny_model, shared_data):
    """kill -9 of `cream run` while `accelerate launch` trains M2 over 2 processes: the launcher and both training
    processes end with it, M2 is not published half-written, and the rerun trains it again from M1. The stages
    before train-M2 are the parallel run's, linked (--reuse-from)."""
    tmp, _ = reference
    _, done_run, _, _ = parallel
    cfg = config(tmp, tiny_model, shared_data, "killed-train", **PARALLEL)
    upstream = (*UP_TO_SFT, "sample-1", "label-1")
    run, donor = tmp / "killed-train", finished_up_to(done_run, upstream, tmp / "train-donor")
    proc = start(cfg, "--reuse-from", str(donor))
    log = run / "logs" / "train-M2.log"
    wait_for(lambda: log.is_file() and len(children_of(run)) >= 3, what="the launcher and its training processes")
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    wait_for(lambda: not children_of(run), timeout=30, what="accelerate and its workers to end with cream run")
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["train-M2"]["status"] == "running" and stages["label-1"]["status"] == "done"
    assert_reused(run, upstream, donor, err)
    assert not (run / "models" / "M2").exists()  # nothing published

    code, out, err = finish(start(cfg, "--reuse-from", str(donor)))
    assert code == 0, err[-3000:]
    assert "label-1: done earlier, skipped" in err and "sample-1: done earlier, skipped" in err
    assert_close_models(done_run / "models" / "M2", run / "models" / "M2", done_run / "models" / "M1")
    assert not [p.name for p in (run / "models").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_childs_user_error_is_its_one_line(parallel, tmp_path):
    """A stage process that refuses its input exits 2; `cream run` names the stage and repeats its one line."""

    cfg, done_run, _, _ = parallel
    run = tmp_path / "copy"
    shutil.copytree(done_run, run)
    copy = write_yaml(tmp_path / "copy.yaml", {**yaml.safe_load(cfg.read_text()), "run_dir": str(run)})
    (run / "models" / "M2" / "chat_template.jinja").unlink()  # M2 whole as a checkpoint, but no chat model
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["stages"]["eval-M2"]  # … and its evaluation asked for again
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = finish(start(copy))
    lines = [m for m in err.splitlines() if m.startswith("error:")]
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error: stage eval-M2: ") and "chat template" in lines[0], lines[0]
    assert str(run / "logs" / "eval-M2.log") in lines[0] and "Traceback" not in err
    assert "eval-M2" not in {line.split()[-1] for line in err.splitlines() if "done earlier, skipped" in line}


@pytest.mark.slow
def test_two_machines_share_one_run(reference, tiny_model, shared_data):
    """Two `cream run --machine-rank r` on one run directory (two machines on localhost): 1 sample and 1 label
    shard each, training as one accelerate launch over both (gloo); the tables equal the one-process run's. Prompts
    and M1 (machine 0's alone) are linked from the one-process run."""
    tmp, single = reference
    donor = finished_up_to(single, UP_TO_SFT, tmp / "nodes-donor")
    cfg = config(tmp, tiny_model, shared_data, "nodes",
                 train={"batch_size": 2, "launcher": "accelerate", "num_processes": 1},
                 nodes={"num_machines": 2, "main_process_ip": "127.0.0.1", "main_process_port": 29517})
    run = tmp / "nodes"
    other = start(cfg, "--machine-rank", "1", "--reuse-from", str(donor), report=tmp / "rank1.json")
    code, _, err = finish(start(cfg, "--machine-rank", "0", "--reuse-from", str(donor), report=tmp / "rank0.json"))
    code1, _, err1 = finish(other)
    assert code == 0 and code1 == 0, (err[-2000:], err1[-2000:])
    assert_reused(run, UP_TO_SFT, donor, err)
    logs = {p.name for p in (run / "logs").glob("*.log")}
    assert {"sample-1.shard-0-of-2.log", "sample-1.shard-1-of-2.log", "train-M2.log",
            "train-M2.machine-1.log"} <= logs
    assert "--machine_rank 1" in (run / "logs" / "train-M2.machine-1.log").read_text()
    assert "machine 1 of 2" in err1 and "eval-M2" not in {line.split()[1] for line in err1.splitlines()
                                                          if line.startswith("▶")}
    same_tables(tables(single), tables(run), atol=1e-5)
    assert_close_models(single / "models" / "M2", run / "models" / "M2", single / "models" / "M1")


def test_the_config_reference_names_every_launch_key():
    """docs/CONFIG.md documents each section's launch keys and every nodes key (derived from sections.py)."""
    from cream_train.run.sections import LAUNCH, NODES, OWNED

    doc = (REPO / "docs" / "CONFIG.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    for section, keys in LAUNCH.items():
        for key in keys:
            assert any(f"`{section}.{key}`" in row for row in rows), f"{section}.{key}"
    for key in NODES:
        assert any(f"`nodes.{key}`" in row for row in rows), key
    for section, owned in OWNED.items():  # the settings the run fills, per section
        row = next(r for r in rows if r.startswith(f"| `{section}` |"))
        assert all(f"`{k}`" in row for k in owned), (section, owned)


def test_launch_mistakes_are_one_line_errors(tmp_path, tiny_model, shared_data, cream_exe):
    """Launch settings are checked with the config, through the installed `cream`, before anything runs."""
    cfg = config(tmp_path, tiny_model, shared_data, "n2", nodes={"num_machines": 2, "main_process_ip": "127.0.0.1"})
    cases = [
        (["--machine-rank", "2"], "--machine-rank: got 2, expected < nodes.num_machines (2)"),
        (["--in-process"], "--in-process: nodes.num_machines is 2"),
    ]
    for args, want in cases:
        r = cream_exe("run", cfg, *args)
        assert r.code == 2 and want in r.err and len(r.err.strip().splitlines()) == 1, (args, r)
    bad = config(tmp_path, tiny_model, shared_data, "bad", sample={"data_parallel": 0},
                 train={"launcher": "torchrn", "accelerate_config": "missing.yaml"})
    r = cream_exe("run", bad, "--check")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
    for want in ("sample.data_parallel: got 0, expected >= 1", "train.launcher: got 'torchrn'",
                 "train.accelerate_config: ", "missing.yaml is not a file"):
        assert want in r.err, (want, r.err)
    assert not (tmp_path / "n2").exists() and not (tmp_path / "bad").exists()


def test_a_stage_process_reports_its_record_progress_and_output(tmp_path, tiny_model):
    """StageRunner on one real `cream sample` process: its record (rows, tokens, peak memory) comes back through
    CREAM_RESULT_FILE, its progress steps become the caller's progress calls (not log lines), every other line is
    logged with the stage's prefix and kept in RUN/logs/sample-1.log."""
    from cream_train.run.launch import Launcher
    from cream_train.run.stage_process import StageRunner
    from tests.support.tables import prompts_table

    io.write_table(prompts_table(3), tmp_path / "prompts", "prompts")
    lines, steps = [], []
    runner = StageRunner(tmp_path / "run", log=lines.append, progress=lambda *a: steps.append(a))
    argv = ["sample", str(tmp_path / "prompts"), "--out", str(tmp_path / "responses"), "--model", str(tiny_model),
            "--n", "2", "--max-new-tokens", "3", "--batch-size", "1", "--seed", "0"]
    (rec,) = runner.run("sample-1", argv, Launcher())
    rows = io.read_table(tmp_path / "responses", "responses").num_rows
    assert rec["rows"] == rows == 6 and rec["tokens"] == 18 and rec["peak_rss_gib"] > 0.05
    assert steps and steps[-1][0] == "sampling (sample-1)" and steps[-1][1:3] == (3, 3)  # the last step: all done
    assert [s[1] for s in steps] == sorted(s[1] for s in steps)  # done only grows
    assert any("sampled 3 prompts x 2" in m and "sample-1 │" in m for m in lines)
    assert not any("cream-progress" in m for m in lines)
    log = (tmp_path / "run" / "logs" / "sample-1.log").read_text()
    assert log.startswith("==== ") and "cli.main sample" in log.splitlines()[0] and "sampled 3 prompts" in log
    assert "cream-progress" not in log
    assert runner.commands["sample-1"] == [log.splitlines()[0].split(" ", 3)[3]]  # the line it started, recorded
