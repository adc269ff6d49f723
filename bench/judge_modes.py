"""SRLM judge on a real small model: how many responses get a usable judge reward, `parse` vs `expected`.

Samples N responses to GSM8K train questions (with the evaluation's answer suffix) from the embedded
SmolLM2-135M-Instruct, then labels them with `--reward judge --judge-mode expected`. The judge's generation is
greedy and the same in both modes (the modes differ only after it), so the `parse` numbers are the parser applied
to the same judge texts (the appended cue removed) and the pairs those scores would give.

    .venv/bin/python bench/judge_modes.py [--prompts 24] [--n 4] [--judge-max-new-tokens 256] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUFFIX = "Answer the question by thinking step by step. At the end, output the final answer, starting with 'Answer:'."


def main() -> None:
    from cream_data.tables import io
    from cream_data.rewards.judge import APPENDED_MARK, parse_judge_score
    from cream_data.stages.label import LabelConfig, label
    from cream_data.rewards.pairing import build_preferences
    from cream_data.rewards.spec import PairingSpec
    from cream_data.inputs.prompts import load_prompts
    from cream_data.stages.sample import SampleConfig, sample

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128, help="response length")
    ap.add_argument("--judge-max-new-tokens", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="judge-modes-"))
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"

    t0 = time.time()
    prompts = load_prompts(str(data), layout="gsm8k", limit=args.prompts, suffix=SUFFIX)
    if not (out / "responses").exists():
        sample(prompts, SampleConfig(model=args.model, n=args.n, seed=0, max_new_tokens=args.max_new_tokens,
                                     batch_size=8, iteration=1), out / "responses")
    t_sample = time.time() - t0
    s = label(out / "responses", LabelConfig(model=args.model, reward="judge", batch_size=8,
                                             judge_max_new_tokens=args.judge_max_new_tokens), out / "label")
    t_label = time.time() - t0 - t_sample

    scores = io.read_table(out / "label" / "scores", "scores")
    judge = scores.filter(pc.equal(scores["scorer"], "judge"))
    texts = judge["judge_text"].to_pylist()
    appended = np.array([t.endswith(APPENDED_MARK) for t in texts])
    raw = [t[: -len(APPENDED_MARK)] if a else t for t, a in zip(texts, appended)]
    parsed = [parse_judge_score(t) for t in raw]
    expected = np.array(judge["reward"].to_pylist(), dtype=float)
    confidence = np.array(judge["confidence"].to_pylist(), dtype=float)
    parse_scores = judge.set_column(judge.column_names.index("reward"), "reward", pa.array(parsed, pa.float64()))
    responses = io.read_table(out / "responses", "responses")
    _, parse_pairing = build_preferences(responses, parse_scores, PairingSpec(reward_scorer="judge", partner=None))
    n = len(texts)
    ok = [p is not None for p in parsed]
    result = {
        "model": args.model, "prompts": args.prompts, "n": args.n, "responses": n,
        "judge_max_new_tokens": args.judge_max_new_tokens,
        "parse": {"finite_share": sum(ok) / n, "finite": sum(ok), "pairs": parse_pairing.pairs,
                  "skipped": parse_pairing.skipped, "responses_dropped": parse_pairing.responses_dropped},
        "expected": {"finite_share": float(np.isfinite(expected).mean()), "finite": int(np.isfinite(expected).sum()),
                     "pairs": s.pairing.pairs, "skipped": s.pairing.skipped,
                     "cue_found": int((~appended).sum()), "cue_appended": int(appended.sum()),
                     "confidence_median": float(np.median(confidence)),
                     "confidence_found_median": float(np.median(confidence[~appended])) if (~appended).any() else None,
                     "confidence_appended_median": float(np.median(confidence[appended])) if appended.any() else None,
                     "reward_mean": float(expected.mean()), "reward_std": float(expected.std())},
        "parsed_vs_expected": [(p, round(float(e), 3)) for p, e in zip(parsed, expected) if p is not None],
        "seconds": {"sample": round(t_sample, 1), "label": round(t_label, 1)},
        "out": str(out),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
