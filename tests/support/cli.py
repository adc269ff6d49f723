"""The `cream` command as users run it: the installed console script, what a run of it gave, and the checks every
user-facing error path makes (exit 2, one line on stderr, no traceback, nothing changed on disk)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CPU_ONLY = {"CUDA_VISIBLE_DEVICES": ""}  # the same answer on a machine with GPUs


class CliResult:
    """Exit code, stdout and stderr of one `cream` command."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-800:]!r})"


def cream_executable() -> Path:
    """The installed `cream` console script beside the interpreter running the tests (what users run)."""
    exe = Path(sys.executable).parent / "cream"
    if not exe.exists():
        found = shutil.which("cream")
        if found is None:
            raise RuntimeError("the `cream` console script is not installed (run `make install`)")
        exe = Path(found)
    return exe


def snapshot(root: Path) -> dict:
    """Every path under ``root`` (hidden ones too) with its size and mtime: compare before/after a failing command."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        is_dir = p.is_dir()  # a folder's own mtime moves when a lock or temporary file came and went: not compared
        out[str(p.relative_to(root))] = (is_dir, 0 if is_dir else st.st_size, 0 if is_dir else st.st_mtime_ns)
    return out


def assert_user_error(result: CliResult, *needles: str) -> None:
    """A user mistake: exit 2, one line on stderr naming what was wrong, no traceback."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


def refused(cream_exe, cwd: Path, *args, needles=(), absent=(), env=None) -> CliResult:
    """`cream ARGS…` from ``cwd`` (``cream_exe``: the conftest fixture) is a user mistake: one line naming it, exit 2,
    nothing new or changed on disk under ``cwd``; none of ``absent`` on stderr."""
    before = snapshot(cwd)
    r = cream_exe(*args, cwd=cwd, env={**CPU_ONLY, **(env or {})}, timeout=60)
    assert_user_error(r, *needles)
    for text in absent:
        assert text not in r.err, r
    assert snapshot(cwd) == before
    return r
