"""bench/gpu_check.py (issue #14) end to end on CPU: the tiny model, fp32, every row in one subprocess.

The vLLM rows must say why they were skipped; the stored reference log-probs of `cream label` must match TRL's own
reference forward in fp32 (the bf16 version of this number is what the check is for on a GPU); the DPO rows must
show that the stored reference runs no reference model; the 1-iteration `cream run` must finish every stage.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cream_data.tables import io
from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"
ROWS = ["sample_hf", "sample_vllm", "score_vllm_vs_hf", "reference_drift", "dpo_stored", "dpo_computed", "run_1iter"]
STEPS = 2


def run_check(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared 2-core machine: no OpenMP spin-waiting
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    t = time.perf_counter()
    proc = run_check("--model", tiny_model, "--device", "cpu", "--prompts", 2, "--n", 2, "--max-new-tokens", 4,
                     "--steps", STEPS, "--threads", 1, "--out", out)
    seconds = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    return proc, out, report, {r["name"]: r for r in report["rows"]}, seconds


def test_one_table_on_stdout_and_every_row_in_the_json(cpu_check):
    proc, out, report, rows, seconds = cpu_check
    assert [r["name"] for r in report["rows"]] == ROWS
    assert report["device"] == "cpu" and report["engine_dtype"] == "fp32"
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(ROWS)  # header + one line per row, nothing else on stdout but the title line
    assert not [ln for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith(("|", "gpu check:"))]
    for r, line in zip(report["rows"], table[1:]):
        assert r["title"] in line and f"| {r['status']}" in line
    assert "[gpu-check" in proc.stderr  # progress lines go to stderr
    print(f"CPU smoke: {seconds:.0f} s")


def test_vllm_rows_are_skipped_with_the_reason(cpu_check):
    rows = cpu_check[3]
    for name in ("sample_vllm", "score_vllm_vs_hf"):
        assert rows[name]["status"] == "skipped", rows[name]
        assert "no CUDA" in rows[name]["reason"]
        if importlib.util.find_spec("vllm") is None:
            assert "vllm not installed" in rows[name]["reason"]


def test_hf_sampling_counts_what_it_generated(cpu_check):
    v = cpu_check[3]["sample_hf"]["values"]
    assert cpu_check[3]["sample_hf"]["status"] == "ok"
    assert 0 < v["tokens"] <= 2 * 2 * 4  # K x N x max_new_tokens at most
    assert v["tok_s"] > 0 and math.isclose(v["tok_s"], v["tokens"] / v["median_seconds"], rel_tol=1e-9)


def test_stored_reference_matches_trls_reference_forward_in_fp32(cpu_check, tiny_model):
    out, rows = cpu_check[1], cpu_check[3]
    row = rows["reference_drift"]
    assert row["status"] == "ok", row
    v = row["values"]
    prefs = io.read_table(out / "work" / "label" / "preferences", "preferences")
    assert v["pairs"] == prefs.num_rows >= 1
    assert v["model_dtype"] == "torch.float32" and v["trl_logp_dtype"] == "torch.float32"
    for key in ("max_abs_dlogp", "mean_abs_dlogp", "beta_max_abs_dh", "mean_dh"):
        assert math.isfinite(v[key]), key
    # the compared values are real log-probs of 4+ tokens under a random model (~ -10 nats a token), not zeros
    assert v["max_abs_logp"] == pytest.approx(max(map(abs, prefs["chosen_logp"].to_pylist()
                                                      + prefs["rejected_logp"].to_pylist())))
    assert v["max_abs_logp"] > 20
    assert v["max_abs_dlogp"] < 1e-3 and v["verdict"] == "small"
    assert v["beta_max_abs_dh"] <= 2 * v["beta"] * v["max_abs_dlogp"] + 1e-12
    assert set(prefs["model"].to_pylist()) == {str(Path(tiny_model).resolve())}  # the model the trainer started from


def test_dpo_rows_time_both_references(cpu_check):
    rows = cpu_check[3]
    stored, computed = rows["dpo_stored"]["values"], rows["dpo_computed"]["values"]
    for v in (stored, computed):
        assert v["steps"] == STEPS and v["steps_per_s"] > 0 and v["median_step_s"] > 0
        assert v["peak_memory_mib"] > 0 and v["dtype"] == "torch.float32"
    assert not stored["reference_model_loaded"] and stored["reference_forward_batches"] == 0
    assert computed["reference_model_loaded"] and computed["reference_forward_batches"] == STEPS  # 1 batch a step
    assert computed["stored_speedup"] == pytest.approx(stored["steps_per_s"] / computed["steps_per_s"])


def test_one_iteration_run_finishes_every_stage(cpu_check):
    out, rows = cpu_check[1], cpu_check[3]
    row = rows["run_1iter"]
    assert row["status"] == "ok", row
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"prompts", "sft-data", "train-M1", "sample-1", "label-1", "train-M2"}
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert row["values"]["stages"] == {k: s["seconds"] for k, s in manifest["stages"].items()}
    assert list(row["values"]["stages"])[:3] == ["prompts", "sft-data", "train-M1"]  # in the loop's order
    assert row["values"]["sample_engine"] == "hf" and (out / "run" / "models" / "M2" / "config.json").is_file()
    # each model stage ran as a process of its own and recorded its peak memory (resident on CPU)
    assert set(row["values"]["peak_gib"]) == {"train-M1", "sample-1", "label-1", "train-M2"}
    assert row["values"]["peak_of"] == "RSS" and all(0 < g < 24 for g in row["values"]["peak_gib"].values())
    assert (out / "run" / "logs" / "sample-1.log").is_file()


def test_an_out_folder_holding_something_else_is_refused_untouched(tmp_path, tiny_model):
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_check("--model", tiny_model, "--device", "cpu", "--out", tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "notes.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and proc.stdout == ""


def test_a_broken_checkpoint_fails_its_rows_and_exits_1(tmp_path, tiny_model):
    """A real failure (weights truncated after download): the check still writes its table and JSON, each row
    that needed the model says why, and the exit code is 1."""
    import shutil

    broken = shutil.copytree(tiny_model, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    proc = run_check("--model", broken, "--device", "cpu", "--prompts", 2, "--n", 2, "--max-new-tokens", 4,
                     "--skip-run", "--out", out, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((out / "gpu_check.json").read_text())["rows"]}
    for name in ("sample_hf", "reference_drift", "dpo_stored", "dpo_computed"):
        assert rows[name]["status"] == "failed" and "weights" in rows[name]["reason"], rows[name]
    assert rows["run_1iter"]["status"] == "skipped" and rows["sample_vllm"]["status"] == "skipped"
    assert proc.stdout.count("| failed ") == 4
