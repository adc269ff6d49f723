"""The GPU pack (bench/gpu_pack.sh, issue #24) rehearsed on the CPU, in a venv that holds only what the lent GPU
machine has preinstalled (bench/gpu_machine.txt; built by bench/gpu_rehearsal_venv.sh, cached under .cache/).

The pack's own command (command.txt) runs here as the device tool would run it: `python3` is the rehearsal venv's,
the wheels go in with ``--no-index --no-deps --target``, and the check is a tiny CPU one (GPU_CHECK_ARGS). So a
module that our code or a packed wheel imports and the GPU lacks fails here, not on the GPU's few minutes.
First run: ~40 s for the venv (PyPI), ~10 s per pack, ~70 s for the check on 2 cores; later runs reuse the venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_SH = REPO / "bench" / "gpu_pack.sh"
REHEARSAL_SH = REPO / "bench" / "gpu_rehearsal_venv.sh"
MACHINE = REPO / "bench" / "gpu_machine.txt"
INSTALL = "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "
MAX_PACK_MIB = 40
# Where the rehearsal venv differs from the GPU's known versions, and why.
KNOWN_DIFFERENCES = {
    "torch": "the CPU build of the test's venv is linked in (the GPU has 2.11 + CUDA)",
    "numpy": "the GPU's 2.5.2 needs Python >= 3.12; the rehearsal runs the Python of the linked torch",
}
# Required by a packed wheel, on neither the GPU nor in the pack: never imported on the check's path.
NOT_ON_CHECK_PATH = {"duckdb": "cream-align: `cream sql` and table queries (cream_data/tables/sql.py, lazily)"}
# The GPU machine, for evaluating requirement markers.
GPU_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}

pytestmark = pytest.mark.slow


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_machine() -> dict[str, str | None]:
    """bench/gpu_machine.txt as {name: version seen there, or None}."""
    found = {}
    for line in MACHINE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[normalize(name)] = version or None
    return found


def rehearsal_env(venv: Path, out: Path) -> dict[str, str]:
    """The device's shell, here: `python3` is the rehearsal venv's; nothing of the test's venv leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "HF_HUB_OFFLINE")}  # the command sets it
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "OUT": str(out), "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_command(command: str, venv: Path, out: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["bash", "-c", command], cwd=REPO, env=rehearsal_env(venv, out), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def make_pack(pack: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    proc = subprocess.run(["bash", str(PACK_SH), str(pack)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PY": sys.executable, **env}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, (pack / "command.txt").read_text().strip()


def wheels(pack: Path) -> dict[str, tuple[str, Path]]:
    """{distribution: (version, wheel)} of a pack; a name twice fails (two versions stop the whole install)."""
    found: dict[str, tuple[str, Path]] = {}
    for whl in sorted((pack / "wheels").glob("*.whl")):
        name, version = whl.name.split("-")[:2]
        assert normalize(name) not in found, f"two wheels of {name}: {found[normalize(name)][1].name}, {whl.name}"
        found[normalize(name)] = (version, whl)
    return found


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rehearsal_venv() -> Path:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the rehearsal links the CPU torch of the test's venv, and it has none (make install)")
    base = getattr(sys, "_base_executable", sys.executable)
    if subprocess.run([base, "-c", "import ensurepip, venv"], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"{base} cannot make a venv (no ensurepip)")
    t = time.perf_counter()
    proc = subprocess.run(["bash", str(REHEARSAL_SH), sys.executable], cwd=REPO, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    venv = Path(proc.stdout.strip().splitlines()[-1])
    print(f"rehearsal venv {venv} in {time.perf_counter() - t:.0f} s ({(venv / '.rehearsal-complete').read_text()})")
    return venv


@pytest.fixture(scope="module")
def gpu_pack(tmp_path_factory) -> tuple[Path, str, str]:
    """The pack as `make gpu-pack` makes it (for the GPU's Python 3.12), in a temporary folder."""
    pack = tmp_path_factory.mktemp("gpu-pack") / "pack"
    proc, command = make_pack(pack)
    return pack, command, proc.stdout


@dataclass
class Rehearsal:
    pack: Path
    command: str  # as command.txt has it
    proc: subprocess.CompletedProcess
    out: Path  # the device's $OUT
    scratch: Path  # the device's /tmp: site/ (the installed wheels), gpu-check/ (the check's folder)
    seconds: float


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, rehearsal_venv) -> Rehearsal:
    """A pack for the rehearsal venv's Python with a tiny CPU check as its arguments, its command run."""
    root = tmp_path_factory.mktemp("gpu-rehearsal")
    pack, scratch = root / "pack", root / "scratch"
    version = subprocess.run([rehearsal_venv / "bin" / "python", "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    args = (f"--device cpu --model random:tiny --large random:tiny --tokenizer {pack}/tokenizer --budget 600 "
            "--prompts 2 --label-prompts 2 --response-tokens 8 --repeats 1 --n 2 --max-new-tokens 4 --steps 2 "
            f"--batch-size 2 --threads 1 --out {scratch}/gpu-check --results $OUT")
    _, command = make_pack(pack, PACK_PYTHON=version, GPU_SCRATCH=str(scratch), GPU_CHECK_ARGS=args)
    t = time.perf_counter()
    proc = run_command(command, rehearsal_venv, root / "out")
    return Rehearsal(pack, command, proc, root / "out", scratch, time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------- tests
def test_the_rehearsal_venv_holds_only_what_the_gpu_has(rehearsal_venv):
    listing = subprocess.run(  # -I: the venv alone (no current folder, whose *.egg-info would count)
        [rehearsal_venv / "bin" / "python", "-I", "-c",
         "import importlib.metadata as m; print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"],
        capture_output=True, text=True, check=True).stdout
    installed = {normalize(n): v for n, _, v in (line.partition("==") for line in listing.split())}
    on_gpu = gpu_machine()
    assert "trl" not in installed and "datasets" not in installed
    assert sorted(set(installed) - set(on_gpu)) == [], "not preinstalled on the GPU (bench/gpu_machine.txt)"
    differ = {n: (installed[n], on_gpu[n]) for n in installed
              if on_gpu[n] and installed[n] != on_gpu[n] and n not in KNOWN_DIFFERENCES}
    assert differ == {}, "versions other than the GPU's: (rehearsal, GPU)"


def test_the_pack_runs_the_check_in_the_rehearsal(rehearsal):
    r = rehearsal
    print(f"check in the rehearsal: {r.seconds:.0f} s")
    assert r.proc.returncode == 0, (r.proc.stdout + r.proc.stderr)[-4000:]
    log = (r.out / "gpu-check.log").read_text()
    assert "imports ok" in log
    before = (r.out / "gpu-pip-list.txt").read_text().lower()  # the image's own packages, before the install
    assert "transformers==5.17.0" in before and "trl==" not in before
    report = json.loads((r.scratch / "gpu-check" / "gpu_check.json").read_text())
    assert report["versions"]["trl"] == "1.16.0" and report["versions"]["transformers"] == "5.17.0"
    rows = {row["name"]: row for row in report["rows"]}
    assert not [n for n, row in rows.items() if row["status"] == "failed"], log[-4000:]
    dpo = [n for n in rows if n.startswith("dpo_")]  # trl, datasets (and peft for LoRA) on the GPU's stack
    assert dpo and all(rows[n]["status"] == "ok" for n in dpo), {n: rows[n]["reason"] for n in dpo}
    assert rows["run_1iter"]["status"] == "ok", rows["run_1iter"]  # `cream run`: typer options through pydantic
    assert list(r.out.glob("*.md")) and (r.out / "cream-run.log").exists()  # --results $OUT; the run's log


@pytest.mark.parametrize("module", ["trl", "datasets", "pydantic"])
def test_a_pack_without_a_needed_wheel_fails_naming_the_module(rehearsal, rehearsal_venv, tmp_path, module):
    broken = tmp_path / "pack"
    shutil.copytree(rehearsal.pack, broken)
    wheels(broken)[module][1].unlink()
    command = rehearsal.command.replace(str(rehearsal.pack), str(broken))  # and a bare scratch folder, as the
    command = command.replace(str(rehearsal.scratch), str(tmp_path / "scratch"))  # GPU's /tmp is at each start
    proc = run_command(command, rehearsal_venv, tmp_path / "out", timeout=300)
    assert proc.returncode != 0
    assert f"No module named '{module}'" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


def test_the_gpu_pack_fits_and_its_command_is_one_device_call(gpu_pack):
    pack, command, stdout = gpu_pack
    size = sum(f.stat().st_size for f in pack.rglob("*") if f.is_file())
    assert size <= MAX_PACK_MIB * 2**20, f"{size / 2**20:.1f} MiB"
    assert stdout.strip() == command and len(command) <= 2000
    assert f"{INSTALL}/tmp/site {pack}/wheels/*.whl && export PYTHONPATH=/tmp/site " in command
    assert "HF_HUB_OFFLINE=1" in command  # the GPU machine reaches nothing: no waiting on time-outs
    assert f"--tokenizer {pack}/tokenizer" in command and "timeout " in command and "$OUT/gpu-check.log" in command
    found = wheels(pack)
    assert {"trl", "datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "cream-align"} <= set(found)
    assert found["trl"][0] == "1.16.0"
    assert found["multiprocess"][1].name.endswith("-py312-none-any.whl")  # for the GPU's Python 3.12
    assert "-cp312-" in found["pydantic-core"][1].name
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pack / "tokenizer")
    assert tok.chat_template and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_every_packed_wheel_finds_what_it_needs_on_the_gpu_or_in_the_pack(gpu_pack):
    """Each wheel's requirements (markers as on the GPU) are met by the pack, else by the GPU's preinstalled list,
    at its known version where one is known: what the rehearsal cannot see (the GPU's Python 3.12 and numpy)."""
    from packaging.requirements import Requirement

    pack, *_ = gpu_pack
    packed, on_gpu, unmet = wheels(pack), gpu_machine(), []
    for name, (_, whl) in packed.items():
        with zipfile.ZipFile(whl) as z:
            meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        for line in re.findall(r"^Requires-Dist: (.+)$", meta, flags=re.MULTILINE):
            req = Requirement(line)
            dep = normalize(req.name)
            if (req.marker and not req.marker.evaluate(GPU_MARKERS)) or dep in NOT_ON_CHECK_PATH:
                continue
            version = packed[dep][0] if dep in packed else on_gpu.get(dep, "missing")
            if version == "missing" or (version and not req.specifier.contains(version, prereleases=True)):
                unmet.append(f"{name} needs {req} ({'packed' if dep in packed else 'GPU'}: {version})")
    assert unmet == []
