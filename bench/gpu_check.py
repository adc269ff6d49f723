"""The GPU readiness check (issue #14): one command, one table, the same as JSON in ``--out DIR/gpu_check.json``.

    .venv/bin/python bench/gpu_check.py [--model smollm2-135m-instruct] [--out runs/gpu-check]   # or: make gpu-check
    .venv/bin/python bench/gpu_check.py --device cpu --model tiny --prompts 2 --n 2 --max-new-tokens 4 --steps 2

On one CUDA GPU with the embedded SmolLM2-135M-Instruct it takes a few minutes (bf16); on CPU (fp32) with a tiny
random model it is the smoke test of tests/test_gpu_check.py. The rows, all on the same prompts (the first
``--prompts`` of examples/data/demo_prompts.jsonl unless ``--prompts-source``):

1. ``sample_hf`` / ``sample_vllm``: generated tokens/s of ``HfSampler`` and ``VllmSampler`` (cream_data/engines), same
   prompts, seeds, N, temperature, top-p and max_new_tokens; median over ``--repeats`` after a warm-up; the vLLM row
   gives the ratio vLLM/hf. Different samplers draw different tokens, so the token counts may differ.
2. ``score_vllm_vs_hf``: max |Δ log π(y|x)| between ``HFScorer`` (hf_score.py) and ``VllmScorer`` (vllm_engine.py)
   on the same tokenized (prompt, response) pairs (the hf samples of row 1). Summed over a response's tokens.
3. ``reference_drift`` (the one that matters): the labeler (`cream label`, hf engine) stores log π_{M_t}(y|x) in
   ``chosen_logp``/``rejected_logp``, and training with ``reference: stored`` uses them instead of a reference
   forward. Here the same pairs go through cream's own trainer built with ``reference: computed``: its batches
   (``get_train_dataloader``) through TRL's ``compute_ref_log_probs`` on TRL's reference model, which is what
   training with a computed reference runs each step. Reported: max |Δ logp| over both sides and, with
   h = (logp_c − ref_c) − (logp_r − ref_r), β·max |Δh| (β = 0.1) and the mean signed Δh.
4. ``dpo_stored`` / ``dpo_computed``: ``--steps`` optimizer steps of cream's DPO trainer with each reference; median
   seconds per step (the first step dropped as warm-up when there are 3 or more), and peak memory:
   ``torch.cuda.max_memory_allocated`` on GPU, the RSS high-water mark (VmHWM, reset per variant) on CPU.
5. ``run_1iter``: ``cream run`` of a 1-iteration config written to ``DIR/run.yaml`` (SFT, sample with vLLM when it
   can run, else hf; label; train; no eval), each stage's seconds from the run's ``manifest.json``.

What "small" drift is. With Δh = h(stored reference) − h(TRL's reference), training with the stored values starts
from h = Δh instead of h ≈ 0 (policy = reference at step 0), so each pair's loss moves by at most β·|Δh| (the slope
of −log σ(z) is at most 1 in size) and its gradient weight σ(−βh) by at most β·|Δh|/4. In fp32 the two paths agree
to summation order: 5e-6 on the tiny model, 2e-4 on SmolLM2-135M with 24-token answers (CPU); below 1e-3 is
expected (the test asserts it). In bf16 the two forwards run other kernels on other batch shapes (prefix sharing,
padding), so per-sequence differences of hundredths to tenths of a nat are plain bf16 rounding (an estimate until a
GPU run records it); β·max |Δh| below 0.05 (losses move < 0.05 nats, gradient weights < 1.25 points) is small.
Above 0.1, or a mean Δh about as large as the max (a bias, not noise), points at a real mismatch (tokenisation, chat
template, a model changed after labeling): use ``reference: computed`` until it is explained.

vLLM rows need the ``vllm`` package and a CUDA device; otherwise they say why they were skipped and the exit
code stays 0. The exit code is 1 when a row failed (its reason in the table, the traceback on stderr) and 2 for a
usage mistake (unknown model, --device cuda without CUDA, an --out folder holding something else). Progress goes to
stderr, the table to stdout. Rows 3–5 use cream's own dtype policy (bf16 on CUDA, fp32 on CPU); ``--dtype`` sets
the engines of rows 1–2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO_DATA = REPO / "examples" / "data"
BETA = 0.1
SMALL_BETA_DH = 0.05  # β·max |Δh| below this: small (module docstring)
FP32_MAX_DLOGP = 1e-3  # fp32: stored and computed references agree to summation order
TOP_P = 0.95
OUR_ENTRIES = {"gpu_check.json", "gpu_check.json.tmp", "work", "run", "run.yaml", "run.log", "tiny-model"}
TITLES = {
    "sample_hf": "1 sampling, hf engine",
    "sample_vllm": "1 sampling, vLLM engine",
    "score_vllm_vs_hf": "2 scoring, vLLM vs hf",
    "reference_drift": "3 stored vs TRL reference",
    "dpo_stored": "4 DPO, stored reference",
    "dpo_computed": "4 DPO, computed reference",
    "run_1iter": "5 cream run, 1 iteration",
}


class NotRun(Exception):
    """A row could not run because an earlier step it needs failed."""


@dataclass
class Row:
    name: str
    status: str = "ok"  # ok | warn (measured, and over its threshold) | skipped | failed
    reason: str = ""
    result: str = ""  # the table's result cell
    values: dict = field(default_factory=dict)


@dataclass
class Check:
    """The settings, folders and what the steps hand each other (``state``)."""

    args: argparse.Namespace
    out: Path
    model: str  # the spec every stage gets (an alias, a Hub id or an absolute folder)
    device: str  # cuda | cpu
    dtype: str  # bf16 | fp32: the engines of rows 1-2
    t0: float = field(default_factory=time.perf_counter)
    state: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # step -> why

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def say(self, msg: str) -> None:
        print(f"[gpu-check {time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def need(self, key: str):
        if key not in self.state:  # the first failure of the chain of steps is the reason
            raise NotRun(self.failed.get(key) or f"not run: {key} is missing")
        return self.state[key]


# ---------------------------------------------------------------------------------------------- set-up
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Rows, and what small drift is: see the module docstring.")
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="alias, Hub id or checkpoint folder; 'tiny': a random 2-layer Llama with SmolLM2's tokenizer")
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                    help="engines of rows 1-2 (auto: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts (K) for every row")
    ap.add_argument("--prompts-source", default=str(DEMO_DATA / "demo_prompts.jsonl"))
    ap.add_argument("--n", type=int, default=4, help="responses per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3, help="timed sampling repeats (median)")
    ap.add_argument("--steps", type=int, default=8, help="DPO optimizer steps per reference variant")
    ap.add_argument("--batch-size", type=int, default=4, help="DPO pairs per step")
    ap.add_argument("--vllm-memory", type=float, default=0.5, help="vLLM gpu_memory_utilization in this process")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (also OMP_NUM_THREADS of cream run)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check")
    ap.add_argument("--skip-run", action="store_true", help="skip row 5 (the 1-iteration cream run)")
    args = ap.parse_args(argv)
    for name in ("prompts", "n", "max_new_tokens", "repeats", "steps", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: got {getattr(args, name)}, expected >= 1")
    return args


def prepare_out(out: Path) -> Path:
    """``out`` emptied of an earlier check's entries; anything else in it is refused (never deleted)."""
    from cream_data.errors import CreamError

    out = out.resolve()
    if out.exists():
        other = sorted(p.name for p in out.iterdir() if p.name not in OUR_ENTRIES) if out.is_dir() else []
        if not out.is_dir() or other:
            raise CreamError(f"--out {out}: holds {', '.join(other[:3]) or 'a file'}, not an earlier gpu check; "
                             "pick an empty or new folder")
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def setup(args: argparse.Namespace) -> Check:
    """Device, dtype, output folder and model resolved; a usage mistake raises CreamError (exit 2)."""
    import torch

    from cream_data.engines import models
    from cream_data.errors import CreamError
    from cream_data.inputs.prompts import load_prompts

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    models.check_device(device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
    prompts = load_prompts(args.prompts_source)
    if args.prompts > prompts.num_rows:
        raise CreamError(f"--prompts {args.prompts}: {args.prompts_source} has only {prompts.num_rows} prompts")
    model = args.model
    if model != "tiny":
        if Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        models.load(model, with_model=False)  # an unknown model or tokenizer: one line now, not failed rows later
    out = prepare_out(args.out)
    if model == "tiny":
        model = str(models.make_tiny_model(out / "tiny-model"))
    return Check(args, out, model, device, dtype, state={"prompts": prompts.slice(0, args.prompts)})


def vllm_unavailable(ctx: Check) -> str | None:
    """Why the vLLM rows cannot run here (None: they can)."""
    why = []
    if importlib.util.find_spec("vllm") is None:
        why.append("vllm not installed")
    if not ctx.cuda:
        why.append("no CUDA" + (" (--device cpu)" if ctx.args.device == "cpu" else ""))
    return " / ".join(why) or None


def release_memory(cuda: bool) -> None:
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


def attempt(ctx: Check, name: str, fn, *args) -> Row:
    """``fn(ctx, *args)`` as one row: an exception becomes a failed row (traceback on stderr), not an exit."""
    ctx.say(f"{TITLES.get(name, name)} ...")
    try:
        row = fn(ctx, *args)
    except NotRun as e:
        row = Row(name, "failed", str(e))
    except Exception as e:  # noqa: BLE001  (reported in the table, the exit code says failure)
        traceback.print_exc(file=sys.stderr)
        row = Row(name, "failed", f"{type(e).__name__}: {first_line(e)}")
    ctx.say(f"{TITLES.get(name, name)}: {row.status} {row.result or row.reason}")
    return row


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def step(ctx: Check, key: str, fn, *args) -> None:
    """A step that is not a row (its output goes to ``ctx.state[key]``); a failure is recorded for the rows."""
    try:
        ctx.state[key] = fn(ctx, *args)
    except NotRun as e:
        ctx.failed[key] = str(e)  # already "not run: <the first failure>"
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        ctx.failed[key] = f"not run: {key} failed ({type(e).__name__}: {first_line(e)})"


# ---------------------------------------------------------------------------------------------- row 1: sampling
def load_hf(ctx: Check):
    """The hf engine on the check's device and dtype."""
    from cream_data.engines import models
    from cream_data.engines.hf_sample import HfSampler

    model, tok, _ = models.load(ctx.model, device=ctx.device, dtype=ctx.dtype)
    return HfSampler(model, tok)


def prompts_and_seeds(ctx: Check):
    from cream_data.engines.base import prompt_seed

    table = ctx.need("prompts")
    ids = table.column("prompt_id").to_pylist()
    return table.column("prompt").to_pylist(), ids, [prompt_seed(0, i) for i in ids]


def timed_sampling(ctx: Check, generate_all) -> dict:
    """``generate_all()`` (returns lists of Generations per prompt) timed ``--repeats`` times after a warm-up."""
    generate_all(warmup=True)
    seconds, tokens = [], []
    for _ in range(ctx.args.repeats):
        t = time.perf_counter()
        outs = generate_all(warmup=False)
        seconds.append(time.perf_counter() - t)
        tokens.append(sum(g.n_tokens for gens in outs for g in gens))
    med = statistics.median(seconds)
    tok = statistics.median(tokens)
    return {"tokens": tok, "median_seconds": med, "tok_s": tok / med, "repeats": ctx.args.repeats,
            "prompts": ctx.args.prompts, "n": ctx.args.n, "max_new_tokens": ctx.args.max_new_tokens, "dtype": ctx.dtype}


def params(ctx: Check, warmup: bool):
    from cream_data.engines.base import GenerationParams

    return GenerationParams(ctx.args.temperature, TOP_P, 4 if warmup else ctx.args.max_new_tokens)


def sample_hf(ctx: Check) -> Row:
    """Row 1 (hf): batches of 8 prompts x N, longest first, as `cream sample --engine hf` runs them."""
    from cream_data.engines.base import plan_batches
    from cream_data.stages.sample_config import DEFAULT_BATCH_SIZE

    engine = ctx.need("hf_engine")
    convs, ids, seeds = prompts_and_seeds(ctx)
    batches = plan_batches(ids, engine.prompt_lengths(convs), DEFAULT_BATCH_SIZE["hf"])

    def generate_all(warmup: bool):
        n = 1 if warmup else ctx.args.n
        return [g for b in batches[:1 if warmup else None]
                for g in engine.generate([convs[i] for i in b], [seeds[i] for i in b], n, params(ctx, warmup))]

    v = timed_sampling(ctx, generate_all)
    ctx.state["hf_tok_s"] = v["tok_s"]
    return Row("sample_hf", result=f"{v['tok_s']:.1f} tok/s ({v['tokens']:.0f} tokens, {v['median_seconds']:.2f} s)",
               values=v)


def sample_vllm(ctx: Check) -> Row:
    """Row 1 (vLLM): every prompt in one call (vLLM schedules its own batches), same seeds and settings."""
    engine = ctx.need("vllm_llm")
    from cream_data.engines.vllm_engine import VllmSampler

    sampler = VllmSampler(engine)
    convs, _, seeds = prompts_and_seeds(ctx)

    def generate_all(warmup: bool):
        k = 1 if warmup else len(convs)
        return sampler.generate(convs[:k], seeds[:k], 1 if warmup else ctx.args.n, params(ctx, warmup))

    v = timed_sampling(ctx, generate_all)
    hf = ctx.state.get("hf_tok_s")
    v["ratio_vs_hf"] = v["tok_s"] / hf if hf else None
    ratio = f", {v['ratio_vs_hf']:.2f}x hf" if hf else ""
    return Row("sample_vllm", result=f"{v['tok_s']:.1f} tok/s{ratio}", values=v)


# ---------------------------------------------------------------------------------------------- labeling (rows 2-4)
def write_responses(ctx: Check) -> Path:
    """The hf samples through the sample stage (``cream sample``), reusing the loaded engine."""
    from cream_data.stages.sample import sample
    from cream_data.stages.sample_config import SampleConfig

    cfg = SampleConfig(model=ctx.model, n=ctx.args.n, seed=0, temperature=ctx.args.temperature, top_p=TOP_P,
                       max_new_tokens=ctx.args.max_new_tokens, engine="hf", iteration=1)
    out = ctx.work / "responses"
    sample(ctx.need("prompts"), cfg, out, engine=ctx.need("hf_engine"))
    return out


def hf_scores(ctx: Check):
    """``HFScorer`` (the labeler's hf scorer, its default batch settings) on the responses: (tokenized, log-probs)."""
    from cream_data.engines.hf_score import HFScorer, tokenize
    from cream_data.stages.label_config import LabelConfig
    from cream_data.tables import io

    engine = ctx.need("hf_engine")
    responses = io.read_table(ctx.need("responses"), "responses")
    tok = tokenize(engine.tokenizer, responses["prompt"].to_pylist(), responses["response"].to_pylist())
    d = LabelConfig(model=ctx.model)
    scorer = HFScorer(engine.model, engine.tokenizer.pad_token_id, batch_size=d.batch_size,
                      max_tokens=d.max_batch_tokens)
    t = time.perf_counter()
    values = scorer.score(tok)
    ctx.state["hf_score_tok_s"] = float(tok.n_tokens.sum()) / (time.perf_counter() - t)
    return tok, values


def label_pairs(ctx: Check) -> Path:
    """`cream label` (hf engine, M_t alone: likelihood reward) on the responses; its preferences table."""
    from cream_data.stages.label import label
    from cream_data.stages.label_config import LabelConfig

    out = ctx.work / "label"
    summary = label(ctx.need("responses"), LabelConfig(model=ctx.model, engine="hf"), out)
    pairs = summary.pairing.pairs if summary.pairing else 0
    if not pairs:
        raise RuntimeError(f"cream label formed no preference pairs from {summary.responses} responses "
                           "(every prompt's responses tied?); raise --n or --max-new-tokens")
    return out / "preferences"


def dpo_config(ctx: Check, reference: str, steps: int, name: str):
    from cream_train.config import DPOTrainConfig

    return DPOTrainConfig(data=str(ctx.need("prefs")), model=ctx.model, out=str(ctx.work / f"model-{name}"),
                          reference=reference, max_steps=steps, batch_size=ctx.args.batch_size, lr=1e-6,
                          logging_steps=steps, warmup_ratio=0.0)


# ---------------------------------------------------------------------------------------------- row 3: drift
def trl_reference_logps(trainer):
    """TRL's reference log-probs of every pair, through the trainer's own batches and ``compute_ref_log_probs``
    (the reference model TRL loaded): (chosen, rejected) by table row, and the dtype TRL returned them in."""
    import numpy as np
    import torch

    from cream_train.train import ROW_COLUMN

    n = len(trainer.train_dataset)
    chosen, rejected, dtype = np.full(n, np.nan), np.full(n, np.nan), None
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            rows = [int(r) for r in batch.pop(ROW_COLUMN)]
            batch.pop("weight")  # cream's per-pair C: not a model input (CreamDPOTrainer.compute_loss pops it too)
            c, r = trainer.compute_ref_log_probs(trainer.ref_model, trainer._prepare_inputs(batch))
            dtype = str(c.dtype)
            chosen[rows], rejected[rows] = c.double().cpu().numpy(), r.double().cpu().numpy()
    if np.isnan(chosen).any() or np.isnan(rejected).any():
        raise RuntimeError(f"TRL's train dataloader left {int(np.isnan(chosen).sum())} of {n} pairs unscored")
    return chosen, rejected, dtype


def drift_verdict(v: dict) -> str:
    """small, or LARGE (module docstring): fp32 by max |Δ logp|, bf16 by β·max |Δh|."""
    if v["model_dtype"] == "torch.float32":
        ok, what = v["max_abs_dlogp"] < FP32_MAX_DLOGP, f"max|dlogp| >= {FP32_MAX_DLOGP:g} in fp32"
    else:
        ok, what = v["beta_max_abs_dh"] < SMALL_BETA_DH, f"beta*max|dh| >= {SMALL_BETA_DH:g}"
    return "small" if ok else f"LARGE ({what}): train with reference computed until explained"


def reference_drift(ctx: Check) -> Row:
    """Row 3: the labeler's stored log-probs vs TRL's reference forward of the same model on the same pairs."""
    import numpy as np

    from cream_train.train import build_dpo_trainer, prepare_dpo

    prepare_dpo(dpo_config(ctx, "stored", 1, "drift"))  # the stored values are accepted as the reference
    cfg = dpo_config(ctx, "computed", 1, "drift")
    data = prepare_dpo(cfg)
    trainer = build_dpo_trainer(cfg, data, ctx.work / "trainer-drift")
    trl_c, trl_r, trl_dtype = trl_reference_logps(trainer)
    model_dtype = str(trainer.model.dtype)
    del trainer
    release_memory(ctx.cuda)
    stored_c = data.table.column("chosen_logp").to_numpy().astype(np.float64)
    stored_r = data.table.column("rejected_logp").to_numpy().astype(np.float64)
    d_c, d_r = stored_c - trl_c, stored_r - trl_r
    dh = -(d_c - d_r)  # h with the stored reference minus h with TRL's (same policy log-probs)
    v = {"pairs": len(d_c), "max_abs_dlogp": float(np.abs(np.concatenate([d_c, d_r])).max()),
         "mean_abs_dlogp": float(np.abs(np.concatenate([d_c, d_r])).mean()), "beta": BETA,
         "beta_max_abs_dh": float(BETA * np.abs(dh).max()), "mean_dh": float(dh.mean()),
         "max_abs_logp": float(np.abs(np.concatenate([stored_c, stored_r])).max()),
         "model_dtype": model_dtype, "trl_logp_dtype": trl_dtype, "stored_by": "cream label (hf engine)"}
    v["verdict"] = verdict = drift_verdict(v)
    return Row("reference_drift", "ok" if verdict == "small" else "warn", values=v, result=f"max|dlogp| {v['max_abs_dlogp']:.2e}, beta*max|dh| "
               f"{v['beta_max_abs_dh']:.2e} ({verdict}; {v['pairs']} pairs, {model_dtype.replace('torch.', '')})")


# ---------------------------------------------------------------------------------------------- row 4: DPO steps
class PeakMemory:
    """Peak memory while the block runs: ``torch.cuda.max_memory_allocated`` on GPU, else the RSS high-water mark
    (VmHWM, reset on entry through /proc/self/clear_refs); the process's lifetime peak where that is not possible."""

    def __init__(self, cuda: bool):
        self.cuda, self.kind, self.start, self.peak = cuda, "", 0, 0

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start, self.kind = torch.cuda.memory_allocated(), "cuda max_memory_allocated"
            return self
        self.start, self.kind = _proc_status("VmRSS"), "RSS high-water mark"
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "process peak RSS (getrusage)"
        return self

    def __exit__(self, *exc):
        import resource

        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        elif self.kind == "RSS high-water mark":
            self.peak = _proc_status("VmHWM")
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _proc_status(key: str) -> int:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    return int(next((ln.split()[1] for ln in text.splitlines() if ln.startswith(key + ":")), "0")) * 1024


def step_timer(cuda: bool):
    """A TrainerCallback recording each optimizer step's wall-clock seconds (GPU work finished at its end)."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def dpo_variant(ctx: Check, reference: str) -> Row:
    """Row 4: ``--steps`` steps of cream's DPO trainer with one reference; median step time and peak memory."""
    from cream_train.train import build_dpo_trainer, prepare_dpo

    cfg = dpo_config(ctx, reference, ctx.args.steps, reference)
    data = prepare_dpo(cfg)  # table checks and tokenizer: outside the measured block
    release_memory(ctx.cuda)
    timer = step_timer(ctx.cuda)
    with PeakMemory(ctx.cuda) as mem:
        trainer = build_dpo_trainer(cfg, data, ctx.work / f"trainer-{reference}")
        trainer.add_callback(timer)
        trainer.train()
        info = {"reference_model_loaded": trainer.ref_model is not None,
                "reference_forward_batches": trainer.reference_forwards, "dtype": str(trainer.model.dtype)}
    del trainer
    release_memory(ctx.cuda)
    steady = timer.times[1:] if len(timer.times) >= 3 else timer.times
    med = statistics.median(steady)
    v = {"reference": reference, "steps": len(timer.times), "steps_timed": len(steady), "median_step_s": med,
         "steps_per_s": 1 / med, "peak_memory_mib": mem.peak / 2**20,
         "peak_above_start_mib": (mem.peak - mem.start) / 2**20, "memory_kind": mem.kind, "pairs": len(data.weights),
         "batch_size": ctx.args.batch_size, **info}
    ctx.state[f"dpo_{reference}"] = v
    result = f"{v['steps_per_s']:.2f} steps/s, peak {v['peak_memory_mib']:.0f} MiB ({mem.kind})"
    other = ctx.state.get("dpo_stored")
    if reference == "computed" and other:
        v["stored_speedup"] = other["steps_per_s"] / v["steps_per_s"]
        v["stored_saves_mib"] = v["peak_memory_mib"] - other["peak_memory_mib"]
        result += f"; stored {v['stored_speedup']:.2f}x faster, {v['stored_saves_mib']:.0f} MiB less"
    return Row(f"dpo_{reference}", result=result, values=v)


# ---------------------------------------------------------------------------------------------- row 2: scoring
def load_vllm(ctx: Check):
    from cream_data.engines import models
    from cream_data.engines.vllm_engine import load_llm

    return load_llm(models.resolve(ctx.model), seed=0, dtype=ctx.dtype,
                    gpu_memory_utilization=ctx.args.vllm_memory)


def score_vllm_vs_hf(ctx: Check) -> Row:
    """Row 2: ``VllmScorer`` on the items ``HFScorer`` scored (same token ids, same response spans)."""
    import numpy as np

    from cream_data.engines.vllm_engine import VllmScorer

    tok, hf = ctx.need("hf_scores")
    t = time.perf_counter()
    vl = VllmScorer(ctx.need("vllm_llm")).score(tok)
    vllm_tok_s = float(tok.n_tokens.sum()) / (time.perf_counter() - t)
    d = np.abs(vl - hf)
    v = {"items": len(d), "response_tokens": int(tok.n_tokens.sum()), "max_abs_dlogp": float(d.max()),
         "mean_abs_dlogp": float(d.mean()), "max_abs_dlogp_per_token": float((d / tok.n_tokens).max()),
         "hf_score_tok_s": ctx.state.get("hf_score_tok_s"), "vllm_score_tok_s": vllm_tok_s, "dtype": ctx.dtype}
    return Row("score_vllm_vs_hf", values=v, result=f"max|dlogp| {v['max_abs_dlogp']:.2e} "
               f"(mean {v['mean_abs_dlogp']:.2e}, {v['items']} responses)")


# ---------------------------------------------------------------------------------------------- row 5: cream run
def run_yaml(ctx: Check, engine: str) -> Path:
    """A 1-iteration config modelled on examples/demo.yaml, at the check's sizes, without eval."""
    a = ctx.args
    text = f"""# written by bench/gpu_check.py: one CREAM iteration at the check's sizes
model: {json.dumps(ctx.model)}
method: cream
iterations: 1
seed: 0
run_dir: {json.dumps(str(ctx.out / "run"))}
sft: {{data: {json.dumps(str(DEMO_DATA / "demo_sft.jsonl"))}, limit: 8, lr: 1.0e-5, epochs: 1, batch_size: 4}}
prompts: {{source: {json.dumps(str(Path(a.prompts_source).resolve()))}, per_iteration: {a.prompts}}}
sample: {{n: {a.n}, temperature: {a.temperature}, top_p: {TOP_P}, max_new_tokens: {a.max_new_tokens}, engine: {engine}}}
label: {{batch_size: 8}}
train: {{beta: {BETA}, lr: 1.0e-6, epochs: 1, batch_size: {a.batch_size}}}
eval: {{models: none}}
"""
    path = ctx.out / "run.yaml"
    path.write_text(text)
    return path


def stage_rank(name: str) -> int:
    """A stage's place in the loop's walk (ties of the manifest's one-second start times)."""
    order = ("prompts", "eval-M0", "sft", "train-M1", "eval-M1", "sample", "label", "train")
    return next((i for i, prefix in enumerate(order) if name.startswith(prefix)), len(order))


def run_1iter(ctx: Check) -> Row:
    """Row 5: `cream run` in a child process (log in DIR/run.log), each stage a process of its own; stage seconds
    and each stage process's peak memory from the run's manifest."""
    engine = "hf" if vllm_unavailable(ctx) else "vllm"
    config = run_yaml(ctx, engine)
    env = dict(os.environ)
    if ctx.args.threads:
        env["OMP_NUM_THREADS"] = str(ctx.args.threads)
    log = ctx.out / "run.log"
    ctx.say(f"cream run {config} (sample engine {engine}; log {log})")
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "cli.main", "run", str(config)], cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        tail = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise RuntimeError(f"cream run exited with {rc}: {tail[0][:200]} (see {log})")
    stages = json.loads((ctx.out / "run" / "manifest.json").read_text())["stages"]
    stages = dict(sorted(stages.items(), key=lambda kv: (kv[1].get("started") or "", stage_rank(kv[0]))))
    seconds = {name: rec.get("seconds") for name, rec in stages.items()}
    # each stage ran as its own process, which recorded its peak memory (GPU where it used CUDA, else resident)
    peak = {name: rec.get("peak_gpu_gib", rec.get("peak_rss_gib")) for name, rec in stages.items()
            if "peak_rss_gib" in rec}
    unit = "GPU" if any("peak_gpu_gib" in rec for rec in stages.values()) else "RSS"
    v = {"wall_seconds": wall, "sample_engine": engine, "stages": seconds, "peak_gib": peak, "peak_of": unit,
         "status": {name: rec.get("status") for name, rec in stages.items()},
         "all_done": all(rec.get("status") == "done" for rec in stages.values()), "run_dir": str(ctx.out / "run")}
    parts = ", ".join(f"{name} {s:.1f}s" + (f" ({unit} {peak[name]:.2f} GiB)" if peak.get(name) is not None else "")
                      for name, s in seconds.items() if s is not None)
    return Row("run_1iter", "ok" if v["all_done"] else "failed", "" if v["all_done"] else "a stage is not done",
               result=f"{wall:.0f} s: {parts}", values=v)


# ---------------------------------------------------------------------------------------------- the check
def hf_rows(ctx: Check) -> list[Row]:
    """Rows 1 (hf), 3 and 4, and the hf scores row 2 needs; the hf model is freed at the end."""
    step(ctx, "hf_engine", load_hf)
    rows = [attempt(ctx, "sample_hf", sample_hf)]
    step(ctx, "responses", write_responses)
    step(ctx, "hf_scores", hf_scores)
    ctx.state.pop("hf_engine", None)
    release_memory(ctx.cuda)
    ctx.say("cream label on the hf samples (the stored reference log-probs) ...")
    step(ctx, "prefs", label_pairs)
    rows.append(attempt(ctx, "reference_drift", reference_drift))
    rows += [attempt(ctx, "dpo_stored", dpo_variant, "stored"), attempt(ctx, "dpo_computed", dpo_variant, "computed")]
    return rows


def vllm_rows(ctx: Check) -> list[Row]:
    why = vllm_unavailable(ctx)
    if why:
        return [Row(name, "skipped", why) for name in ("sample_vllm", "score_vllm_vs_hf")]
    step(ctx, "vllm_llm", load_vllm)
    rows = [attempt(ctx, "sample_vllm", sample_vllm), attempt(ctx, "score_vllm_vs_hf", score_vllm_vs_hf)]
    ctx.state.pop("vllm_llm", None)
    release_memory(ctx.cuda)
    return rows


def run_check(ctx: Check) -> list[Row]:
    """Every row. The cream run goes first, while this process holds no GPU memory (its vLLM sampler takes ~90 %
    of the GPU); vLLM runs here last, after the hf model and the trainers are freed."""
    run = Row("run_1iter", "skipped", "--skip-run") if ctx.args.skip_run else attempt(ctx, "run_1iter", run_1iter)
    rows = hf_rows(ctx) + vllm_rows(ctx) + [run]
    order = list(TITLES)
    return sorted(rows, key=lambda r: order.index(r.name))


def render(ctx: Check, rows: list[Row]) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if ctx.cuda else "cpu"
    head = (f"gpu check: model {ctx.model}, device {ctx.device} ({gpu}), engines {ctx.dtype}, K={ctx.args.prompts} "
            f"prompts x N={ctx.args.n}, {ctx.args.max_new_tokens} new tokens, {ctx.args.steps} DPO steps")
    width = max(len(t) for t in TITLES.values())
    lines = [head, "", f"| {'check':<{width}} | status  | result", f"|{'-' * (width + 2)}|---------|{'-' * 40}"]
    for r in rows:
        lines.append(f"| {TITLES[r.name]:<{width}} | {r.status:<7} | {r.result or r.reason}")
    return "\n".join(lines)


def report(ctx: Check, rows: list[Row]) -> dict:
    from cream_train.run_manifest import versions

    return {"check": "bench/gpu_check.py", "model": ctx.model, "device": ctx.device, "engine_dtype": ctx.dtype,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(ctx.args).items()},
            "versions": versions(), "seconds": time.perf_counter() - ctx.t0,
            "rows": [{"title": TITLES[r.name], **asdict(r)} for r in rows]}


def finite(obj):
    """JSON without NaN/inf (written as null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # every part (trainers, the cream run) then stays on the CPU
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from cream_data.errors import CreamError

    try:
        ctx = setup(args)
    except CreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with contextlib.redirect_stdout(sys.stderr):  # the trainers' log lines: stdout holds the table alone
        rows = run_check(ctx)
    path = ctx.out / "gpu_check.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(finite(report(ctx, rows)), indent=2) + "\n")
    os.replace(tmp, path)
    print(render(ctx, rows), flush=True)
    ctx.say(f"done; JSON: {path}")
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
