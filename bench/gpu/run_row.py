"""The GPU check's end-to-end row: one CREAM iteration of `cream run` on the small model, each stage a process of its
own, with each stage's seconds and peak memory as the run's manifest recorded them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu.check import Check, Row
from tests.support.runs import DEFAULT, tiny_run_config, write_yaml


def run_config(ctx: Check) -> dict:
    """The tiny run (tests/support/runs.py) at the check's sizes: SFT on 8 demo examples, then one iteration: sample
    (the engine's own batch size), label (M1 against M0), train; no evaluation. Every stage in the check's dtype."""
    a, dtype = ctx.args, ctx.dtype
    return tiny_run_config(
        {"eval": DEFAULT},  # the section replaced whole, below
        model=ctx.need("small_dir"), iterations=1, seed=0, run_dir=ctx.out / "run",
        sft={"limit": 8, "lr": 1.0e-5, "dtype": dtype},
        prompts={"source": Path(a.prompts_source).resolve(), "per_iteration": a.prompts},
        sample={"n": a.n, "max_new_tokens": min(a.max_new_tokens, 64), "batch_size": DEFAULT, "engine": "hf",
                "dtype": dtype},
        label={"judge_max_new_tokens": DEFAULT, "dtype": dtype},
        train={"beta": 0.1, "lr": 1.0e-6, "batch_size": a.batch_size, "dtype": dtype},
        eval={"models": "none"})


def run_1iter(ctx: Check) -> Row:
    """`cream run` in a child process (log in OUT/run.log), stopped when the budget runs out."""
    from cream_data.jsonfile import read_json_object

    config = write_yaml(ctx.out / "run.yaml", run_config(ctx),
                        text="# written by bench/gpu_check.py: one CREAM iteration at the check's sizes\n")
    env = dict(os.environ)
    if ctx.args.threads:
        env["OMP_NUM_THREADS"] = str(ctx.args.threads)
    log = ctx.out / "run.log"
    ctx.say(f"cream run {config} (log {log})")
    t = time.perf_counter()
    with open(log, "w") as f:
        try:  # cwd outside the checkout: the cream that runs is the one installed (the pack's wheel on a GPU machine)
            rc = subprocess.run([sys.executable, "-m", "cli.main", "run", str(config)], cwd=ctx.out, env=env,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=max(ctx.left(), 30)).returncode
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"cream run stopped after {time.perf_counter() - t:.0f} s: out of --budget "
                               f"(see {log})") from None
    wall = time.perf_counter() - t
    if rc != 0:
        tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise RuntimeError(f"cream run exited with {rc}: {tail[0][:200]} (see {log})")
    stages = read_json_object(ctx.out / "run" / "manifest.json", what="run manifest", fix="see " + str(log))["stages"]
    stages = dict(sorted(stages.items(), key=lambda kv: kv[1].get("started") or ""))
    gpu = any("peak_gpu_gib" in rec for rec in stages.values())
    per = {name: {"seconds": rec.get("seconds"), "peak_gib": rec.get("peak_gpu_gib" if gpu else "peak_rss_gib"),
                  "status": rec.get("status")} for name, rec in stages.items()}
    done = all(s["status"] == "done" for s in per.values())
    unit = "GPU" if gpu else "RSS"
    parts = ", ".join(f"{n} {s['seconds']:.0f} s" + (f" / {s['peak_gib']:.1f} GiB" if s["peak_gib"] else "")
                      for n, s in per.items() if s["seconds"] is not None)
    return Row("run_1iter", status="ok" if done else "failed",
               result=f"{wall:.0f} s in all; {parts} (peak {unit} memory per stage)"
                      + ("" if done else "; a stage is not done"),
               values={"wall_seconds": wall, "stages": per, "peak_of": unit, "run_dir": str(ctx.out / "run")})
