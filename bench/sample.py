"""Sampling benchmark, in one run on this machine: the hf engine's decode loop vs ``model.generate`` (the path before
it), at the demo's sampling settings.

Both paths run ``HfSampler.generate`` as ``cream sample`` calls it — prompts sorted by length into batches of
``--batch-size``, each batch left-padded and expanded to batch x N rows — on one loaded model: the fast path with our
decode loop (cream_data/engines/decode.py: one prefill per batch, exact top-p from a top-k prefilter, ended rows
dropped, a reserved KV cache), the baseline with ``model.generate`` (temperature, top-p by a full sort). Prompts:
GSM8K test questions (read by path from ../shared/data), ~100 tokens templated. Prints each repeat, then the medians
(the paths interleaved, their order rotated, so machine noise hits both): generated tokens/s, ms per decode step,
the percentage of the compute bound (bench/generation.py) and the ratio; then where the fast path's time goes (its
CPU time by operator kind, the linear layers alone at the batch's rows, and one product's rate by row count).

    .venv/bin/python bench/sample.py [--model smollm2-135m-instruct] [--prompts 8] [--n 4] [--max-new-tokens 64]
                                     [--temperature 0.8] [--top-p 0.95] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generation import (StepCounter, engines, gflop_per_token, matmul_gflops, report,  # noqa: E402
                              run_interleaved, where_time_goes)


def gsm8k_prompts(k: int) -> list[list[dict]]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
    with open(path) as f:
        rows = [json.loads(line) for _, line in zip(range(k), f)]
    return [[{"role": "user", "content": r["question"]}] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per batch (the demo's 12 covers all 8)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cream_data.engines import models
    from cream_data.engines.base import GenerationParams, plan_batches, prompt_seed

    model, tok, ref = models.load(args.model, dtype="fp32")
    fast, baseline = engines(model, tok)
    convs = gsm8k_prompts(args.prompts)
    ids = [f"q{i}" for i in range(len(convs))]
    lengths = fast.prompt_lengths(convs)
    params = GenerationParams(args.temperature, args.top_p, args.max_new_tokens)
    batches = plan_batches(ids, lengths, args.batch_size)

    def path(engine):
        def run() -> tuple[int, int]:
            counted, tokens = StepCounter(engine), 0
            for b in batches:
                outs = counted.generate([convs[r] for r in b], [prompt_seed(0, ids[r]) for r in b], args.n, params)
                tokens += sum(g.n_tokens for o in outs for g in o)
            return tokens, counted.steps
        return run

    warm = GenerationParams(args.temperature, args.top_p, 4)
    for engine in (fast, baseline):
        engine.generate(convs[:1], [0], 1, warm)
    timings = run_interleaved([("decode loop", path(fast)), ("model.generate", path(baseline))], args.repeats)
    mean_generated = sum(timings[0].tokens) / len(timings[0].tokens) / (len(convs) * args.n)
    per_token = gflop_per_token(model, sum(lengths) / len(lengths) + mean_generated / 2)
    gflops = matmul_gflops()
    print(f"model {ref.name}, {len(convs)} prompts x N={args.n} (templated {min(lengths)}-{max(lengths)} tokens), "
          f"<= {args.max_new_tokens} new tokens, T={args.temperature}, top-p={args.top_p}, batch {args.batch_size} "
          f"prompts, fp32, {torch.get_num_threads()} threads, device {fast.device}")
    report(timings, gflops / per_token, gflops, per_token)
    where_time_goes(timings[0], path(fast), model, args.prompts * args.n, gflops / per_token, gflops)


if __name__ == "__main__":
    main()
