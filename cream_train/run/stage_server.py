"""A stage server: one process per `cream run` that imports torch, transformers, TRL and the `cream` commands once,
then forks each stage process from that warm state instead of starting a new interpreter.

A stage process of `cream run` (cream_train/run/stage_process.py) used to spend 2.5 s (sample, label, eval) to 5.5 s
(train, which imports TRL) of every start on imports, on a 2-core CPU; a run of two iterations starts 13 of them.
Forked from the server, a stage starts in milliseconds and pays only for what its command imports beyond the
preloaded modules. What it runs is the same ``cream COMMAND …`` line the manifest records (``python -m cli.main …``):
the command-line parsing, the stage's environment (``os.environ`` set to exactly the variables the process would
have been started with), its working directory, its own session (so ``cream run`` stops it and everything it starts
with one signal to its process group), stdin from /dev/null and stdout/stderr to the pipe ``cream run`` reads. The
forked process is the server's child: the server reports its exit status to ``cream run`` (``returncode`` as
:class:`subprocess.Popen` has it: negative for a signal).

A stage is forked only where that is the same as starting it: one process of ``python -m cli.main`` with this
interpreter (no ``accelerate launch``, ``torchrun``, ``srun`` or shard processes; those start as before, each its
own ``python …`` in ``ps``; a forked stage shows the server's line, ``python -m cream_train.run.stage_server FD
RUN``) and an environment equal to the server's but for the variables ``cream run`` sets per stage (``CREAM_*``),
since libraries read some variables once, at import (OMP_NUM_THREADS, HF_HUB_OFFLINE, …). A stage that is not
eligible, or a server that failed to start or has ended, falls back to a new process. ``CREAM_STAGE_SERVER=0`` turns
the server off (every stage a new process, as ``--plan`` prints them).

It runs on Linux machines without a GPU (a CPU run, the demo, the tests; :func:`start` says why not elsewhere).
Forking after ``import torch`` is what PyTorch's own data loader workers do: torch re-creates its thread pools in a
forked child. The server imports no module of this package at its top level but ``cli.main`` and runs nothing else;
it ends when ``cream run``'s end of the socket closes (the run finished, failed or was killed), leaving any stage
still running to its own watch of the run's pid (cream_data/processes.py, ``watch_parent``).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cream_data.processes import PARENT_ENV, PROGRESS_ENV, RESULT_ENV, RUN_NAME_ENV, TRACKER_DIR_ENV

SWITCH_ENV = "CREAM_STAGE_SERVER"  # "0": no server, every stage a new process
PER_STAGE = {RESULT_ENV, PROGRESS_ENV, PARENT_ENV, RUN_NAME_ENV, TRACKER_DIR_ENV, "PYTHONUNBUFFERED"}
# what the server imports before it forks: the commands' heavy imports (a module not installed is skipped)
PRELOAD = ("torch", "transformers", "datasets", "pyarrow.parquet", "duckdb", "trl", "cli.main",
           "cream_data.engines.hf_sample", "cream_data.engines.hf_score", "cream_data.stages.label",
           "cream_data.stages.sample", "cream_data.stages.evaluate", "cream_train.train")
PRELOAD_ATTRS = {"transformers": ("AutoModelForCausalLM", "AutoTokenizer"), "trl": ("DPOTrainer", "SFTTrainer")}
MESSAGE = 1 << 20  # the largest message (a request: argv, environment, working directory)
START_TIMEOUT = 300.0  # seconds a stage waits for the server to be ready (its imports) before starting on its own


class StageServer:
    """``cream run``'s side: starts the server (``python -m cream_train.run.stage_server``) with the environment
    ``env`` and the interpreter ``python``; :meth:`spawn` forks one stage process, or says it cannot (None)."""

    def __init__(self, python: str, env: dict[str, str], log_path: Path, module: str = "cli.main", run: str = ""):
        self.python, self.module = python, module
        self.env = {**env, "PYTHONUNBUFFERED": "1"}
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            # the run directory on its command line: in `ps`, it and the stages it forks (which show the same line)
            # name the run they work for, as a stage started as a new process does
            self.proc = subprocess.Popen([python, "-m", __name__, str(theirs.fileno()), *([run] if run else [])],
                                         env=self.env,
                                         pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        theirs.close()
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}  # pid -> returncode, as the server reports them
        self._replies: dict[int, dict] = {}  # request id -> the server's answer
        self._next_id = 0
        self.closed = False  # the server has ended (or been closed): no more forks

    def eligible(self, argv: list[str], env: dict[str, str], extra_env: dict[str, str], tasks: int) -> bool:
        """Whether forking the process ``argv`` (with ``env``; ``extra_env`` its launcher's own variables) is the
        same as starting it: ``python -m cli.main …`` with this interpreter, one process (no shard of several),
        nothing launcher-specific, and the server's environment but for the per-stage variables."""
        if self.closed or extra_env or tasks or argv[:3] != [self.python, "-m", self.module] or "--shard" in argv:
            return False
        return _shared(env) == _shared(self.env)

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str) -> "ForkedProcess | None":
        """Fork ``argv`` (``python -m MODULE ARGS``, MODULE the server's: ``cli.main``) with ``env`` in ``cwd``; None
        when the server cannot."""
        read, write = os.pipe()
        with self._lock:
            self._next_id += 1
            rid = self._next_id
        request = json.dumps({"id": rid, "module": self.module, "args": argv[3:], "env": env, "cwd": cwd}).encode()
        try:
            socket.send_fds(self._sock, [request], [write])
        except OSError:
            self.closed = True
        finally:
            os.close(write)
        reply = None if self.closed else self._await(rid)
        if reply is None or "pid" not in reply:
            os.close(read)
            return None
        return ForkedProcess(self, reply["pid"], os.fdopen(read, "rb"))

    def _await(self, rid: int) -> dict | None:
        """The server's answer to request ``rid`` (it answers once its imports are done), or None if it ends."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.pump(0.05)
            with self._lock:
                if rid in self._replies:
                    return self._replies.pop(rid)
            if self.closed:
                return None
        self.close()
        return None

    def pump(self, timeout: float = 0.0) -> None:
        """Read what the server has said: exit statuses and answers to requests. Marks the server closed at its end."""
        with self._lock:
            if self.closed:
                return
            while select.select([self._sock], [], [], timeout)[0]:
                timeout = 0.0
                try:
                    data = self._sock.recv(MESSAGE)
                except OSError:
                    data = b""
                if not data:
                    self.closed = True
                    return
                msg = json.loads(data)
                if "exit" in msg:
                    self._exits[msg["exit"]] = os.waitstatus_to_exitcode(msg["status"])
                else:
                    self._replies[msg["id"]] = msg

    def returncode(self, pid: int) -> int | None:
        """The exit code of stage process ``pid`` once it has ended (negative: the signal that ended it). If the
        server ended first, a process that is gone counts as failed (255): its status went with the server."""
        self.pump()
        with self._lock:
            if pid in self._exits:
                return self._exits[pid]
        if self.closed:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return 255
        return None

    def close(self) -> None:
        """End the server (stage processes it started are not touched: each is stopped by its process group)."""
        with self._lock:
            self.closed = True
            self._sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class ForkedProcess:
    """A stage process forked by the server, with the part of :class:`subprocess.Popen` that ``cream run`` uses:
    ``pid``, ``stdout`` (its output, stdout and stderr together), ``poll()``, ``wait(timeout)``, ``returncode``."""

    def __init__(self, server: StageServer, pid: int, stdout):
        self.server, self.pid, self.stdout = server, pid, stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.returncode(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"stage process {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode


def start(python: str, log_path: Path, run: str = "") -> StageServer | None:
    """A server for the stage processes of the run ``run`` (its directory, shown on the server's command line) on a
    Linux machine without GPUs, unless ``CREAM_STAGE_SERVER=0``.

    Where a GPU is visible, stages start as new processes: a library that asks CUDA whether a GPU is there while it
    is imported (``torch.cuda.is_available()``) leaves a state that a forked process cannot use CUDA from, and a GPU
    stage runs for minutes, so its 2-5 s of imports do not matter there. Other systems (macOS: fork after loading
    system frameworks is unsafe) start new processes too."""
    from cream_train.run.gpus import visible_gpus

    if os.environ.get(SWITCH_ENV, "1") == "0" or not sys.platform.startswith("linux") or visible_gpus()[0] > 0:
        return None
    try:
        return StageServer(python, dict(os.environ), log_path, run=run)
    except OSError:
        return None


def _shared(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in PER_STAGE and k != SWITCH_ENV}


# ---------------------------------------------------------------------------- the server process
def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            print(f"stage server: not preloaded: {name} ({e})", flush=True)
            continue
        for attr in PRELOAD_ATTRS.get(name, ()):
            getattr(module, attr)  # lazy attributes: their modules load now


def _serve(fd: int) -> None:
    """Answer fork requests until ``cream run``'s end of the socket closes; report each child's exit."""
    sock = socket.socket(fileno=fd)
    _preload()
    print(f"stage server {os.getpid()}: ready", flush=True)
    while True:
        _reap(sock)
        if not select.select([sock], [], [], 0.05)[0]:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MESSAGE, 4)
        except OSError:
            break
        if not data:
            break  # the run is gone
        request = json.loads(data)
        try:
            pid = _fork(request, fds[0], sock)
            answer = {"id": request["id"], "pid": pid}
        except OSError as e:
            answer = {"id": request["id"], "error": str(e)}
        finally:
            for f in fds:
                os.close(f)
        sock.send(json.dumps(answer).encode())
    _reap(sock, report=False)


def _reap(sock: socket.socket, report: bool = True) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if report:
            try:
                sock.send(json.dumps({"exit": pid, "status": status}).encode())
            except OSError:
                return


def _fork(request: dict, out: int, sock: socket.socket) -> int:
    """Fork the stage of ``request``; return once it has its own session (so a signal to its group reaches it)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the stage process
        code = 70
        try:
            os.close(ready_r)
            sock.close()
            os.setsid()
            os.close(ready_w)  # end of file: the server's wait below is over
            code = _run_stage(request, out)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def _run_stage(request: dict, out: int) -> int:
    """In the forked process: become ``python -m MODULE ARGS`` (``cli.main``: the `cream` command) with the stage's
    streams, environment and directory, run it as ``__main__``, and return its exit code (the interpreter's exit
    handlers run, as at a normal end)."""
    import atexit
    import runpy
    import signal
    import traceback

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    for sig in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = [request["module"], *request["args"]]  # runpy puts the module's file first, as `python -m` does
    sys.modules.pop(request["module"], None)  # preloaded for its imports; it runs afresh as __main__, as under -m
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    return code


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
