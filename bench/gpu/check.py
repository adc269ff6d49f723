"""The GPU check's frame: its settings and shared state, rows, the time budget, peak memory, the table and JSON."""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# row name -> (title, rough seconds on an H100 at 1B parameters; scaled by the model's size for other shapes)
ROWS = {
    "label_small": ("labeling tok/s + MFU, prefix sharing on/off", 25),
    "sample_hf": ("sampling, hf engine", 30),
    "reference_drift": ("stored vs computed reference (labeler vs trainer)", 40),
    "dpo_small_stored": ("DPO full fine-tuning, stored reference", 40),
    "mixed_precision": ("mixed precision: weights moved at lr 1e-6", 0),
    "dpo_small_computed": ("DPO full fine-tuning, computed reference", 40),
    "label_large": ("labeling tok/s + MFU, prefix sharing on/off", 10),
    "run_1iter": ("cream run, 1 iteration (stage seconds, peak memory)", 150),
    "dpo_large_stored": ("DPO LoRA, stored reference", 25),
    "dpo_large_computed": ("DPO LoRA, computed reference", 15),
    "sample_vllm": ("sampling, vLLM engine", 60),
    "score_vllm_vs_hf": ("scoring, vLLM vs hf", 10),
}
GROUPS = {"label": ("label_small", "label_large"), "sample": ("sample_hf", "sample_vllm", "score_vllm_vs_hf"),
          "dpo": ("reference_drift", "dpo_small_stored", "mixed_precision", "dpo_small_computed"),
          "large": ("label_large", "dpo_large_stored", "dpo_large_computed"), "run": ("run_1iter",)}


class NotRun(Exception):
    """A row could not run because an earlier step it needs failed or was skipped."""


@dataclass
class Row:
    name: str
    model: str = ""
    status: str = "ok"  # ok | warn (measured, and outside its bound) | skipped | failed
    result: str = ""  # the table's result cell (or why it did not run)
    bound: str = ""  # the bound the figure is judged against, where there is one
    values: dict = field(default_factory=dict)


@dataclass
class Check:
    """Settings, folders, the budget and what the steps hand each other (``state``)."""

    args: argparse.Namespace
    out: Path
    device: str  # cuda | cpu
    dtype: str  # bf16 | fp32: what cream's stages resolve `dtype: auto` to here
    device_name: str
    t0: float = field(default_factory=time.perf_counter)
    state: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # step -> why it is missing
    done: list = field(default_factory=list)  # rows finished so far: written after each, so a kill keeps them

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.args.budget - self.elapsed()

    def say(self, msg: str) -> None:
        print(f"[gpu-check {self.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)

    def need(self, key: str):
        if key not in self.state:  # the first failure of the chain of steps is the reason
            raise NotRun(self.failed.get(key) or next(iter(self.failed.values()), f"{key} is missing"))
        return self.state[key]

    def selected(self, row: str) -> bool:
        return any(row in GROUPS[g] for g in self.args.rows)


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def estimate(ctx: Check, name: str, billions: float) -> float:
    """Rough seconds a row takes (GPU figures at 1B, scaled by size); 0 on CPU, where the budget is the CLI's."""
    return ROWS[name][1] * max(billions, 0.3) if ctx.cuda else 0.0


def attempt(ctx: Check, name: str, model: str, billions: float, fn, *args) -> Row:  # fn None: a skipped row
    """``fn(ctx, *args)`` as one row: not selected or over the budget -> skipped; an exception -> a failed row
    (traceback on stderr), never an exit."""
    title = ROWS[name][0]
    if not ctx.selected(name):
        return Row(name, model, "skipped", "not in --rows")
    need, left = estimate(ctx, name, billions), ctx.left()
    if need > left or fn is None:
        ctx.say(f"{title}: skipped, ~{need:.0f} s needed and {max(left, 0):.0f} s left of --budget")
        return Row(name, model, "skipped", f"budget: ~{need:.0f} s needed, {max(left, 0):.0f} s left")
    ctx.say(f"{title} ({model}) ...")
    t = time.perf_counter()
    try:
        row = fn(ctx, *args)
    except NotRun as e:
        row = Row(name, model, "failed", f"not run: {e}")
    except Exception as e:  # noqa: BLE001  (reported in the table; the exit code says failure)
        traceback.print_exc(file=sys.stderr)
        row = Row(name, model, "failed", f"{type(e).__name__}: {first_line(e)}")
    row.model = row.model or model
    row.values.setdefault("row_seconds", time.perf_counter() - t)
    ctx.say(f"{title}: {row.status} {row.result}")
    ctx.done.append(row)
    write(ctx, ctx.done)  # the table so far: a check stopped from outside (a time limit) still leaves its rows
    return row


def step(ctx: Check, key: str, fn, *args) -> None:
    """A step that is not a row; its output goes to ``ctx.state[key]``, its failure to the rows that need it."""
    try:
        ctx.state[key] = fn(ctx, *args)
    except NotRun as e:
        ctx.failed[key] = str(e)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        ctx.failed[key] = f"{key} failed ({type(e).__name__}: {first_line(e)})"


def release(ctx: Check, *keys: str) -> None:
    for k in keys:
        ctx.state.pop(k, None)
    gc.collect()
    if ctx.cuda:
        import torch

        torch.cuda.empty_cache()


def median_timed(fn, repeats: int, sync) -> tuple[float, object]:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call; the last call's result."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


class PeakMemory:
    """Peak memory while the block runs: ``torch.cuda.max_memory_allocated`` on GPU, else the RSS high-water mark
    (VmHWM, reset on entry through /proc/self/clear_refs; the process's lifetime peak where that is not possible)."""

    def __init__(self, cuda: bool):
        self.cuda, self.kind, self.peak = cuda, "", 0

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.kind = "GPU max_memory_allocated"
            return self
        self.kind = "RSS high-water mark"
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "process peak RSS"
        return self

    def __exit__(self, *exc):
        import resource

        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        elif self.kind == "RSS high-water mark":
            status = Path("/proc/self/status").read_text().splitlines()
            self.peak = int(next(ln.split()[1] for ln in status if ln.startswith("VmHWM:"))) * 1024
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def gib(self) -> float:
        return self.peak / 2**30


# ---------------------------------------------------------------------------------------------- output
def card_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def table(ctx: Check, rows: list[Row]) -> str:
    head = [f"# GPU check: {ctx.device_name}", "",
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, device {ctx.device}, stages' dtype {ctx.dtype}, "
            f"{ctx.elapsed():.0f} s of a {ctx.args.budget:.0f} s budget. Models: {', '.join(models(ctx))}.",
            ""]
    if any(m.startswith("random:") for m in models(ctx)):
        head += ["Random-initialised weights of the named architectures (bench/gpu/shapes.py): throughput, memory "
                 "and numerics are real; generated text and rewards are noise.", ""]
    lines = ["| row | model | status | result | bound |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        cell = (r.result or "").replace("|", "/")
        lines.append(f"| {ROWS[r.name][0]} | {r.model} | {r.status} | {cell} | {r.bound} |")
    return "\n".join(head + lines) + "\n"


def models(ctx: Check) -> list[str]:
    return [m for m in (ctx.args.model, ctx.args.large) if m and m != "none"]


def report(ctx: Check, rows: list[Row]) -> dict:
    """The check as strict JSON: settings, versions and every row (NaN and inf written as null)."""
    from cream_data.stats import json_safe
    from cream_train.run.manifest import versions

    return json_safe({"check": "bench/gpu_check.py", "device": ctx.device, "device_name": ctx.device_name,
                   "stage_dtype": ctx.dtype, "models": models(ctx), "random_weights": any(
                       m.startswith("random:") for m in models(ctx)),
                   "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(ctx.args).items()},
                   "versions": versions(), "seconds": ctx.elapsed(),
                   "rows": [{"title": ROWS[r.name][0], **asdict(r)} for r in rows]})


def write(ctx: Check, rows: list[Row]) -> list[Path]:
    """``OUT/gpu_check.{md,json}`` and, with ``--results DIR``, ``DIR/<card>-<date>.{md,json}`` (cream's atomic
    writes: a check stopped from outside leaves whole files)."""
    from cream_data.tables.io import atomic_write_bytes, atomic_write_json

    md, js = table(ctx, rows), report(ctx, rows)
    targets = [ctx.out / "gpu_check"]
    if ctx.args.results:
        stem = f"{card_slug(ctx.device_name)}-{datetime.now(timezone.utc):%Y-%m-%d}"
        targets.append(Path(ctx.args.results) / stem)
    written = []
    for base in targets:
        atomic_write_bytes(base.with_suffix(".md"), md.encode())
        atomic_write_json(base.with_suffix(".json"), js)
        written += [base.with_suffix(".md"), base.with_suffix(".json")]
    return written
