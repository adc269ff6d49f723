"""The SRLM judge on the study's iteration 1: `parse` vs `expected`, and how well the judge separates right from wrong.

Runs the first stages of `make study`'s srlm run (examples/study/study.yaml, method srlm) — the prompt split, M1 =
SFT(M0) and iteration 1's sampling (48 prompts × 4 responses by M1) — then its label stage with the expected-score
judge (M1 judges, ≤ 80 tokens, as in the study). The judge's generation is greedy and the same in both modes (they
differ only after it), so the `parse` figures are the parser applied to the same judge texts (the appended cue
removed). Correctness of each response is the oracle (the prompt's hidden reference answer).

Prints, per mode: the share of responses with a finite judge reward, the pairs iteration 1 would form, and the
judge's AUC for correct vs wrong responses (Mann–Whitney, ties 1/2, pooled over responses) with a 95 % interval
from a bootstrap over prompts; the expected mode's AUC is also computed by cream_data.rewards.agreement as a cross-check.

    .venv/bin/python bench/judge_study.py [--out DIR] [--model m1|m0]   # ~1-2 h on a 2-core CPU; stages resume
    .venv/bin/python bench/judge_study.py --out runs/study/srlm          # reads `make study`'s srlm run, once its
                                                                          # iteration 1 is labeled
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def auc_with_interval(rewards: np.ndarray, correct: np.ndarray, prompt: np.ndarray, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """AUC (Mann–Whitney U / (n1 n0), ties 1/2) over the finite rewards, with a percentile bootstrap over prompts."""
    from scipy.stats import mannwhitneyu

    ok = np.isfinite(rewards)
    r, c, p = rewards[ok], correct[ok].astype(bool), prompt[ok]
    if c.all() or not c.any():
        return {"auc": None, "n_correct": int(c.sum()), "n_wrong": int((~c).sum())}
    auc = float(mannwhitneyu(r[c], r[~c]).statistic / (c.sum() * (~c).sum()))
    ids = np.unique(p)
    rows = {k: np.flatnonzero(p == k) for k in ids}
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        take = np.concatenate([rows[k] for k in rng.choice(ids, size=len(ids))])
        cb, rb = c[take], r[take]
        if cb.all() or not cb.any():
            continue
        boot.append(mannwhitneyu(rb[cb], rb[~cb]).statistic / (cb.sum() * (~cb).sum()))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"auc": auc, "ci95": [float(lo), float(hi)], "n_correct": int(c.sum()), "n_wrong": int((~c).sum())}


def _iteration_1_done(cfg, table) -> bool:
    """Whether the run's stages up to iteration 1's labels are done with these inputs (`cream run --plan`'s statuses):
    then the study reads them and writes nothing — safe while `make study` is still running later stages there."""
    from cream_train.run.plan import plan_run

    status = {s.name: s.status for s in plan_run(cfg, table)}
    return all(status.get(n) == "done" for n in ("prompts", "sft-data", "train-M1", "sample-1", "label-1"))


def main() -> None:
    from cream_data.tables import io
    from cream_data.rewards.answers import oracle_reward
    from cream_data.rewards.judge import APPENDED_MARK, parse_judge_score
    from cream_data.rewards.pairing import build_preferences
    from cream_data.rewards.spec import PairingSpec
    from cream_train.run.loop import Loop
    from cream_train.run.config import load_run_config
    from cream_train.run.stage_defs import label, prompts, sample, sft

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "judge-study")
    ap.add_argument("--model", choices=["m1", "m0"], default="m1",
                    help="m1: the study's M1 = SFT(M0) samples and judges (its stages: SFT included); m0: the "
                         "embedded M0 itself does both (no SFT: about half the time on a CPU)")
    args = ap.parse_args()
    t0 = time.time()
    cfg, _, table = load_run_config(ROOT / "examples" / "study" / "study.yaml",
                                    {"method": "srlm", "run_dir": str(args.out.resolve())})
    if args.model == "m1" and _iteration_1_done(cfg, table):
        print(f"{args.out}: iteration 1 of this run is done (fingerprints match); reading it")  # nothing written
    else:
        loop = Loop(cfg, table, print)
        walk = loop.walk  # the run's stages, each one made when the ones before it are decided
        loop.do(prompts(walk))
        if args.model == "m1":
            for stage in sft(walk):
                loop.do(stage)
        else:  # the study's M1 stands in for M0 in every stage that uses it
            walk.model = lambda k, _m=walk.model: cfg.model if k == 1 else _m(k)
            walk.model_fp = lambda k, _f=walk.model_fp: "m0:" + cfg.model if k == 1 else _f(k)
        loop.do(sample(walk, 1))
        loop.do(label(walk, 1))
    it = args.out / "iter-1"
    scores = io.read_table(it / "scores", "scores")
    judge = scores.filter(pc.equal(scores["scorer"], "judge")).sort_by([("prompt_id", "ascending"),
                                                                          ("response_idx", "ascending")])
    responses = io.read_table(it / "responses", "responses").sort_by([("prompt_id", "ascending"),
                                                                      ("response_idx", "ascending")])
    prompts = io.read_table(args.out / "prompts" / "subset-1", "prompts")
    ref = dict(zip(prompts["prompt_id"].to_pylist(), prompts["reference_answer"].to_pylist()))
    oracle = np.array([oracle_reward(r, ref[p]) or 0.0 for p, r in zip(responses["prompt_id"].to_pylist(),
                                                                        responses["response"].to_pylist())])
    texts = judge["judge_text"].to_pylist()
    appended = np.array([t.endswith(APPENDED_MARK) for t in texts])
    parsed = [parse_judge_score(t[: -len(APPENDED_MARK)] if a else t) for t, a in zip(texts, appended)]
    expected = np.array(judge["reward"].to_pylist(), dtype=float)
    parse = np.array([np.nan if v is None else v for v in parsed], dtype=float)
    pid = np.array(judge["prompt_id"].to_pylist())
    parse_scores = judge.set_column(judge.column_names.index("reward"), "reward", pa.array(parsed, pa.float64()))
    _, parse_pairing = build_preferences(responses, parse_scores, PairingSpec(reward_scorer="judge", partner=None))
    label_summary = io.read_manifest(it / "preferences").get("summary") or {}

    oracle_rows = judge.set_column(judge.column_names.index("scorer"), "scorer", pa.array(["oracle"] * len(oracle)))
    oracle_rows = oracle_rows.set_column(oracle_rows.column_names.index("reward"), "reward", pa.array(oracle))
    from cream_data.rewards.agreement import oracle_agreement

    check = oracle_agreement(pa.concat_tables([judge, oracle_rows.cast(judge.schema)]))
    n = len(texts)
    result = {
        "responses": n, "prompts": len(np.unique(pid)), "correct": int(oracle.sum()),
        "judge_max_new_tokens": cfg.label.judge_max_new_tokens,
        "judge_model": "M1 (SFT of M0)" if args.model == "m1" else "M0 (SmolLM2-135M-Instruct, no SFT)",
        "parse": {"finite": int(np.isfinite(parse).sum()), "finite_share": float(np.isfinite(parse).mean()),
                  "pairs": parse_pairing.pairs, "skipped": parse_pairing.skipped,
                  "auc": auc_with_interval(parse, oracle, pid)},
        "expected": {"finite": int(np.isfinite(expected).sum()), "finite_share": float(np.isfinite(expected).mean()),
                     "pairs": label_summary.get("pairs"), "skipped": label_summary.get("skipped"),
                     "cue_found": int((~appended).sum()), "cue_appended": int(appended.sum()),
                     "auc": auc_with_interval(expected, oracle, pid),
                     "agreement_module": check},
        "seconds": round(time.time() - t0, 1), "out": str(args.out),
    }
    print(json.dumps(result, indent=2, default=str))
    (args.out / "judge_study.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
