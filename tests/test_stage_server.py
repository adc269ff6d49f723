"""The stage server (cream_train/run/stage_server.py): `cream run`'s stage processes forked from one process that
imported torch once. A forked stage must be indistinguishable from a new process: the same record, output, log,
exit codes and errors, the same reaction to signals; stages that are not the same when forked start as new processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from cream_data.tables import io
from cream_train.run import stage_server
from cream_train.run.launch import Launcher, launch_commands
from cream_train.run.stage_process import StageFailed, StageRunner
from tests.support.processes import children_of, wait_for
from tests.support.tables import prompts_table


def _sample_argv(tmp_path, tiny_model, out: str) -> list[str]:
    return ["sample", str(tmp_path / "prompts"), "--out", str(tmp_path / out), "--model", str(tiny_model),
            "--n", "2", "--max-new-tokens", "4", "--batch-size", "2", "--seed", "3"]


@pytest.fixture
def prompts(tmp_path):
    io.write_table(prompts_table(3), tmp_path / "prompts", "prompts")


def test_a_forked_stage_equals_a_new_process(tmp_path, tiny_model, prompts, monkeypatch):
    """The same `cream sample` through the server and as a new process (CREAM_STAGE_SERVER=0): the same record and
    responses, value for value, and the same log lines; the forked one ran as a child of the server."""
    results = {}
    for mode in ("1", "0"):
        monkeypatch.setenv(stage_server.SWITCH_ENV, mode)
        lines = []
        runner = StageRunner(tmp_path / f"run-{mode}", log=lines.append)
        started = []
        real = stage_server.StageServer.spawn

        def spawn(self, *a, **k):
            p = real(self, *a, **k)
            started.append(p)
            return p

        monkeypatch.setattr(stage_server.StageServer, "spawn", spawn)
        try:
            (rec,) = runner.run("sample-1", _sample_argv(tmp_path, tiny_model, f"out-{mode}"), Launcher())
            server = runner._server
            if mode == "1":
                assert server is not None and len(started) == 1 and isinstance(started[0], stage_server.ForkedProcess)
                assert started[0].returncode == 0 and started[0].pid != server.proc.pid
                # in `ps` the server (and each stage it forks) names the run it works for
                assert server.proc.pid in children_of(tmp_path / f"run-{mode}")
            else:
                assert server is None and not started
        finally:
            runner.close()
        table = io.read_table(tmp_path / f"out-{mode}", "responses").sort_by([("prompt_id", "ascending"),
                                                                             ("response_idx", "ascending")])
        results[mode] = (rec, table.drop_columns([c for c in table.column_names if c in ("created_at",)]), lines)
    (rec1, t1, lines1), (rec0, t0, lines0) = results["1"], results["0"]
    assert t1.num_rows == t0.num_rows == 6
    assert t1.column("response").to_pylist() == t0.column("response").to_pylist()
    assert {k: v for k, v in rec1.items() if k != "peak_rss_gib"} == {k: v for k, v in rec0.items()
                                                                      if k != "peak_rss_gib"}

    def said(lines, mode):  # the log lines, but for the speed and the output folder
        return [re.sub(r"[0-9.]+ tok/s", "R tok/s", m).replace(f"out-{mode}", "OUT") for m in lines if "│" in m]

    assert said(lines1, "1") == said(lines0, "0") and any("sampled 3 prompts x 2" in m for m in said(lines1, "1"))


def test_only_one_plain_cream_process_is_forked(tmp_path):
    """Launchers, shard processes, a launcher's own variables, a variable the server was not started with (a library
    may read it once, at import) and another interpreter start new processes; per-stage CREAM_* variables do not."""
    server = stage_server.StageServer(sys.executable, dict(os.environ), tmp_path / "server.log")
    try:
        (plain,) = launch_commands(["sample", "P", "--out", "O"], Launcher(), python=sys.executable)
        env = {**os.environ, "CREAM_RESULT_FILE": "x", "CREAM_RUN_PID": "1", "CREAM_PROGRESS": "lines"}
        assert server.eligible(plain.argv, env, plain.env, plain.tasks)
        assert not server.eligible(plain.argv, {**env, "OMP_NUM_THREADS": "7"}, plain.env, plain.tasks)
        assert not server.eligible(["/other/python", *plain.argv[1:]], env, plain.env, plain.tasks)
        shards = launch_commands(["sample", "P", "--out", "O"], Launcher(data_parallel=2), python=sys.executable)
        assert len(shards) == 2 and not any(server.eligible(p.argv, env, p.env, p.tasks) for p in shards)
        (acc,) = launch_commands(["train", "P", "--out", "O"], Launcher(launcher="accelerate", num_processes=2),
                                 python=sys.executable)
        assert not server.eligible(acc.argv, env, acc.env, acc.tasks)
        assert not server.eligible(plain.argv, env, {"CUDA_VISIBLE_DEVICES": "1"}, plain.tasks)
    finally:
        server.close()
    assert server.proc.returncode is not None and server.closed


def test_user_errors_crashes_and_signals_are_reported_as_from_a_new_process(tmp_path, tiny_model, prompts):
    """Exit 2 with its one line → that line; a stage killed by a signal → 'killed by signal 9' and its log; the
    server keeps serving the next stage."""
    from cream_data.errors import CreamError

    runner = StageRunner(tmp_path / "run", log=lambda m: None)
    try:
        with pytest.raises(CreamError, match=r"stage sample-1: .*no-such-prompts") as e:
            runner.run("sample-1", ["sample", str(tmp_path / "no-such-prompts"), "--out", str(tmp_path / "o"),
                                    "--model", str(tiny_model)], Launcher())
        assert not isinstance(e.value, StageFailed) and runner._server is not None
        server = runner._server
        victim = []

        def kill_when_started():
            wait_for(lambda: _children(server.proc.pid), timeout=120, what="a forked stage")
            for pid in _children(server.proc.pid):
                victim.append(pid)
                os.kill(pid, signal.SIGKILL)

        import threading

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        with pytest.raises(StageFailed, match=r"stage sample-2 failed \(killed by signal 9\), log at"):
            runner.run("sample-2", _sample_argv(tmp_path, tiny_model, "o2"), Launcher())
        killer.join()
        assert victim
        (rec,) = runner.run("sample-3", _sample_argv(tmp_path, tiny_model, "o3"), Launcher())  # still serving
        assert rec["rows"] == 6 and runner._server is server and not server.closed
    finally:
        runner.close()


def test_stopping_a_stage_reaches_its_whole_process_group(tmp_path):
    """cream run stops a stage with SIGTERM to its process group: the forked process leads its own session, so the
    signal reaches it and what it started."""
    server = stage_server.StageServer(sys.executable, dict(os.environ), tmp_path / "server.log",
                                      module="tests.support.sleeper")
    argv = [sys.executable, "-m", "tests.support.sleeper", str(tmp_path / "child.pid")]
    try:
        proc = server.spawn(argv, dict(os.environ), os.getcwd())
        assert proc is not None and os.getpgid(proc.pid) == proc.pid and os.getsid(proc.pid) == proc.pid
        wait_for(lambda: (tmp_path / "child.pid").exists(), timeout=60, what="the grandchild")
        grandchild = int((tmp_path / "child.pid").read_text())
        assert os.getpgid(grandchild) == proc.pid
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
        wait_for(lambda: not _alive(grandchild), timeout=30, what="the grandchild to end")
    finally:
        server.close()


def test_the_server_ends_with_the_run(tmp_path):
    """Closing the socket (the run ends, or is killed) ends the server; a stage then starts as a new process."""
    server = stage_server.StageServer(sys.executable, dict(os.environ), tmp_path / "server.log")
    server.close()
    assert server.proc.poll() is not None
    assert server.spawn([sys.executable, "-m", "cli.main", "--version"], dict(os.environ), os.getcwd()) is None
    # a run killed with -9: the server sees its end of the socket close and exits by itself
    code = ("import os, sys; from pathlib import Path; from cream_train.run import stage_server as s; "
            f"srv = s.StageServer(sys.executable, dict(os.environ), Path({str(tmp_path / 'l.log')!r})); "
            "print(srv.proc.pid, flush=True); os.kill(os.getpid(), 9)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pid = int(out.stdout.split()[0])
    wait_for(lambda: not _alive(pid), timeout=120, what="the orphaned server to exit")


def _children(pid: int) -> list[int]:
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_forked_command_writes_its_output_and_exit_code(tmp_path):
    """The server answers once its imports are done; the forked `cream --version` exits 0 with the version on its
    output, and the server's log says it was ready."""
    server = stage_server.StageServer(sys.executable, dict(os.environ), tmp_path / "server.log")
    try:
        proc = server.spawn([sys.executable, "-m", "cli.main", "--version"], dict(os.environ), os.getcwd())
        assert proc is not None
        out = proc.stdout.read().decode()
        assert proc.wait(60) == 0 and "cream" in out.lower(), out
        assert "ready" in (tmp_path / "server.log").read_text()
    finally:
        server.close()


def test_no_server_where_a_gpu_is_visible_or_it_is_turned_off(tmp_path, monkeypatch):
    """A GPU in sight (CUDA_VISIBLE_DEVICES naming one) or CREAM_STAGE_SERVER=0: every stage a new process; none
    visible (CUDA_VISIBLE_DEVICES empty): a server."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert stage_server.start(sys.executable, tmp_path / "a.out") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv(stage_server.SWITCH_ENV, "0")
    assert stage_server.start(sys.executable, tmp_path / "b.out") is None
    monkeypatch.setenv(stage_server.SWITCH_ENV, "1")
    server = stage_server.start(sys.executable, tmp_path / "c.out")
    try:
        assert isinstance(server, stage_server.StageServer) and server.proc.poll() is None
    finally:
        server.close()
