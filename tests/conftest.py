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


def assert_user_error(result: CliResult, *needles: str) -> None:
    """A user mistake: exit 2, one line on stderr naming what was wrong, no traceback."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result
    lines = [ln for ln in result.err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


sys.path.insert(0, str(REPO))
