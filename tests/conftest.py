"""Shared fixtures: a tiny random model of the SmolLM2 family, the shared data folder, a CLI runner (in this process
or through the installed console script), the trainers a training run builds. The plain helpers they build on live
in tests/support/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.cli import CliResult, cream_executable
from tests.support.models import make_tiny_model

os.environ.setdefault("CREAM_CACHE", str(REPO / ".cache" / "cream"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched from a hub at test time
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # a worker of `pytest -n N`: the cores shared out, no oversubscription
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# Test files that start torch.distributed (accelerate / torchrun on one machine, on the default port 29500): one
# such file at a time on this machine, across the workers of `pytest -n N` (make test) and any other suite running.
DISTRIBUTED = {"test_run_processes.py", "test_srun.py", "test_train_accelerate.py"}


@pytest.fixture(scope="module", autouse=True)
def _one_distributed_file_at_a_time(request):
    """Held for the whole module (its module fixtures start runs too) when the module is in DISTRIBUTED."""
    if request.node.path.name not in DISTRIBUTED:
        yield
        return
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / f"cream-tests-distributed-{os.getuid()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory) -> Path:
    """A second tiny model with other random weights (e.g. a reference or previous model)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama-b", seed=1)


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


@pytest.fixture
def built_trainers(monkeypatch) -> list:
    """The trainers cream_train.train builds while the test runs, in order: a spy on its public builders, so a test
    can look inside the trainer a train_dpo / train_sft run used (its log history, reference model, dataset)."""
    import cream_train.train as tr

    built = []
    for name in ("build_dpo_trainer", "build_sft_trainer"):
        def spy(*args, _build=getattr(tr, name), **kwargs):
            built.append(_build(*args, **kwargs))
            return built[-1]
        monkeypatch.setattr(tr, name, spy)
    return built


sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for `cream browse` pages (tests/support/browser.py: found, or installed, or a skip)."""
    from tests.support.browser import find_chromium

    return find_chromium()
