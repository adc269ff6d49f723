"""bench/gpu_check.py end to end on CPU: random-initialised tiny Llama shapes, fp32, every row in one subprocess.

Each figure is checked against an independent computation: the labeling FLOPs against a hand count from the saved
config and weights, the sampled tokens against the responses table, the stored reference against TRL's own reference
forward (fp32: equal to summation order), the weights-moved fraction against a hand-made change, the cream run's
stage seconds against its manifest. The GPU figures themselves come from a GPU machine (docs/results/gpu/).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from cream_data.tables import io
from tests.support import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"
ROWS = ["label_small", "sample_hf", "reference_drift", "dpo_small_stored", "mixed_precision", "dpo_small_computed",
        "run_1iter", "label_large", "dpo_large_stored", "dpo_large_computed", "sample_vllm", "score_vllm_vs_hf"]
STEPS, K, N, NEW, LABEL_K, RESP = 3, 2, 2, 6, 2, 12
SMALL = ["--prompts", K, "--n", N, "--max-new-tokens", NEW, "--label-prompts", LABEL_K, "--response-tokens", RESP,
         "--repeats", 1, "--steps", STEPS, "--threads", 1]


def run_check(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared 2-core machine: no OpenMP spin-waiting
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-check")
    proc = run_check("--device", "cpu", "--model", "random:tiny", "--large", "random:tiny", "--peak-tflops", 1,
                     "--budget", 1800, *SMALL, "--out", root / "out", "--results", root / "results")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((root / "out" / "gpu_check.json").read_text())
    return proc, root / "out", report, {r["name"]: r for r in report["rows"]}, root / "results"


def test_one_table_on_stdout_and_the_same_rows_in_md_and_json(cpu_check):
    proc, out, report, _, results = cpu_check
    assert [r["name"] for r in report["rows"]] == ROWS
    assert report["device"] == "cpu" and report["stage_dtype"] == "fp32" and report["random_weights"]
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert len(table) == 2 + len(ROWS)  # header, rule, one line per row
    for r, line in zip(report["rows"], table[2:]):
        assert line.startswith(f"| {r['title']} | random:tiny | {r['status']} |")
    assert "Random-initialised weights" in proc.stdout and "[gpu-check" in proc.stderr
    stems = {p.stem for p in results.iterdir()}
    assert len(stems) == 1 and stems.pop().startswith("cpu-20")  # <card>-<date>.{md,json}
    md = next(results.glob("*.md")).read_text()
    assert md == (out / "gpu_check.md").read_text() and proc.stdout.startswith(md.rstrip("\n"))
    assert json.loads(next(results.glob("*.json")).read_text())["rows"] == report["rows"]


def hand_flops(model_dir: Path, seq: list[int], head_tokens: int) -> float:
    """2 x (weights outside the embedding) per token + causal attention + the head, counted from the saved files."""
    cfg = json.loads((model_dir / "config.json").read_text())
    with safe_open(model_dir / "model.safetensors", "pt") as f:
        body = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()  # noqa: SIM118 (safe_open is not a mapping)
                   if "embed_tokens" not in k and "lm_head" not in k)
    attn = cfg["num_attention_heads"] * cfg["head_dim"]
    return (2 * body * sum(seq) + 2 * cfg["num_hidden_layers"] * attn * sum(t * t for t in seq)
            + 2 * cfg["hidden_size"] * cfg["vocab_size"] * head_tokens)


def test_labeling_rows_count_tokens_flops_and_mfu(cpu_check):
    from cream_data.engines import models
    from cream_data.engines.hf_score import tokenize

    out, rows = cpu_check[1], cpu_check[3]
    for size in ("small", "large"):
        v = rows[f"label_{size}"]["values"]
        assert rows[f"label_{size}"]["status"] == "ok" and v["items"] == LABEL_K * N
        model_dir = out / "work" / f"model-{size}"
        tok = models.load_tokenizer(models.resolve(str(model_dir)))
        assert len(tok) <= json.loads((model_dir / "config.json").read_text())["vocab_size"]
        # the prompts' templated tokens + RESP random tokens each (decoding and re-encoding may merge a few)
        assert v["tokens"] > v["response_tokens"] >= LABEL_K * N * RESP // 2
        seq_total = v["tokens"]
        assert v["model_flops"] > 2 * 0.9 * seq_total  # sanity: a real model's FLOPs, not a count of tokens
        for key in ("on", "off"):
            assert v[f"tok_s_{key}"] == pytest.approx(seq_total / v[f"seconds_{key}"])
            assert v[f"mfu_{key}"] == pytest.approx(v["model_flops"] / v[f"seconds_{key}"] / 1e12)  # --peak-tflops 1
        assert v["max_abs_dlogp_on_vs_off"] < 1e-3  # fp32: prefix sharing computes the same log-probs
    # the FLOP count against a hand count from the saved weights, on the same items the row tokenized
    v = rows["label_small"]["values"]
    tok = models.load_tokenizer(models.resolve(str(out / "work" / "model-small")))
    responses = io.read_table(out / "work" / "responses", "responses")  # any items: the formula is what is tested
    items = tokenize(tok, responses["prompt"].to_pylist(), responses["response"].to_pylist())
    from transformers import AutoModelForCausalLM

    from bench.gpu import shapes

    model = AutoModelForCausalLM.from_pretrained(out / "work" / "model-small")
    seq = [len(x) for x in items.ids]
    assert shapes.forward_flops(model, seq, int(items.n_tokens.sum())) == pytest.approx(
        hand_flops(out / "work" / "model-small", seq, int(items.n_tokens.sum())))


def test_sampling_counts_what_the_responses_table_holds(cpu_check):
    out, rows = cpu_check[1], cpu_check[3]
    v = rows["sample_hf"]["values"]
    table = io.read_table(out / "work" / "responses", "responses")
    assert table.num_rows == K * N and v["tokens"] == sum(table["n_tokens"].to_pylist()) <= K * N * NEW
    assert v["tok_s"] == pytest.approx(v["tokens"] / v["seconds"])


def test_stored_reference_matches_the_trainers_reference_forward_in_fp32(cpu_check):
    out, rows = cpu_check[1], cpu_check[3]
    row = rows["reference_drift"]
    prefs = io.read_table(out / "work" / "label-small" / "preferences", "preferences")
    v = row["values"]
    assert row["status"] == "ok" and v["pairs"] == prefs.num_rows >= 1 and v["master_dtype"] == "torch.float32"
    assert v["max_abs_dlogp"] < 1e-3 and row["bound"].startswith("fp32")
    assert v["beta_max_abs_dh"] <= 2 * v["beta"] * v["max_abs_dlogp"] + 1e-12
    assert max(map(abs, prefs["chosen_logp"].to_pylist())) > 10  # real log-probs of random text, not zeros


def test_dpo_rows_time_both_references_full_and_lora(cpu_check):
    rows = cpu_check[3]
    for size, lora in (("small", False), ("large", True)):
        stored, computed = rows[f"dpo_{size}_stored"]["values"], rows[f"dpo_{size}_computed"]["values"]
        for v in (stored, computed):
            assert v["steps"] == STEPS == len(v["step_times"]) and v["median_step_s"] > 0 and v["lora"] is lora
            assert v["peak_memory_gib"] > 0
        assert not stored["reference_model_loaded"] and stored["reference_forward_batches"] == 0
        assert computed["reference_forward_batches"] == STEPS  # one reference forward per step
        assert computed["stored_speedup"] == pytest.approx(computed["median_step_s"] / stored["median_step_s"])


def test_mixed_precision_row_reports_the_moved_weights(cpu_check):
    row = cpu_check[3]["mixed_precision"]
    v = row["values"]
    assert row["status"] == "ok" and v["master_dtype"] == "torch.float32" and v["steps"] == STEPS
    assert v["moved_non_embedding"] >= 0.99 and 0 < v["moved_all"] <= 1


def test_weights_moved_counts_a_hand_made_change(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from bench.gpu.rows import weights_moved

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    embedding = model.get_input_embeddings().weight
    body = [p for p in model.parameters() if p is not embedding]
    with torch.no_grad():
        body[0].view(-1)[:10] += 1e-3
        embedding.view(-1)[:5] += 1e-3
    v = weights_moved(model, start)
    n_all = sum(p.numel() for p in model.parameters())
    assert v["moved_all"] == pytest.approx(15 / n_all)
    assert v["moved_non_embedding"] == pytest.approx(10 / sum(p.numel() for p in body))


def test_one_iteration_run_reports_each_stage_from_its_manifest(cpu_check):
    out, rows = cpu_check[1], cpu_check[3]
    row = rows["run_1iter"]
    assert row["status"] == "ok", row
    manifest = json.loads((out / "run" / "manifest.json").read_text())["stages"]
    assert set(manifest) == {"prompts", "sft-data", "train-M1", "sample-1", "label-1", "train-M2"}
    stages = row["values"]["stages"]
    assert {k: s["seconds"] for k, s in stages.items()} == {k: s["seconds"] for k, s in manifest.items()}
    assert all(s["status"] == "done" for s in stages.values()) and row["values"]["peak_of"] == "RSS"
    assert all(0 < stages[k]["peak_gib"] < 24 for k in ("train-M1", "sample-1", "label-1", "train-M2"))


def test_vllm_rows_say_why_they_are_skipped(cpu_check):
    for name in ("sample_vllm", "score_vllm_vs_hf"):
        row = cpu_check[3][name]
        assert row["status"] == "skipped" and "no CUDA" in row["result"]


def test_a_spent_budget_skips_rows_and_still_writes_the_table(tmp_path):
    proc = run_check("--device", "cpu", "--model", "random:tiny", "--large", "none", "--budget", 0.001,
                     "--out", tmp_path / "out", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "gpu_check.json").read_text())["rows"]}
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert rows["label_small"]["result"].startswith("budget") and rows["label_large"]["result"] == "--large none"


def test_usage_mistakes_are_one_line_exit_2(tmp_path):
    proc = run_check("--model", "random:llama-70b", "--out", tmp_path / "a", timeout=120)
    assert proc.returncode == 2 and "unknown shape 'llama-70b'" in proc.stderr and "random:llama-1b" in proc.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    proc = run_check("--device", "cpu", "--model", "random:tiny", "--out", tmp_path / "b", timeout=300)
    assert proc.returncode == 2 and "notes.txt" not in proc.stdout and "Traceback" not in proc.stderr
    assert "not an earlier gpu check" in proc.stderr and [p.name for p in (tmp_path / "b").iterdir()] == ["notes.txt"]


def test_a_broken_checkpoint_fails_its_rows_and_exits_1(tmp_path, tiny_model):
    """A real failure (weights truncated after download): the table and JSON are still written, each row that
    needed the model says why, and the exit code is 1."""
    import shutil

    broken = shutil.copytree(tiny_model, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    proc = run_check("--model", broken, "--large", "none", "--device", "cpu", "--rows", "label,sample,dpo",
                     "--out", out, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((out / "gpu_check.json").read_text())["rows"]}
    for name in ("label_small", "sample_hf", "reference_drift", "dpo_small_stored", "dpo_small_computed"):
        assert rows[name]["status"] == "failed" and "weights" in rows[name]["result"], rows[name]
    assert rows["run_1iter"]["status"] == "skipped" and rows["run_1iter"]["result"] == "not in --rows"


def test_bf16_on_cpu_rehearses_the_gpu_numerics(tmp_path):
    """`--dtype bf16` on CPU: bf16-weight labeling under autocast against the mixed-precision trainer, as on a GPU.
    The stored reference has no bias (t of the mean Δh inside 4) and fp32 master weights keep every update."""
    out = tmp_path / "out"
    proc = run_check("--device", "cpu", "--dtype", "bf16", "--model", "random:tiny", "--large", "none", "--rows",
                     "dpo", "--prompts", 8, "--n", 4, "--max-new-tokens", 16, "--steps", 5, "--threads", 1,
                     "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((out / "gpu_check.json").read_text())["rows"]}
    drift, moved = rows["reference_drift"], rows["mixed_precision"]
    assert drift["status"] == "ok" and drift["bound"].startswith("bf16") and drift["values"]["pairs"] >= 4
    assert abs(drift["values"]["t_mean_dh"]) < 4 and 0 < drift["values"]["max_abs_dlogp"] < 0.5  # bf16 rounding
    prefs = out / "work" / "label-small" / "preferences"
    assert io.read_manifest(prefs)["inputs"]["dtype"] == "bf16"  # labeled in bf16, not silently fp32
    assert moved["status"] == "ok" and moved["values"]["master_dtype"] == "torch.float32"
    assert moved["values"]["moved_non_embedding"] >= 0.99
