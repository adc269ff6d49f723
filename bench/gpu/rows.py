"""The measured rows of the GPU check: labeling throughput and MFU, HF sampling, the stored-vs-computed reference,
DPO step time and memory (full fine-tuning and LoRA), the mixed-precision check, and the vLLM rows where vLLM runs.

Every row runs cream's own code: ``HFScorer`` as `cream label` builds it, the sample and label stages, and the DPO
trainer as `cream train` builds it (``build_dpo_trainer``), each on the check's device in cream's dtype policy
(``dtype: auto``: bf16 on CUDA — labeling with bf16 Linear weights under autocast, training with fp32 master weights
under bf16 autocast — and fp32 on CPU).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np

from bench.gpu import shapes
from bench.gpu.check import Check, PeakMemory, Row, median_timed

BETA = 0.1
LR = 1e-6
FP32_MAX_DLOGP = 1e-3  # fp32: the labeler and the trainer agree to summation order
BIAS_T = 4.0  # bf16: a mean Δh this many standard errors from 0 is a bias, not rounding noise
MOVED_MIN = 0.99  # mixed precision: at least this fraction of the non-embedding weights moves in 5 steps at lr 1e-6


def sync(ctx: Check):
    import torch

    return torch.cuda.synchronize if ctx.cuda else (lambda: None)


def billions(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e9


# ---------------------------------------------------------------------------------------------- labeling
def label_items(ctx: Check) -> tuple[list, list]:
    """``--label-prompts`` prompts x ``--n`` responses of ``--response-tokens`` random tokens each (decoded text, as a
    responses table holds it): the scorer's work is set by lengths, not by content."""
    tok, prompts = ctx.need("tokenizer"), ctx.need("prompts")
    rng = np.random.default_rng(0)
    special = set(tok.all_special_ids)
    vocab = np.array([i for i in range(min(len(tok), 32000)) if i not in special])
    convs, texts = [], []
    for conv in prompts.column("prompt").to_pylist()[:ctx.args.label_prompts]:
        for _ in range(ctx.args.n):
            convs.append(conv)
            texts.append(tok.decode(rng.choice(vocab, ctx.args.response_tokens).tolist(), skip_special_tokens=True))
    return convs, texts


def label_throughput(ctx: Check, size: str) -> Row:
    """Scored tokens/s of `cream label`'s scorer (its default batch settings) with prefix sharing on and off; MFU is
    the model FLOPs of scoring every item on its own, over the seconds, over the card's bf16 peak — with sharing on
    it is an *effective* MFU (a prompt counted once per response, computed once per prompt)."""
    from cream_data.engines.hf_score import HFScorer, tokenize
    from cream_data.settings import default_of
    from cream_data.stages.label_config import LabelConfig

    model, tok = ctx.need(f"{size}_model"), ctx.need("tokenizer")
    items = tokenize(tok, *ctx.need("label_items"))
    fields = {f.name: f for f in LabelConfig.__dataclass_fields__.values()}
    batch, max_tokens = default_of(fields["batch_size"]), default_of(fields["max_batch_tokens"])
    seq = [len(x) for x in items.ids]
    flops = shapes.forward_flops(model, seq, int(items.n_tokens.sum()))
    peak, peak_src = shapes.bf16_peak(ctx.device_name, ctx.args.peak_tflops)
    v = {"items": len(seq), "tokens": sum(seq), "response_tokens": int(items.n_tokens.sum()), "model_flops": flops,
         "batch_size": batch, "max_batch_tokens": max_tokens, "peak_flops": peak, "peak_source": peak_src,
         "params_b": billions(model), "compute": ctx.dtype}
    logps = {}
    for sharing in (True, False):
        scorer = HFScorer(model, tok.pad_token_id, batch_size=batch, max_tokens=max_tokens, prefix_sharing=sharing,
                          compute=ctx.dtype)
        seconds, logps[sharing] = median_timed(lambda s=scorer: s.score(items), ctx.args.repeats, sync(ctx))
        key = "on" if sharing else "off"
        v[f"seconds_{key}"], v[f"tok_s_{key}"] = seconds, sum(seq) / seconds
        v[f"mfu_{key}"] = flops / seconds / peak if peak else None
    v["sharing_speedup"] = v["seconds_off"] / v["seconds_on"]
    v["max_abs_dlogp_on_vs_off"] = float(np.abs(logps[True] - logps[False]).max())
    if size == "small":
        ctx.state["hf_label_scores"] = (items, logps[True])

    def mfu(key):
        return f", MFU {100 * v[f'mfu_{key}']:.1f} %" if peak else ""
    result = (f"sharing on {v['tok_s_on']:,.0f} tok/s{mfu('on')}; off {v['tok_s_off']:,.0f} tok/s{mfu('off')} "
              f"({v['sharing_speedup']:.2f}x; {len(seq)} x {v['tokens'] / len(seq):.0f} tokens)")
    return Row(f"label_{size}", result=result, bound=f"MFU of {peak_src}" if peak else peak_src, values=v)


# ---------------------------------------------------------------------------------------------- sampling
def sample_hf(ctx: Check) -> Row:
    """`cream sample --engine hf` (the sample stage, the in-memory model as its engine) on ``--prompts`` prompts x
    ``--n``; its responses table feeds the labeling and DPO rows."""
    import pyarrow.compute as pc

    from cream_data.engines.base import GenerationParams
    from cream_data.engines.hf_sample import HfSampler
    from cream_data.stages.sample import sample
    from cream_data.stages.sample_config import SampleConfig
    from cream_data.tables import io

    model, tok = ctx.need("small_model"), ctx.need("tokenizer")
    engine = HfSampler(model, tok)
    prompts = ctx.need("prompts").slice(0, ctx.args.prompts)
    convs = prompts.column("prompt").to_pylist()
    engine.generate(convs[:1], [0], 1, GenerationParams(0.8, 0.95, 4))  # warm-up
    cfg = SampleConfig(model=str(ctx.need("small_dir")), n=ctx.args.n, seed=0, temperature=0.8, top_p=0.95,
                       max_new_tokens=ctx.args.max_new_tokens, engine="hf", iteration=1, dtype=ctx.dtype)
    out = ctx.work / "responses"
    sync(ctx)()
    t = time.perf_counter()
    sample(prompts, cfg, out, engine=engine)
    sync(ctx)()
    seconds = time.perf_counter() - t
    table = io.read_table(out, "responses")
    tokens = int(pc.sum(table.column("n_tokens")).as_py())
    ctx.state["responses"] = out
    v = {"prompts": prompts.num_rows, "n": ctx.args.n, "max_new_tokens": ctx.args.max_new_tokens,
         "tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds, "dtype": ctx.dtype,
         "sequences": table.num_rows}
    return Row("sample_hf", result=f"{v['tok_s']:,.0f} tok/s ({tokens} tokens in {seconds:.1f} s, "
               f"{table.num_rows} sequences of <= {ctx.args.max_new_tokens})", values=v)


# ---------------------------------------------------------------------------------------------- DPO
def label_stage(ctx: Check, size: str) -> Path:
    """`cream label` (hf engine, M_t alone) on the sampled responses: the preferences with stored log-probs."""
    from cream_data.stages.label import label
    from cream_data.stages.label_config import LabelConfig

    out = ctx.work / f"label-{size}"
    t = time.perf_counter()
    summary = label(ctx.need("responses"), LabelConfig(model=str(ctx.need(f"{size}_dir")), engine="hf",
                                                       dtype=ctx.dtype), out)
    ctx.state[f"label_{size}_seconds"] = time.perf_counter() - t
    if not (summary.pairing and summary.pairing.pairs):
        raise RuntimeError(f"cream label formed no pairs from {summary.responses} responses")
    return out / "preferences"


def dpo_config(ctx: Check, size: str, reference: str, name: str):
    from cream_train.config import DPOTrainConfig

    return DPOTrainConfig(data=str(ctx.need(f"prefs_{size}")), model=str(ctx.need(f"{size}_dir")),
                          out=str(ctx.work / f"model-{name}"), reference=reference, max_steps=ctx.args.steps,
                          batch_size=ctx.args.batch_size, lr=LR, logging_steps=ctx.args.steps, warmup_ratio=0.0,
                          beta=BETA, lora=size == "large", dtype=ctx.dtype)


def step_timer(cuda: bool):
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


def dpo_variant(ctx: Check, size: str, reference: str) -> Row:
    """``--steps`` optimizer steps of cream's DPO trainer with one reference: median step time (the first step is
    warm-up) and peak memory (trainer built inside the measured block). The stored variant of the full fine-tuning
    also keeps the starting weights (on the host) for the mixed-precision row."""
    import torch

    from cream_train.train import build_dpo_trainer, prepare_dpo

    name = f"dpo_{size}_{reference}"
    cfg = dpo_config(ctx, size, reference, name)
    data = prepare_dpo(cfg)
    timer = step_timer(ctx.cuda)
    with PeakMemory(ctx.cuda) as mem:
        trainer = build_dpo_trainer(cfg, data, ctx.work / f"trainer-{name}")
        trainer.add_callback(timer)
        start = ({n: p.detach().to("cpu", copy=True) for n, p in trainer.model.named_parameters()}
                 if size == "small" and reference == "stored" else None)
        trainer.train()
        info = {"reference_model_loaded": trainer.ref_model is not None, "dtype": str(trainer.model.dtype),
                "lora": cfg.lora, "reference_forward_batches": getattr(trainer, "reference_forwards", None)}
    if start is not None:
        ctx.state["moved"] = weights_moved(trainer.model, start)
    del trainer
    torch.cuda.empty_cache() if ctx.cuda else None
    steady = timer.times[1:] if len(timer.times) >= 3 else timer.times
    med = statistics.median(steady)
    v = {"reference": reference, "steps": len(timer.times), "median_step_s": med, "step_times": timer.times,
         "peak_memory_gib": mem.gib, "memory_kind": mem.kind, "pairs": len(data.weights),
         "batch_size": ctx.args.batch_size, **info}
    ctx.state[name] = v
    result = f"{med:.3f} s/step, peak {mem.gib:.2f} GiB ({mem.kind})"
    other = ctx.state.get(f"dpo_{size}_stored")
    if reference == "computed" and other:
        v["stored_speedup"] = med / other["median_step_s"]
        v["stored_saves_gib"] = mem.gib - other["peak_memory_gib"]
        result += f"; stored is {v['stored_speedup']:.2f}x faster and {v['stored_saves_gib']:.2f} GiB smaller"
    return Row(name, result=result, values=v)


def weights_moved(model, start: dict) -> dict:
    """Fraction of weights that differ from the start, overall and outside the embedding (whose rows of tokens
    never seen get no gradient)."""
    import torch

    embedding = {n for n, p in model.named_parameters() if p is model.get_input_embeddings().weight}
    moved = {"all": [0, 0], "non_embedding": [0, 0]}
    with torch.no_grad():
        for n, p in model.named_parameters():
            changed = int((p.detach().to("cpu") != start[n].to(p.dtype)).sum())
            for key in ("all",) + (() if n in embedding else ("non_embedding",)):
                moved[key][0] += changed
                moved[key][1] += p.numel()
    out = {f"moved_{k}": c / max(total, 1) for k, (c, total) in moved.items()}
    out["master_dtype"] = str(next(model.parameters()).dtype)
    return out


def mixed_precision(ctx: Check) -> Row:
    v = dict(ctx.need("moved"), steps=ctx.args.steps, lr=LR)
    ok = v["moved_non_embedding"] >= MOVED_MIN
    return Row("mixed_precision", status="ok" if ok else "warn", bound=f">= {MOVED_MIN:.0%} of non-embedding weights",
               result=f"{100 * v['moved_non_embedding']:.2f} % of non-embedding weights moved "
                      f"({100 * v['moved_all']:.2f} % of all; master {v['master_dtype'].replace('torch.', '')})",
               values=v)


# ---------------------------------------------------------------------------------------------- drift
def trl_reference_logps(trainer):
    """TRL's reference log-probs of every pair through the trainer's own batches (``compute_ref_log_probs``)."""
    import torch

    from cream_train.nonfinite import ROW_COLUMN

    n = len(trainer.train_dataset)
    chosen, rejected = np.full(n, np.nan), np.full(n, np.nan)
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            rows = [int(r) for r in batch.pop(ROW_COLUMN)]
            batch.pop("weight")
            c, r = trainer.compute_ref_log_probs(trainer.ref_model, trainer._prepare_inputs(batch))
            chosen[rows], rejected[rows] = c.double().cpu().numpy(), r.double().cpu().numpy()
    if np.isnan(chosen).any() or np.isnan(rejected).any():
        raise RuntimeError("TRL's train dataloader left pairs unscored")
    return chosen, rejected


def reference_drift(ctx: Check) -> Row:
    """The labeler's stored log-probs vs the trainer's computed reference of the same model on the same pairs.
    h = (logp_c - ref_c) - (logp_r - ref_r); Δh = h(stored) - h(computed) moves each pair's loss by at most β|Δh|.
    fp32: the two agree to summation order (max |Δ logp| < 1e-3). bf16: the two paths run other kernels on other
    batch shapes, so per-pair Δh is rounding noise (β·sd a few hundredths); what would matter is a *bias*: the mean
    Δh many standard errors from 0 (t beyond 4), as plain-bf16 labeling had (bench/bf16_reference.py)."""
    from cream_train.train import build_dpo_trainer, prepare_dpo

    cfg = dpo_config(ctx, "small", "computed", "drift")
    data = prepare_dpo(cfg)
    trainer = build_dpo_trainer(cfg, data, ctx.work / "trainer-drift")
    trl_c, trl_r = trl_reference_logps(trainer)
    model_dtype = str(trainer.model.dtype)
    del trainer
    stored_c = data.table.column("chosen_logp").to_numpy().astype(np.float64)
    stored_r = data.table.column("rejected_logp").to_numpy().astype(np.float64)
    d = np.concatenate([stored_c - trl_c, stored_r - trl_r])
    dh = -((stored_c - trl_c) - (stored_r - trl_r))
    sd = float(dh.std(ddof=1)) if len(dh) > 1 else 0.0
    t = float(dh.mean() / (sd / math.sqrt(len(dh)))) if sd > 0 else 0.0
    v = {"pairs": len(dh), "max_abs_dlogp": float(np.abs(d).max()), "beta": BETA,
         "beta_max_abs_dh": float(BETA * np.abs(dh).max()), "mean_dh": float(dh.mean()), "sd_dh": sd, "t_mean_dh": t,
         "stage_dtype": ctx.dtype, "master_dtype": model_dtype, "label_seconds": ctx.state.get("label_small_seconds")}
    if ctx.dtype == "fp32":
        ok, bound = v["max_abs_dlogp"] < FP32_MAX_DLOGP, f"fp32: max abs dlogp < {FP32_MAX_DLOGP:g}"
    else:
        ok, bound = abs(t) < BIAS_T, f"bf16: no bias, abs(t of mean dh) < {BIAS_T:g}"
    return Row("reference_drift", status="ok" if ok else "warn", bound=bound, values=v,
               result=f"max abs dlogp {v['max_abs_dlogp']:.2e}; beta*max abs dh {v['beta_max_abs_dh']:.3f}, mean dh "
                      f"{v['mean_dh']:+.4f} (t {t:+.1f}) over {len(dh)} pairs")


# ---------------------------------------------------------------------------------------------- vLLM
def vllm_missing(ctx: Check) -> str | None:
    import importlib.util

    why = [w for w, bad in (("vllm not importable", importlib.util.find_spec("vllm") is None),
                            ("no CUDA", not ctx.cuda)) if bad]
    return " / ".join(why) or None


def vllm_rows(ctx: Check) -> list[Row]:
    """vLLM sampling tok/s on the sampling row's prompts, and vLLM's scores of the labeling items vs HFScorer's."""
    from cream_data.engines.base import GenerationParams
    from cream_data.engines.vllm_engine import VllmSampler, VllmScorer, load_llm

    from cream_data.engines import models

    llm = load_llm(models.resolve(str(ctx.need("small_dir"))), seed=0, dtype=ctx.dtype, gpu_memory_utilization=0.5)
    convs = ctx.need("prompts").slice(0, ctx.args.prompts).column("prompt").to_pylist()
    seeds = list(range(len(convs)))
    params = GenerationParams(0.8, 0.95, ctx.args.max_new_tokens)
    seconds, outs = median_timed(lambda: VllmSampler(llm).generate(convs, seeds, ctx.args.n, params), 1, sync(ctx))
    tokens = sum(g.n_tokens for gens in outs for g in gens)
    rows = [Row("sample_vllm", result=f"{tokens / seconds:,.0f} tok/s ({tokens} tokens)",
                values={"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds})]
    items, hf = ctx.need("hf_label_scores")
    d = np.abs(VllmScorer(llm).score(items) - hf)
    rows.append(Row("score_vllm_vs_hf", result=f"max abs dlogp {d.max():.2e} (mean {d.mean():.2e})",
                    values={"max_abs_dlogp": float(d.max()), "mean_abs_dlogp": float(d.mean())}))
    return rows
