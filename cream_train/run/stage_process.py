"""`cream run`'s side of a stage process: start the processes of one stage's command, keep their output in
``RUN/logs/``, show it (and their progress, as the run's own bars), wait for them, and hand back their records.

A stage's processes are what :func:`cream_train.run.launch.launch_commands` makes of its command line: the command
itself, ``data_parallel`` shard processes pinned to their GPUs, one ``accelerate launch`` / ``torchrun``, or (nodes
launcher srun) one ``srun`` whose tasks each write their own record and whose output lines carry their task's
number (``--label``: logged as they come, shown as ``stage task │ line``). Each
starts in its own process group with the variables of :mod:`cream_data.processes` set (where to write its record,
progress as lines, the run's pid to watch; a training stage's tracker folder ``RUN/logs/tb/<stage>`` and run name
``<run dir name>/<stage>``), so when the run is stopped — Ctrl-C, an error in a sibling shard, or
``kill -9`` of the run itself — no stage process is left behind holding a GPU.

A child that fails with a user error (exit 2) is reported by its own one-line message; any other failure as
``stage NAME failed (exit N), log at RUN/logs/NAME.log`` with the last lines of that log.

Imports no torch: the parent of the stages never touches a GPU.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from cream_data.errors import CreamError
from cream_data.processes import (PARENT_ENV, PROGRESS_ENV, RESULT_ENV, RUN_NAME_ENV, TRACKER_DIR_ENV,
                                   parse_progress, read_result)
from cream_data.progress import Progress
from cream_train.run.launch import Launcher, Process, launch_commands, shell_line
from cream_train.run.layout import RunLayout
from cream_train.run.slurm_task import RUN_HOST_ENV

TAIL = 12  # lines of a failed child's log repeated in the error


class StageFailed(CreamError):
    """A stage process ended with an error that is not a user mistake (a crash, out of memory, a signal)."""

    exit_code = 1


class StageRunner:
    """Starts each stage's processes for a run directory (``log``: the run's log lines; ``progress``: its bars)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None], progress: Progress | None = None,
                 python: str = sys.executable, devices: str | None = None, machine: int = 0):
        self.run_dir, self.log, self.progress, self.python = Path(run_dir), log, progress, python
        self.machine = machine  # > 0: another machine of the run; its logs say so
        self.devices = devices if devices is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
        self.commands: dict[str, list[str]] = {}  # stage -> the shell lines it started (for the manifest)
        self._server = None  # the stage server (stage_server.py), started with the first stage

    def close(self) -> None:
        """End the stage server, if one was started (at the end of the run)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def _stage_server(self):
        """The run's stage server: stage processes forked from a process that has imported torch once."""
        if self._server is None:
            from cream_train.run import stage_server

            self._server = stage_server.start(self.python, RunLayout(self.run_dir).logs / ".stage-server.out",
                                              run=str(self.run_dir.resolve()))
        return self._server

    def run(self, name: str, argv: list[str], launcher: Launcher, *, records: bool = True) -> list[dict]:
        """Run stage ``name`` (its command line ``argv``, e.g. ``["sample", PROMPTS, "--out", DIR, …]``) and
        return the record each of its processes wrote (rank 0 only under accelerate/torchrun: ``records=False``
        on the other machines of a multi-machine training)."""
        procs = launch_commands(argv, launcher, python=self.python, devices=self.devices)
        self.commands[name] = [shell_line(p) for p in procs]
        logs = RunLayout(self.run_dir).logs
        logs.mkdir(parents=True, exist_ok=True)
        children = [_Child(p, logs, name, self.machine) for p in procs]
        try:
            for c in children:
                c.start(self._env(c), self.log, self.progress, self._stage_server())
            self._wait(name, children)
        finally:
            for c in children:
                c.stop()
        found = [r for r in (read_result(p) for c in children for p in c.results()) if r is not None]
        if records and not found:
            raise StageFailed(f"stage {name}: its process(es) finished but wrote no record ({children[0].log_path})")
        return found

    def _env(self, child: "_Child") -> dict[str, str]:
        run = RunLayout(self.run_dir.resolve())
        step = {RUN_HOST_ENV: socket.gethostname()} if child.proc.tasks else {}  # where CREAM_RUN_PID is a process
        return {**os.environ, **child.proc.env, RESULT_ENV: str(child.result), PROGRESS_ENV: "lines",
                PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1", **step,
                TRACKER_DIR_ENV: str(run.tracker(child.stage)), RUN_NAME_ENV: f"{run.root.name}/{child.stage}"}

    def _wait(self, name: str, children: list["_Child"]) -> None:
        """Until every process has ended; the first failure stops the others and is raised."""
        while True:
            failed = next((c for c in children if c.returncode not in (None, 0)), None)
            if failed is not None:
                for c in children:
                    c.stop()
                raise failed.error(name)
            if all(c.returncode == 0 for c in children):
                return
            time.sleep(0.2)


class _Child:
    """One process of a stage: started in its own group, its output copied to its log and relayed line by line."""

    def __init__(self, proc: Process, logs: Path, stage: str, machine: int):
        self.proc, self.stage = proc, stage
        shard = None if proc.tasks else _shard_of(proc.argv)
        tag = f"{stage}.shard-{shard[0]}-of-{shard[1]}" if shard else stage + (f".machine-{machine}" if machine else "")
        self.prefix = f"{stage} {shard[0]}/{shard[1]}" if shard else stage
        self.log_path = logs / f"{tag}.log"
        # a Slurm step's tasks each write their own record: slurm_task fills in the task's number
        self.result = logs / (f".{tag}.task-{{SLURM_PROCID}}.result.json" if proc.tasks else f".{tag}.result.json")
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL)
        self.popen: subprocess.Popen | None = None
        self._relay: threading.Thread | None = None

    @property
    def returncode(self) -> int | None:
        if self.popen is None:
            return None
        rc = self.popen.poll()
        if rc is not None and self._relay is not None:
            self._relay.join()  # every line is in the log before the stage is judged
        return rc

    def results(self) -> list[Path]:
        """Where its process(es) write their records: one file, or one per task of a Slurm step."""
        if self.proc.tasks:
            return [Path(str(self.result).replace("{SLURM_PROCID}", str(i))) for i in range(self.proc.tasks)]
        return [self.result]

    def start(self, env: dict[str, str], log: Callable[[str], None], progress: Progress | None,
              server=None) -> None:
        """Start the process: forked by the run's stage ``server`` where that is the same (stage_server.py), else
        as a new process."""
        for path in self.results():
            path.unlink(missing_ok=True)
        fh = open(self.log_path, "ab")
        fh.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shell_line(self.proc)}\n".encode())
        fh.flush()
        if server is not None and server.eligible(self.proc.argv, env, self.proc.env, self.proc.tasks):
            self.popen = server.spawn(self.proc.argv, env, os.getcwd())
        if self.popen is None:
            self.popen = subprocess.Popen(self.proc.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self._relay = threading.Thread(target=self._copy, args=(fh, log, progress), daemon=True)
        self._relay.start()

    def _copy(self, fh, log: Callable[[str], None], progress: Progress | None) -> None:
        """Every byte to the log; each line (its last carriage-return segment: a progress bar's final state) to
        the user, progress lines to the run's bars."""
        with fh:
            for raw in self.popen.stdout:
                text, prefix = raw.decode("utf-8", "replace").rstrip("\r\n"), self.prefix
                if self.proc.tasks:  # srun --label: "3: …" is task 3's line
                    task = _TASK_LABEL.match(text)
                    if task:
                        text, prefix = text[task.end():], f"{self.prefix} {task[1]}"
                step = parse_progress(text)
                if step is not None:
                    if progress is not None:
                        what, done, total, tokens = step
                        progress(f"{what} ({prefix})", done, total, tokens)
                    continue
                fh.write(raw)
                fh.flush()
                line = text.split("\r")[-1].rstrip()
                if line:
                    self.tail.append(line)
                    log(f"[dim]  {prefix} │[/] " + line.replace("[", r"\["))

    def stop(self) -> None:
        """End the process group (SIGTERM, then SIGKILL after 10 s) if it is still running."""
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def error(self, stage: str) -> CreamError:
        """A user error (exit 2 and its one line) as that line; anything else as a failure with the last lines. A
        Slurm step's exit code is its tasks' highest (a signal's 128 + n, once the others are ended for it), so there
        a task's line says it."""
        rc = self.popen.returncode
        user = next((line for line in reversed(self.tail) if line.startswith("error:")), None)
        if user and (rc == 2 or self.proc.tasks):
            return CreamError(f"stage {stage}: {user[len('error:'):].strip()} (log: {self.log_path})")
        how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
        last = " | ".join(list(self.tail)[-4:])
        return StageFailed(f"stage {stage} failed ({how}), log at {self.log_path}" + (f"; last lines: {last}"
                                                                                        if last else ""))


_TASK_LABEL = re.compile(r"\s*(\d+): ")


def _shard_of(argv: list[str]) -> tuple[int, int] | None:
    if "--shard" in argv:
        i, k = argv[argv.index("--shard") + 1].split("/")
        return int(i), int(k)
    return None
