"""What bench/sample.py and bench/eval_gen.py share: the two engines on one loaded model, the compute bound, and the
lines they print.

The compute bound of a decode on this machine: ``bound tok/s = matmul GFLOP/s ÷ GFLOP per token``, where

- matmul GFLOP/s is measured here, in the same process and thread count: the best of a few fp32 GEMMs of
  1024 x 1024 x 1024 (``2·1024³`` FLOPs each);
- GFLOP per token = ``2 × P + 4 × L × H × d × c``: ``P`` the parameters a token's forward multiplies by — every
  parameter but the input embedding, the LM head included (tied or not, it is a ``hidden × vocab`` matmul per
  token) — and the attention's two products (``QKᵀ`` and ``AV``, ``L`` layers, ``H`` query heads of size ``d``)
  over the mean context ``c`` of the generated tokens (mean prompt length + half the mean generated length).

The percentage is the path's generated tokens/s over that bound: prefill, padding, sampling and every per-step cost
count against it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


def matmul_gflops(repeats: int = 5, size: int = 1024) -> float:
    """The best fp32 GEMM rate (GFLOP/s) of ``repeats`` tries at the current thread count."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def gflop_per_token(model, context: float) -> float:
    """FLOPs of one generated token at mean context ``context``, in GFLOP (see the module docstring)."""
    config = model.config.get_text_config(decoder=True)
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    if head is model.get_input_embeddings().weight:  # tied: the head's matmul is not in the count yet
        params += head.numel()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * context
    return (2 * params + attention) / 1e9


def engines(model, tokenizer):
    """``(fast, baseline)``: the hf engine with our decode loop, and the same engine on ``model.generate`` (the path
    before the decode loop), sharing one loaded model."""
    from cream_data.engines.hf_sample import HfSampler

    fast, baseline = HfSampler(model, tokenizer), HfSampler(model, tokenizer)
    assert fast.uses_loop, "the decode loop does not support this model"
    baseline.uses_loop = False
    return fast, baseline


class StepCounter:
    """An engine that counts decode steps: per ``generate`` call, the longest row's tokens."""

    def __init__(self, engine):
        self.engine, self.steps = engine, 0

    def prompt_lengths(self, prompts):
        return self.engine.prompt_lengths(prompts)

    def generate(self, prompts, seeds, n, params):
        out = self.engine.generate(prompts, seeds, n, params)
        self.steps += max(g.n_tokens for outs in out for g in outs)
        return out


@dataclass
class Timing:
    """One path's repeats: generated tokens, decode steps (the longest row of each batch) and seconds each."""

    name: str
    tokens: list[int]
    steps: list[int]
    seconds: list[float]

    def tok_s(self) -> float:
        return statistics.median(t / s for t, s in zip(self.tokens, self.seconds))

    def ms_step(self) -> float:
        return statistics.median(1000 * s / n for n, s in zip(self.steps, self.seconds))


def run_interleaved(paths, repeats: int) -> list[Timing]:
    """Each ``(name, fn)`` ``repeats`` times, the order rotated every round (machine noise hits all paths);
    ``fn()`` returns ``(tokens, steps)``."""
    timings = [Timing(name, [], [], []) for name, _ in paths]
    for r in range(repeats):
        k = r % len(paths)
        for i in list(range(k, len(paths))) + list(range(k)):
            t0 = time.perf_counter()
            tokens, steps = paths[i][1]()
            seconds = time.perf_counter() - t0
            t = timings[i]
            t.tokens.append(tokens), t.steps.append(steps), t.seconds.append(seconds)
            print(f"repeat {r}: {t.name}: {tokens} tokens, {steps} steps in {seconds:.1f}s = {tokens / seconds:.1f} "
                  f"tok/s", flush=True)
    return timings


def report(timings: list[Timing], bound_tok_s: float, gflops: float, per_token: float) -> None:
    """The table of medians, the percentage of the bound and the fast path's ratio over the baseline."""
    print(f"compute bound: {gflops:.1f} GFLOP/s (fp32 GEMM, this process) / {per_token:.3f} GFLOP per token = "
          f"{bound_tok_s:.0f} tok/s")
    print("| path | tok/s | ms/step | % of bound |\n| --- | --- | --- | --- |")
    for t in timings:
        print(f"| {t.name} | {t.tok_s():.1f} | {t.ms_step():.0f} | {100 * t.tok_s() / bound_tok_s:.0f} % |")
    fast, base = timings[0], timings[-1]
    print(f"ratio {fast.name} / {base.name}: {fast.tok_s() / base.tok_s():.2f}x (medians of {len(fast.tokens)})")


def linear_rate(model, rows: int, repeats: int = 9) -> tuple[float, float]:
    """``(ms, GFLOP/s)``: one pass of every ``nn.Linear`` of ``model`` (the LM head included) over ``rows`` rows
    alone — the matrix products of one decode step of ``rows`` running rows, nothing else — median of ``repeats``."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {n: torch.randn(rows, n) for n in {m.in_features for m in linears}}
    flops = 2 * rows * sum(m.weight.numel() for m in linears)

    def one_pass():
        for m in linears:
            torch.nn.functional.linear(inputs[m.in_features], m.weight)

    with torch.inference_mode():
        one_pass()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            one_pass()
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    return ms, flops / (ms / 1e3) / 1e9


def product_rates(n_in: int, n_out: int, rows: tuple[int, ...], weights: int = 64) -> dict[int, float]:
    """GFLOP/s of an ``[r, n_in] x [n_in, n_out]`` fp32 product at each ``r`` of ``rows``: ``weights`` different weight
    matrices in turn (so none is reused from the cache, as in a forward pass), median of 5 passes."""
    import torch

    mats = [torch.randn(n_out, n_in) for _ in range(weights)]
    rates = {}
    with torch.inference_mode():
        for r in rows:
            x = torch.randn(r, n_in)
            torch.nn.functional.linear(x, mats[0])
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for w in mats:
                    torch.nn.functional.linear(x, w)
                times.append((time.perf_counter() - t0) / weights)
            rates[r] = 2 * r * n_in * n_out / statistics.median(times) / 1e9
    return rates


def op_shares(fn) -> dict[str, float]:
    """Shares of ``fn()``'s CPU time by operator kind, from torch's profiler: matrix products (``aten::mm``,
    ``addmm``, ``bmm``), attention (``scaled_dot_product_*``) and everything else."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    kinds = {"matrix products": 0.0, "attention": 0.0, "everything else": 0.0}
    for e in prof.key_averages():
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            kinds["matrix products"] += e.self_cpu_time_total
        elif "scaled_dot_product" in e.key or "flash_attention" in e.key:
            kinds["attention"] += e.self_cpu_time_total
        else:
            kinds["everything else"] += e.self_cpu_time_total
    total = sum(kinds.values()) or 1.0
    return {k: v / total for k, v in kinds.items()}


def where_time_goes(fast: Timing, fast_run, model, rows: int, bound_tok_s: float, gflops: float) -> None:
    """What caps the fast path: its CPU time by operator kind (one more run, profiled); the ceiling if every operator
    but the matrix products cost nothing (its % of the bound ÷ the products' share); the model's linear layers
    alone over ``rows`` rows against the GEMM rate of the bound; and one hidden x intermediate product's rate at
    ``rows``, 2 and 4 times as many, and 1024 rows (:func:`product_rates`)."""
    shares = op_shares(fast_run)
    ms, rate = linear_rate(model, rows)
    pct = 100 * fast.tok_s() / bound_tok_s
    print("where the fast path's time goes (torch profiler, one run): "
          + ", ".join(f"{k} {100 * v:.0f} %" for k, v in shares.items())
          + f"; with only its matrix products left it would reach {pct / shares['matrix products']:.0f} % of the bound")
    print(f"the linear layers alone at {rows} rows: {ms:.1f} ms per step, {rate:.0f} GFLOP/s "
          f"({100 * rate / gflops:.0f} % of the bound's {gflops:.0f} GFLOP/s GEMM rate); alone they would make "
          f"{rows / (ms / 1e3):.0f} tok/s = {100 * rows / (ms / 1e3) / bound_tok_s:.0f} % of the bound")
    config = model.config.get_text_config(decoder=True)
    sweep = product_rates(config.hidden_size, config.intermediate_size, (rows, 2 * rows, 4 * rows, 1024))
    print(f"one {config.hidden_size} x {config.intermediate_size} product (the MLP's up projection) by rows: "
          + ", ".join(f"{r} rows {g:.0f} GFLOP/s" for r, g in sweep.items()))
