"""Reward-model scoring benchmark, in one run on this machine.

Our RM scorer (identical conversations once, length-sorted batches under a token budget, right padding) vs a naive
loop (one unpadded forward per response, in input order): same random LlamaForSequenceClassification (num_labels
= 1, SmolLM2's tokenizer), same GSM8K prompts and solutions as responses (bench/label.py's data), same process.
Prints conversations/s and tokens/s of each (median of repeats), the ratio, and the largest reward difference
(must be <= 1e-4).

    .venv/bin/python bench/rm.py [--size tiny|small] [--prompts 12] [--n 4] [--repeats 3] [--batch-size 16]

--size tiny: 2 layers, hidden 64 (the test model); small: SmolLM2-135M's shape (30 layers, hidden 576), random.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"tiny": {"layers": 2, "hidden": 64}, "small": {"layers": 30, "hidden": 576}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=tuple(SIZES), default="tiny")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-chars", type=int, default=1200, help="cap on response length (characters)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    from bench.label import gsm8k_texts, synthetic_pairs
    from cream_data.engines import models, rm_score
    from tests.support.models import make_tiny_model, naive_rewards

    with tempfile.TemporaryDirectory() as tmp:
        ref = models.resolve(str(make_tiny_model(Path(tmp) / "rm", seed=0, num_labels=1, **SIZES[args.size])))
        tok = rm_score.check(ref)
        model = rm_score.load(ref)
    prompt_texts, pool = gsm8k_texts(args.prompts, 0)
    prompts, responses = synthetic_pairs(prompt_texts, pool, args.n, args.max_chars)
    lengths = [len(x) for x in rm_score.tokenize(tok, prompts, responses).ids]
    n_tokens = int(sum(lengths))
    print(f"reward model: random {args.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"fp32 CPU); {len(responses)} conversations ({args.prompts} prompts x N={args.n}), {n_tokens} tokens "
          f"({min(lengths)}-{max(lengths)} per conversation)")

    def ours():
        tk = rm_score.tokenize(tok, prompts, responses)  # tokenisation is part of the cost
        return rm_score.RMScorer(model, tok.pad_token_id, batch_size=args.batch_size).score(tk)[tk.inverse]

    def naive():
        return naive_rewards(model, tok, prompts, responses)

    fns = (("ours", ours), ("naive", naive))
    from bench.timing import time_rotated

    times, vals = time_rotated(list(fns), args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = float(np.max(np.abs(vals["ours"] - vals["naive"])))
    for name in times:
        print(f"{name:5s} {len(responses) / med[name]:8.1f} conv/s {n_tokens / med[name]:9.0f} tok/s  "
              f"(median {med[name]:.2f}s of {args.repeats})")
    print(f"ratio ours/naive = {med['naive'] / med['ours']:.2f}x; max |reward diff| = {diff:.2e} (limit 1e-4)")
    assert diff <= 1e-4, "rewards differ"


if __name__ == "__main__":
    main()
