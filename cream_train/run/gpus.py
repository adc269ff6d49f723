"""The GPUs this machine can hand to shard processes, counted without importing torch (`cream run` never does), and
what a run config's shard pinning needs of them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cream_data.errors import CreamError

DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the NVIDIA driver sees


def visible_gpus() -> tuple[int, str]:
    """(how many GPUs this process may use, where that count comes from): CUDA_VISIBLE_DEVICES when it is set (as
    CUDA reads it: up to the first id that is not a GPU, such as -1), else the GPUs the NVIDIA driver lists, else
    ``nvidia-smi -L``; none without a driver."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        n = 0
        for d in env.split(","):
            if not d.strip() or d.strip().startswith("-"):
                break
            n += 1
        return n, f"CUDA_VISIBLE_DEVICES={env!r}"
    if DRIVER_GPUS.is_dir():
        return sum(1 for _ in DRIVER_GPUS.iterdir()), "found by the NVIDIA driver"
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listed = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=20).stdout
            return sum(1 for line in listed.splitlines() if line.startswith("GPU ")), "listed by nvidia-smi -L"
        except (OSError, subprocess.SubprocessError):
            pass
    return 0, "no NVIDIA driver"


def shard_gpu_problems(stages, starting: bool) -> list[str]:
    """Sample and label shard processes pinned to GPUs (``data_parallel`` > 1, ``gpus_per_process`` > 0) take
    ``data_parallel × gpus_per_process`` GPUs of this machine: more than it has is a problem naming the keys — the
    processes past the last GPU would run on the CPU, unnoticed.

    A machine without any GPU is a login node to ``--check`` (the run will start elsewhere), and ``--plan`` never
    asks; a start there (``starting``) is refused when ``gpus_per_process`` is set to 1 or more, while left at its
    default it asks for no GPU (the shards run on the CPU, as with 0). Under srun each task pins its own node's
    GPUs."""
    problems, have = [], None
    for name in ("sample", "label"):
        try:
            launcher = stages.launcher(name, getattr(stages, name)())
        except CreamError:  # the section's own problems are reported by the checks of its stage
            continue
        k, g = launcher.data_parallel, launcher.gpus_per_process
        if launcher.launcher != "none" or launcher.node_launcher == "srun" or k < 2 or g < 1:
            continue
        have = have or visible_gpus()
        given = getattr(stages.cfg, name).gpus_per_process is not None
        if k * g > have[0] and (have[0] > 0 or (starting and given)):
            per = f"{name}.gpus_per_process {g}" if given else f"{g} GPU(s) per process ({name}.gpus_per_process's " \
                "default)"
            problems.append(f"{name}.data_parallel: {k} shard processes x {per} need {k * g} GPUs, but this machine "
                            f"has {have[0]} ({have[1]}); lower data_parallel, or set {name}.gpus_per_process 0 to run "
                            "the shards on the CPU")
    return problems
