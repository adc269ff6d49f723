"""DPO training speed and memory: stored reference log-probs vs TRL's own reference model forward.

One process, same data, same settings, on SmolLM2-135M-Instruct (fp32, CPU) with short GSM8K sequences:

- ``stored``:   the preferences table carries log pi_{M_t}(y|x) (``chosen_logp``/``rejected_logp``), so the
                trainer loads no reference model and runs no reference forward;
- ``computed``: TRL's default: a frozen copy of M_t, run forward on every batch.

Prints the median seconds per optimizer step (first steps dropped as warm-up), steps/s, and the peak resident
set size (RSS: the kernel's high-water mark VmHWM, reset before each variant) above the RSS just before each
variant builds its trainer. Variants alternate (stored, computed, stored, computed) so machine load hits both alike; freed
memory is handed back to the OS (malloc_trim) between variants.

    CREAM_CACHE=… python bench/train.py [--steps 8] [--pairs 24] [--batch-size 2] [--rounds 2] [--lora]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
GSM8K = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


class RssPeak:
    """Peak resident set size (bytes) while the block runs: the kernel's high-water mark (VmHWM), reset on entry
    by writing 5 to /proc/self/clear_refs. No sampling thread: one that polls every few ms slows training steps
    ~10x here through the GIL."""

    @staticmethod
    def _status(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(next(ln.split()[1] for ln in text.splitlines() if ln.startswith(key + ":"))) * 1024

    def __enter__(self):
        self.start = self._status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        return self

    def __exit__(self, *exc):
        self.peak = self._status("VmHWM")


def release_memory():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def build_table(model_spec: str, n_pairs: int, folder: Path) -> Path:
    """A preferences table of short GSM8K pairs with stored log-probs of the model (computed once, naively)."""
    import pyarrow as pa

    import schemas
    from cream_data.tables import io
    from cream_data.engines.hf_score import response_token_span
    from cream_data.engines.models import chat_template_hash, load
    from tests.support.models import naive_logps

    model, tok, ref = load(model_spec, device="cpu")
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[: n_pairs + 1]]
    prompts = [[{"role": "user", "content": r["question"][:160]}] for r in rows[:n_pairs]]
    chosen = [r["answer"].split("\n")[0][:80] for r in rows[:n_pairs]]
    rejected = [r["answer"].split("\n")[0][:80] for r in rows[1: n_pairs + 1]]  # another problem's first step
    c_lp = naive_logps(model, tok, prompts, chosen)
    r_lp = naive_logps(model, tok, prompts, rejected)
    n = lambda p, y: (lambda ids_start: len(ids_start[0]) - ids_start[1])(response_token_span(tok, p, y))  # noqa
    th = chat_template_hash(tok)
    out = []
    for i in range(n_pairs):
        out.append(dict(
            prompt_id=f"g{i}", prompt=prompts[i], chosen=[{"role": "assistant", "content": chosen[i]}],
            rejected=[{"role": "assistant", "content": rejected[i]}], chosen_idx=0, rejected_idx=1, iteration=1,
            n_responses=2, rewards=[1.0, 0.0], prev_rewards=None, ranks=[1, 2], prev_ranks=None, kendall_tau=None,
            consistency=0.8, consistency_method="kendall", weight=0.8, chosen_logp=float(c_lp[i]),
            rejected_logp=float(r_lp[i]), chosen_n_tokens=n(prompts[i], chosen[i]),
            rejected_n_tokens=n(prompts[i], rejected[i]), model=ref.name, ref_model=None, prev_model=None,
            prev_ref_model=None, template_hash=th))
    del model
    release_memory()
    return io.write_table(pa.Table.from_pylist(out, schema=schemas.get("preferences").arrow),
                          folder / "preferences", "preferences")


def run_variant(reference: str, prefs: Path, model_spec: str, args, work: Path) -> dict:
    from transformers import TrainerCallback

    from cream_train.config import DPOTrainConfig
    from cream_train.train import build_dpo_trainer, prepare_dpo

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], None

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t)

    cfg = DPOTrainConfig(data=str(prefs), model=model_spec, out=str(work / f"out-{reference}"), reference=reference,
                         max_steps=args.steps, batch_size=args.batch_size, lr=1e-6, logging_steps=args.steps,
                         lora=args.lora)
    data = prepare_dpo(cfg)  # table checks and tokenizer: outside the measured block
    release_memory()
    timer = StepTimer()
    with RssPeak() as mem:
        trainer = build_dpo_trainer(cfg, data, work / f"run-{reference}")
        trainer.add_callback(timer)
        trainer.train()
        ref_loaded = trainer.ref_model is not None
        ref_batches = trainer.reference_forwards
    del trainer
    release_memory()
    steady = timer.times[args.warmup:]
    med = statistics.median(steady)
    return {"reference": reference, "median_step_s": med, "steps_per_s": 1 / med, "steps_timed": len(steady),
            "peak_rss_above_start_mb": (mem.peak - mem.start) / 2**20, "peak_rss_mb": mem.peak / 2**20,
            "reference_model_loaded": ref_loaded, "reference_forward_batches": ref_batches}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lora", action="store_true", help="train a LoRA adapter (reference = adapter disabled)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 avoids OpenMP spin-waits on an oversubscribed shared machine)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"model={args.model} pairs={args.pairs} steps={args.steps} (first {args.warmup} dropped) "
          f"batch={args.batch_size} lora={args.lora} torch_threads={torch.get_num_threads()} device=cpu fp32",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="cream-bench-train-") as tmp:
        work = Path(tmp)
        prefs = build_table(args.model, args.pairs, work)
        results = {"stored": [], "computed": []}
        for r in range(args.rounds):
            for reference in ("stored", "computed"):
                res = run_variant(reference, prefs, args.model, args, work / f"r{r}")
                results[reference].append(res)
                print(json.dumps(res), flush=True)
    summary = {}
    for reference, runs in results.items():
        summary[reference] = {
            "median_step_s": statistics.median(x["median_step_s"] for x in runs),
            "peak_rss_above_start_mb": statistics.median(x["peak_rss_above_start_mb"] for x in runs),
        }
    s, c = summary["stored"], summary["computed"]
    print(f"stored   : {1 / s['median_step_s']:.3f} steps/s ({s['median_step_s']:.3f} s/step), "
          f"peak RSS +{s['peak_rss_above_start_mb']:.0f} MiB")
    print(f"computed : {1 / c['median_step_s']:.3f} steps/s ({c['median_step_s']:.3f} s/step), "
          f"peak RSS +{c['peak_rss_above_start_mb']:.0f} MiB")
    print(f"speed-up stored/computed: {c['median_step_s'] / s['median_step_s']:.2f}x; "
          f"peak memory saved: {c['peak_rss_above_start_mb'] - s['peak_rss_above_start_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
