"""What the tests of the example scripts share (examples/study/run.sh, examples/study-gpu/run.sh): reading a YAML
config as a mapping, finding bash, and a fake `cream` that prints each call instead of running it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml


def load(path: Path) -> dict:
    """The YAML file at ``path`` as a mapping (asserted)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def bash() -> str:
    """The bash to run a script with; the test is skipped without one."""
    found = shutil.which("bash")
    if found is None:
        pytest.skip("no bash")
    return found


def write_fake_cream(folder: Path) -> Path:
    """A `cream` in ``folder`` that prints its arguments: a script's every call, in order, without running any."""
    path = folder / "cream"
    path.write_text('#!/bin/bash\necho "cream $*"\n')
    path.chmod(0o755)
    return path


def run_script(script: Path, fake: Path, env: dict, *args: str, cwd: Path, timeout: float = 120):
    """``bash SCRIPT ARGS`` in ``cwd`` with the fake `cream` (``CREAM``) and ``env`` on top of this environment."""
    import os
    import subprocess

    return subprocess.run([bash(), str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "CREAM": str(fake), **env})


def cream_calls(result) -> list[list[str]]:
    """The `cream …` calls a script made under the fake `cream` (it exited 0), each as its argument list."""
    import shlex

    assert result.returncode == 0, result.stderr
    return [shlex.split(line)[1:] for line in result.stdout.splitlines() if line.startswith("cream ")]


def run_calls(found: list[list[str]]) -> list[dict]:
    """The `cream run` calls of a study script (`cream_calls`) as {config, method, seed, out, reuse, plan}."""
    out = []
    for argv in found:
        if argv[0] != "run":
            continue
        flags = [a for a in argv[2:] if a != "--plan"]
        pairs = list(zip(flags[::2], flags[1::2]))
        assert all(k.startswith("--") for k, _ in pairs) and len(flags) % 2 == 0, argv
        one = {k: v for k, v in pairs if k != "--reuse-from"}
        out.append({"config": argv[1], "method": one["--method"], "seed": int(one["--seed"]), "out": one["--out"],
                    "reuse": [v for k, v in pairs if k == "--reuse-from"], "plan": "--plan" in argv})
    return out
