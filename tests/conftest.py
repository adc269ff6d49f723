"""Shared fixtures: a tiny random model of the SmolLM2 family, the shared data folder, a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CREAM_CACHE", str(REPO / ".cache" / "cream"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub at test time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data_dir() -> Path:
    env = os.environ.get("CREAM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"shared benchmark data not found at {d} (set CREAM_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's real tokenizer and chat template (built, not downloaded)."""
    from cream_data.engines.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory) -> Path:
    """A second tiny model with other random weights (e.g. a reference or previous model)."""
    from cream_data.engines.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama-b", seed=1)


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-800:]!r})"


@pytest.fixture
def cli(capsys):
    """Run `cream ARGS…` in-process; returns exit code, stdout and stderr."""
    from cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def cream_executable() -> Path:
    """The installed `cream` console script beside the interpreter running the tests (what users run)."""
    exe = Path(sys.executable).parent / "cream"
    if not exe.exists():
        import shutil

        found = shutil.which("cream")
        if found is None:
            raise RuntimeError("the `cream` console script is not installed (run `make install`)")
        exe = Path(found)
    return exe


@pytest.fixture
def cream_exe():
    """Run the installed `cream` console script in a subprocess: ``cream_exe(*args, cwd=None, env=None, timeout=120)``."""
    import subprocess

    exe = cream_executable()

    def run(*args, cwd=None, env=None, timeout: float = 180, stdin=None) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([str(exe), *[str(a) for a in args]], capture_output=True, text=True, cwd=cwd,
                              env=full_env, timeout=timeout, stdin=subprocess.DEVNULL if stdin is None else stdin)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


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


sys.path.insert(0, str(REPO))
