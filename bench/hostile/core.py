"""The probe's machinery: a case is a hostile command run through the installed ``cream`` console script in a folder
of its own, and a verdict.

A case's ``setup(d, w)`` prepares the folder ``d`` (copies of the world's fixtures, edited the way a careless or
hostile user would) and returns the command's arguments. The expected outcome is one of:

- ``refuse``: exit 2, exactly one line on stderr (no traceback), naming what ``needles`` say, and nothing new or
  changed under ``d`` (the snapshot after setup equals the one after the command);
- ``ok``: exit 0 and ``check(d, result)`` returns no complaint (the result is right, not merely produced);
- ``fails``: exit 2 ending in one ``error:`` line, no traceback, and ``check`` passes (for a command that may log
  progress and leave state it documents before it stops, e.g. a follower machine of a run);
- ``either``: a correct result (as for ``ok``) or a clean refusal (as for ``refuse``): used where both are honest
  answers, e.g. a stage that finds a damaged output may redo it or refuse to touch it, never claim it done.

Every command has a deadline (a hang is a failure) and stdin closed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

Check = Callable[[Path, "Result"], "str | None"]


@dataclass
class Result:
    code: int | None  # None: killed at the deadline
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.err.strip().splitlines() if ln.strip()]


@dataclass
class Case:
    klass: str  # key | done | bounded | role | replace | paths | contract
    name: str
    setup: Callable[[Path, "object"], list]
    expect: str = "refuse"  # refuse | ok | either | fails
    needles: tuple[str, ...] = ()
    check: Check | None = None
    timeout: float = 240
    max_line: int = 600  # a one-line error is read by a person: no 600 KB echoes
    env: dict = field(default_factory=dict)
    absent: tuple[str, ...] = ()  # texts the error line must not hold (a wrong reason)


def cream_exe() -> str:
    exe = Path(sys.executable).parent / "cream"
    return str(exe if exe.exists() else shutil.which("cream") or "cream")


def run_cream(args: list, cwd: Path, timeout: float, env: dict | None = None) -> Result:
    full = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", **(env or {})}
    start = time.monotonic()
    proc = subprocess.Popen([cream_exe(), *map(str, args)], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        code = None
    return Result(code, out, err, time.monotonic() - start)


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its size and mtime (folders by presence only)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or p.is_fifo() or p.is_char_device():
            out[str(p.relative_to(root))] = ("special",)
            continue
        st = p.stat()
        out[str(p.relative_to(root))] = ("dir",) if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def refusal_problem(case: Case, r: Result, before: dict, after: dict) -> str | None:
    if r.code != 2:
        return f"exit {r.code}, expected 2"
    if "Traceback" in r.err:
        return "traceback on stderr"
    if len(r.lines) != 1:
        return f"{len(r.lines)} stderr lines, expected 1: {r.lines[:3]}"
    line = r.lines[0]
    if len(line) > case.max_line:
        return f"error line of {len(line):,} characters"
    for n in case.needles:
        if n.lower() not in line.lower():
            return f"{n!r} not in {line[:200]!r}"
    for n in case.absent:
        if n.lower() in line.lower():
            return f"{n!r} in {line[:200]!r}"
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        return f"disk changed: {[c[0] for c in changed][:4]}"
    return None


def stopped_problem(r: Result) -> str | None:
    if r.code != 2 or "Traceback" in r.err:
        return f"exit {r.code}" + (", traceback" if "Traceback" in r.err else "")
    return None if r.lines and r.lines[-1].startswith("error: ") else f"last line {r.lines[-1:]}, expected error: …"


def result_problem(case: Case, d: Path, r: Result) -> str | None:
    if r.code != 0:
        return f"exit {r.code}: {(r.lines or [''])[-1][:200]}"
    return case.check(d, r) if case.check else None


def judge(case: Case, d: Path, w) -> tuple[bool, str, Result]:
    args = case.setup(d, w)
    before = snapshot(d)
    r = run_cream(args, d, case.timeout, case.env)
    if r.code is None:
        return False, f"hang: killed after {case.timeout:.0f} s", r
    after = snapshot(d)
    if case.expect == "refuse":
        why = refusal_problem(case, r, before, after)
    elif case.expect == "ok":
        why = result_problem(case, d, r)
    elif case.expect == "fails":
        why = stopped_problem(r) or (case.check(d, r) if case.check else None)
    else:  # either: a clean refusal, or a right result
        why = refusal_problem(case, r, before, after) if r.code == 2 else result_problem(case, d, r)
    return why is None, why or ("refused: " + r.lines[0][:160] if r.code == 2 else "ok"), r
