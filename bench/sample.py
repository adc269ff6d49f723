"""Sampling benchmark, in one run on this machine: the batched hf engine vs one prompt at a time.

Fast path: ``HfSampler.generate`` as ``cream sample`` runs it — prompts sorted by length into batches of
``--batch-size``, each batch left-padded and expanded to batch x N sequences, one forward pass per step.
Baseline: ``model.generate`` on a single prompt with ``num_return_sequences=1``, called N times per prompt.
Same model, prompts (GSM8K test questions, read by path from ../shared/data), temperature, top-p and cap.
Prints generated tokens/s of each (median over repeats, the two interleaved so machine noise hits both)
and the ratio.

    .venv/bin/python bench/sample.py [--model smollm2-135m-instruct] [--prompts 8] [--n 4] [--max-new-tokens 64]
                                     [--repeats 3] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per batch of the fast path")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice). On a "
                    "shared, oversubscribed machine 1 thread avoids OpenMP spin-wait stalls")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from cream_data.engines import models
    from cream_data.engines.hf_sample import HfSampler, split_at_stop
    from cream_data.engines.base import GenerationParams, plan_batches, prompt_seed

    model, tok, ref = models.load(args.model)
    engine = HfSampler(model, tok)
    convs = gsm8k_prompts(args.prompts)
    ids = [f"q{i}" for i in range(len(convs))]
    params = GenerationParams(args.temperature, args.top_p, args.max_new_tokens)
    batches = plan_batches(ids, engine.prompt_lengths(convs), args.batch_size)

    def batched() -> tuple[int, float, int]:
        t0, tokens, stops = time.perf_counter(), 0, 0
        for b in batches:
            for outs in engine.generate([convs[r] for r in b], [prompt_seed(0, ids[r]) for r in b], args.n, params):
                tokens += sum(g.n_tokens for g in outs)
                stops += sum(g.finish_reason == "stop" for g in outs)
        return tokens, time.perf_counter() - t0, stops

    def one_at_a_time() -> tuple[int, float, int]:
        config = engine._generation_config(1, params)  # identical sampling settings, one sequence per call
        t0, tokens, stops = time.perf_counter(), 0, 0
        with torch.inference_mode():
            for ids_ in engine.encode(convs):
                x = torch.tensor([ids_], device=engine.device)
                for _ in range(args.n):
                    row = model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                         generation_config=config)[0, x.shape[1]:].tolist()
                    _, reason, n_tok = split_at_stop(row, engine.stop_token_ids)
                    tokens += n_tok
                    stops += reason == "stop"
        return tokens, time.perf_counter() - t0, stops

    torch.manual_seed(0)
    engine.generate(convs[:1], [0], 1, GenerationParams(args.temperature, args.top_p, 4))  # warm-up
    fast, base = [], []
    for rep in range(args.repeats):
        b_tok, b_s, b_stop = one_at_a_time()
        f_tok, f_s, f_stop = batched()
        base.append(b_tok / b_s)
        fast.append(f_tok / f_s)
        print(f"repeat {rep}: batched {f_tok} tokens in {f_s:.1f}s ({f_stop} stopped) = {fast[-1]:.1f} tok/s | "
              f"one-at-a-time {b_tok} tokens in {b_s:.1f}s ({b_stop} stopped) = {base[-1]:.1f} tok/s", flush=True)
    mf, mb = statistics.median(fast), statistics.median(base)
    print(f"model {ref.name}, {len(convs)} prompts x N={args.n}, {args.max_new_tokens} new tokens max, "
          f"T={args.temperature}, top-p={args.top_p}, batch {args.batch_size} prompts, "
          f"{torch.get_num_threads()} threads, device {engine.device}")
    print(f"generated tokens/s (median of {args.repeats}): batched hf engine {mf:.1f}, one prompt at a time {mb:.1f}, "
          f"ratio {mf / mb:.2f}x")


if __name__ == "__main__":
    main()
