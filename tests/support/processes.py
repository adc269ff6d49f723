"""The processes of a `cream run`: the environment its subprocesses get in the tests, the processes still working on
a run directory, and waiting for a condition with a deadline."""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}  # a `cream` subprocess's


def children_of(run: Path) -> list[int]:
    """Pids of the processes working on ``run`` (their command line names it), but the test's own."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if str(run) in cmd and "-c" not in cmd.split()[:3]:
                pids.append(int(p.name))
    return pids


def wait_for(cond, timeout: float = 600, what: str = "") -> None:
    """Until ``cond()`` is true, looking every 50 ms; an AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
