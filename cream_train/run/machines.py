"""A run on several machines (``nodes: {num_machines: M, launcher: followers | srun, …}``) on a run directory that
all of them see (a shared file system).

Machine 0 is the run: it holds the run directory's lock, writes ``manifest.json``, runs the bookkeeping stages
(prompt split, SFT data), evaluation and the report, and its stages are the ones the manifest records. Every stage
that spans machines runs on all of them at once:

* sampling and scoring: machine r starts shards ``r*k … r*k+k-1`` of ``k*M`` (``data_parallel: k``); machine 0
  marks the stage done once every shard's manifest is there (reading the folder is the merge);
* training with ``launcher: accelerate`` or ``torchrun``: each machine starts its own launcher with its
  ``machine_rank``; they meet at ``main_process_ip:main_process_port`` and run one training (rank 0 saves).

How the machines get there (``nodes.launcher``):

* ``srun``: one `cream run` (the driver, machine 0) inside a Slurm allocation, and no other: each stage that spans
  machines is one Slurm job step (``srun --nodes M …``, cream_train/run/launch.py) whose tasks take their shard or
  machine rank from Slurm (cream_train/run/slurm_task.py); the step ends when every machine's part has, so nothing
  waits on a file. Needs ``srun`` on PATH and ``SLURM_JOB_ID`` (:func:`check_machines`).
* ``followers``: every machine runs the same `cream run` with its own ``machine_rank``. Machine r > 0
  (cream_train/run/follow.py: the same stages as machine 0's, another executor) computes the same fingerprints,
  waits for machine 0 to start each stage (so a fresh start has cleared the old outputs), runs its part of the
  stages that span machines and waits for machine 0 to finish every stage before going on. It writes nothing but its heartbeat, its stage processes' outputs and its logs. Every
  machine's heartbeat (cream_train/run/heartbeat.py) bounds each wait: machine r stops within ``nodes.start_timeout``
  when machine 0 never shows up (absent, or the run directory not shared), and a machine waiting on another stops
  once that one's heartbeat has been still for ``nodes.alive_timeout``; each with one line. Rerun every machine to
  resume — finished stages and finished shards are kept.

This module holds what machine 0 needs of them (:func:`check_machines`, :func:`heartbeat`, :func:`wait_for_shards`);
the executor of the other machines is cream_train/run/follow.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from cream_data.errors import CreamError
from cream_data.tables import io
from cream_train.run.heartbeat import Heartbeat, Pulse

POLL = 2.0  # seconds between looks at the shared run directory (at most: a short timeout looks more often)


def check_machines(cfg, in_process: bool) -> None:
    """What the run's ``nodes`` need before anything starts, each refused with one line: stages as processes on
    several machines; under srun, a Slurm allocation with ``srun`` on PATH (``--plan`` and ``--check`` need
    neither: they never get here)."""
    nodes = cfg.nodes
    if in_process and nodes.num_machines > 1:
        raise CreamError(f"--in-process: nodes.num_machines is {nodes.num_machines}; a run on several machines "
                         "starts its stages as processes (leave out --in-process)")
    if nodes.launcher != "srun":
        return
    if not os.environ.get("SLURM_JOB_ID"):
        raise CreamError("nodes.launcher srun: not inside a Slurm allocation (SLURM_JOB_ID is unset); submit the run "
                         "with sbatch (examples/slurm/cream.sbatch) or start it in salloc; `cream run CONFIG --plan` "
                         "shows its srun lines anywhere")
    if shutil.which("srun") is None:
        raise CreamError("nodes.launcher srun: `srun` is not on PATH; run inside a Slurm allocation where srun is "
                         "installed, or use nodes.launcher followers")


def heartbeat(cfg, run: Path):
    """Machine 0's heartbeat while the run runs, where other machines follow it (else nothing)."""
    nodes = cfg.nodes
    if nodes.num_machines > 1 and nodes.launcher == "followers":
        return Heartbeat(run, 0, nodes.alive_timeout)
    return contextlib.nullcontext()


def wait_for_shards(folder: Path, name: str, log: Callable[[str], None], run: Path, nodes, poll: float = POLL) -> int:
    """Machine 0, after its own shard processes of stage ``name``: wait until every machine's shards have
    finished writing ``folder`` (it reads as a whole table); the rows of that table. Under srun the step that ran
    them has ended, so the table is whole. CreamError once another machine's heartbeat has been still for
    ``nodes.alive_timeout`` seconds."""
    if nodes.launcher == "srun":
        return int(io.read_manifest(folder).get("rows", 0))
    pulses = [Pulse(run, r) for r in range(1, nodes.num_machines)]
    poll = min(poll, nodes.alive_timeout / 4)
    said = False
    while True:
        try:
            return int(io.read_manifest(folder).get("rows", 0))
        except (CreamError, OSError):  # not whole yet (or a shared file system's passing error)
            for p in pulses:
                silent = p.silence()
                if silent > nodes.alive_timeout:
                    raise CreamError(
                        f"{name}: machine {p.rank}'s heartbeat ({p.path}) has not changed for {silent:.0f} s while "
                        f"machine 0 waits for its shards (nodes.alive_timeout {nodes.alive_timeout:g}); check that "
                        f"machine {p.rank} runs `cream run … --machine-rank {p.rank}` on this run directory (a "
                        "file system every machine shares), then rerun every machine: finished shards are kept"
                    ) from None
            if not said:
                log(f"  {name}: this machine's shards are done; waiting for the other machines' shards")
                said = True
            time.sleep(poll)
