"""One task of a Slurm job step that `cream run` starts under ``nodes.launcher: srun`` (cream_train/run/launch.py):

    srun --nodes 2 --ntasks-per-node 4 --kill-on-bad-exit=1 --label \\
        python -m cream_train.run.slurm_task --pin-gpus 2 cream sample P --out D --shard '{SLURM_PROCID}/{SLURM_NTASKS}'

Slurm starts the same line on every task; what differs between tasks comes from the variables Slurm sets in each,
so this module fills them in and then becomes the command (exec):

* ``{SLURM_PROCID}``, ``{SLURM_NTASKS}``, ``{SLURM_NODEID}``, ``{SLURM_LOCALID}`` in an argument: the task's value
  (its shard ``i/k``; a training launcher's machine rank);
* ``{first_node}``: the first host of the step's node list (``SLURM_STEP_NODELIST``, else ``SLURM_JOB_NODELIST``),
  the node of task 0, where accelerate and torchrun meet;
* ``--pin-gpus G``: the task sees GPUs ``SLURM_LOCALID × G … + G-1`` of those its node gives it
  (``CUDA_VISIBLE_DEVICES``), as one machine's shard processes are pinned;
* the same fields in ``CREAM_RESULT_FILE``: each task writes its own stage record;
* ``CREAM_RUN_PID``, the pid of `cream run` that a stage process watches so as to end with it, is kept only on the
  node where `cream run` runs (``CREAM_RUN_HOST``): elsewhere that pid is no process of the run.

Light: the standard library and the launch module's pure helpers; it runs before any stage code, on every node.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping

from cream_data.errors import CreamError
from cream_data.processes import PARENT_ENV, RESULT_ENV
from cream_train.run.launch import TASK_MODULE, device_ids

FIELDS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODEID", "SLURM_LOCALID")  # a task's own Slurm variables
FIRST_NODE = "first_node"
RUN_HOST_ENV = "CREAM_RUN_HOST"  # the host of `cream run` (set by cream_train/run/stage_process.py)
_FIELD = re.compile(r"\{([A-Za-z_]+)\}")
USAGE = f"usage: python -m {TASK_MODULE} [--pin-gpus G] COMMAND [ARG …] (inside a Slurm job step)"


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: ``gpu[007-009,012],login1`` → ``gpu007``; ``a[1-2]-b[3-4]`` → ``a1-b3``."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += (c == "[") - (c == "]")
        if c == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m[1])[0], nodelist[:end].strip())


def fill(text: str, env: Mapping[str, str]) -> str:
    """``text`` with each ``{FIELD}`` of this task filled in (other braces left as written); CreamError for a field
    whose variable Slurm did not set (not run by srun)."""

    def value(m: re.Match) -> str:
        name = m[1]
        if name == FIRST_NODE:
            nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
            if not nodes:
                raise CreamError(f"{{{name}}}: neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set; {USAGE}")
            return first_host(nodes)
        if name not in FIELDS:
            return m[0]
        if not env.get(name):
            raise CreamError(f"{{{name}}}: {name} is not set; {USAGE}")
        return env[name]

    return _FIELD.sub(value, text)


def task_env(env: Mapping[str, str], pin_gpus: int = 0) -> dict[str, str]:
    """The environment the task's command runs in: ``env`` with its GPUs pinned, its own record file and the watch
    of `cream run` kept only on the host of `cream run`."""
    out = dict(env)
    if pin_gpus > 0:
        local = int(fill("{SLURM_LOCALID}", env))
        ids = device_ids(env.get("CUDA_VISIBLE_DEVICES"), (local + 1) * pin_gpus)
        out["CUDA_VISIBLE_DEVICES"] = ",".join(ids[local * pin_gpus:])
    if env.get(RESULT_ENV):
        out[RESULT_ENV] = fill(env[RESULT_ENV], env)
    if env.get(RUN_HOST_ENV) != socket.gethostname():
        out.pop(PARENT_ENV, None)
    return out


def parse(argv: list[str]) -> tuple[int, list[str]]:
    """``(pin_gpus, command)`` from this module's arguments."""
    pin = 0
    if argv[:1] == ["--pin-gpus"]:
        if len(argv) < 2 or not argv[1].isdigit():
            raise CreamError(f"--pin-gpus: expected a number of GPUs; {USAGE}")
        pin, argv = int(argv[1]), argv[2:]
    if not argv:
        raise CreamError(USAGE)
    return pin, argv


def main(argv: list[str] | None = None) -> None:
    try:
        pin, command = parse(list(sys.argv[1:] if argv is None else argv))
        env = dict(os.environ)
        command = [fill(a, env) for a in command]
        env = task_env(env, pin)
    except CreamError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        os.execvpe(command[0], command, env)
    except OSError as e:
        print(f"error: {TASK_MODULE}: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
