"""Ranks + consistency + pairs: the vectorised path vs a per-prompt scipy loop, side by side in one run.

    python bench/label_pairs.py [--prompts 1000000] [--n 8] [--loop-prompts 20000] [--repeats 3]

(a) core maths on [P, N] reward matrices: ``select_pairs`` (ordinal ranks of both reward vectors, Kendall
    tau, C = (tau+1)/2, chosen = rank 1, rejected = rank N) over all P prompts, against the obvious loop
    (``rankdata(-r, "ordinal")`` twice + ``kendalltau`` + argmin/argmax per prompt). The loop is timed on
    ``--loop-prompts`` prompts and its per-prompt cost extrapolated to P (it is linear in P); both paths
    must give identical values on that subset.
(b) end to end from Arrow tables: ``build_preferences`` (sort, join the scores, group by N, skip reasons,
    the preferences table, validated) on ``--table-prompts`` prompts, for scale.

Medians over ``--repeats`` runs, timed untraced; peak memory by tracemalloc in one separate run of each
(numpy and pyarrow buffers are traced; the inputs, allocated before, are not counted).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy import stats  # noqa: E402

from cream_data.rewards.pairing import build_preferences  # noqa: E402
from cream_data.rewards.ranking import select_pairs  # noqa: E402


def make_rewards(p: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random current/previous rewards with some ties: 2-decimal rounding, and 10% small-integer rows."""
    rng = np.random.default_rng(seed)
    cur = np.round(rng.normal(size=(p, n)), 2)
    prev = 0.6 * cur + 0.4 * rng.normal(size=(p, n))  # correlated, like consecutive iterations
    tied = rng.random(p) < 0.1
    cur[tied] = rng.integers(0, 3, size=(int(tied.sum()), n))
    return cur, np.round(prev, 2)


def scipy_loop(cur: np.ndarray, prev: np.ndarray):
    """The per-prompt baseline: what a straightforward implementation does for each prompt."""
    p, n = cur.shape
    ranks = np.empty((p, n), np.int16)
    prev_ranks = np.empty((p, n), np.int16)
    chosen = np.empty(p, np.int64)
    rejected = np.empty(p, np.int64)
    c = np.empty(p)
    tau = np.empty(p)
    for i in range(p):
        r = stats.rankdata(-cur[i], method="ordinal")
        pr = stats.rankdata(-prev[i], method="ordinal")
        t = stats.kendalltau(r, pr).statistic
        ranks[i], prev_ranks[i], tau[i], c[i] = r, pr, t, (t + 1) / 2
        chosen[i], rejected[i] = int(np.argmin(r)), int(np.argmax(r))
    return ranks, prev_ranks, chosen, rejected, c, tau


def timed(fn, repeats: int):
    """(median seconds, last result). No tracing while timing: tracemalloc slows Python-level loops ~5x."""
    times, out = [], None
    for _ in range(repeats):
        out = None
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def peak_bytes(fn) -> int:
    """Peak memory traced by tracemalloc (numpy and pyarrow buffers included) during one separate run."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def make_tables(cur: np.ndarray, prev: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """Minimal responses/scores tables (the columns build_preferences reads) for P prompts x N responses."""
    p, n = cur.shape
    pid = pa.array([f"p{i:07d}" for i in range(p)]).take(pa.array(np.repeat(np.arange(p), n)))
    idx = pa.array(np.tile(np.arange(n), p), pa.int16())
    turn = pa.StructArray.from_arrays([pa.array(["user"]), pa.array(["a question"])], names=["role", "content"])
    prompt = pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), turn).take(pa.array(np.zeros(p * n, np.int64)))
    responses = pa.table({"prompt_id": pid, "prompt": prompt, "response_idx": idx,
                          "response": pa.array(np.char.add("response ", np.tile(np.arange(n), p).astype(str)).tolist()),
                          "iteration": pa.array(np.ones(p * n, np.int32))})

    def scorer(name, model, ref, rewards):
        k = p * n
        return pa.table({"prompt_id": pid, "response_idx": idx, "scorer": pa.array([name] * k),
                         "model": pa.array([model] * k), "ref_model": pa.array([ref] * k),
                         "logp": pa.array(-rewards.ravel() - 50), "n_tokens": pa.array(np.full(k, 40, np.int32)),
                         "reward": pa.array(rewards.ravel())})

    return responses, pa.concat_tables([scorer("current", "M2", "M1", cur), scorer("previous", "M1", "M0", prev)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--loop-prompts", type=int, default=20_000)
    ap.add_argument("--table-prompts", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    cur, prev = make_rewards(args.prompts, args.n, seed=0)
    ties = int((np.diff(np.sort(cur, axis=1), axis=1) == 0).any(axis=1).sum())
    print(f"[setup] {args.prompts:,} prompts x N={args.n}; {ties:,} prompts with tied current rewards")

    fast_s, fast = timed(lambda: select_pairs(cur, prev, "kendall"), args.repeats)
    fast_peak = peak_bytes(lambda: select_pairs(cur, prev, "kendall"))
    k = min(args.loop_prompts, args.prompts)
    loop_s, loop = timed(lambda: scipy_loop(cur[:k], prev[:k]), args.repeats)
    loop_peak = peak_bytes(lambda: scipy_loop(cur[:k], prev[:k]))

    # Identical values on the subset the loop covered.
    names = ("ranks", "prev_ranks", "chosen", "rejected", "consistency", "kendall_tau")
    max_diff = 0.0
    for name, a, b in zip(names, fast, loop):
        a = a[:k]
        if a.dtype.kind == "f":
            max_diff = max(max_diff, float(np.abs(a - b).max()))
            assert np.allclose(a, b, rtol=0, atol=1e-12), name
        else:
            assert np.array_equal(a, b), name
    per_prompt = loop_s / k
    loop_full = per_prompt * args.prompts
    print(f"[check] vectorised == scipy loop on the first {k:,} prompts: ranks, prev_ranks, chosen, rejected "
          f"identical; tau and C max |diff| = {max_diff:.1e}")
    print(f"[a] vectorised select_pairs, {args.prompts:,} prompts: median {fast_s:.3f} s "
          f"({args.prompts / fast_s / 1e6:.2f} M prompts/s), peak {fast_peak / 2**20:.0f} MiB traced")
    print(f"[a] scipy loop, timed on {k:,} prompts: median {loop_s:.2f} s = {per_prompt * 1e6:.1f} us/prompt, "
          f"peak {loop_peak / 2**20:.1f} MiB traced (on the subset; O(1) per prompt plus outputs)")
    print(f"[a] scipy loop extrapolated to {args.prompts:,} prompts (linear in P): {loop_full:.1f} s")
    print(f"[a] ratio (loop / vectorised): {loop_full / fast_s:.0f}x  (target >= 50)")

    if args.table_prompts:
        tp = min(args.table_prompts, args.prompts)
        responses, scores = make_tables(cur[:tp], prev[:tp])
        tab_s, (table, summary) = timed(lambda: build_preferences(responses, scores), args.repeats)
        tab_peak = peak_bytes(lambda: build_preferences(responses, scores))
        assert table.num_rows == summary.pairs
        sel = select_pairs(cur[:tp], prev[:tp])
        kept = np.array([int(s[1:]) for s in table["prompt_id"].to_pylist()])
        assert np.array_equal(table["chosen_idx"].to_numpy(), sel.chosen[kept])
        assert np.allclose(table["kendall_tau"].to_numpy(), sel.kendall_tau[kept], rtol=0, atol=0)
        print(f"[b] build_preferences from tables, {tp:,} prompts ({tp * args.n * 2:,} score rows): median "
              f"{tab_s:.2f} s ({tp / tab_s / 1e3:.0f} k prompts/s), peak {tab_peak / 2**20:.0f} MiB traced; "
              f"{summary.pairs:,} pairs, skipped {summary.skipped}; scipy loop for the same prompts ~ "
              f"{per_prompt * tp:.1f} s ({per_prompt * tp / tab_s:.0f}x)")


if __name__ == "__main__":
    main()
