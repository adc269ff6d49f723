"""The study across training seeds: the seed is the unit of replication when a method has several runs.

``cream inspect RUN…`` over runs of several seeds per method (``seeds.seed`` of each run's manifest) adds this
section to the study (:mod:`cream_data.reports.study`).

**Gain of a run.** ``Avg(M_k)`` is the mean of the task accuracies of model ``M_k`` over every task it was
evaluated on: a task the run evaluated through lm-evaluation-harness counts with the harness's ``acc``
(multiple choice by log-likelihood), any other with Table 1's accuracy (generated answers, as
:func:`cream_data.reports.run_tables.accuracy_rows` computes it); a run without harness tasks has Table 1's Avg. Per run, ``ΔAvg = Avg(M_K) − Avg(M1)``: what the
self-rewarding iterations gained over the SFT model, and ``ΔAvg vs M0 = Avg(M_K) − Avg(M0)``. ``K`` is the last
model *every* seed of the method evaluated (normally M_T of every run), so a method's seeds are compared at the
same model; a gain is None where its two models are not both evaluated (or ``K`` ≤ the base).

**Per method.** Over its seeds: n, the mean and the sample standard deviation (ddof = 1; None for one seed) of
ΔAvg, and the per-seed values.

**Paired comparisons.** Two methods run with the same seed share that seed's split, SFT model M1 and samples of
iteration 1, so they are compared seed by seed: for every two methods with ≥ 2 seeds where both have a ΔAvg,
``d_s = ΔAvg_A(s) − ΔAvg_B(s)`` (A the later method in the report's order; when the two runs of a seed share M1,
as ``--reuse-from`` makes them, this is ``Avg_A(M_K) − Avg_B(M_K)``). Reported: the mean of ``d``, its sample sd,
the 95 % t-interval ``mean ± t_{0.975, n−1} · sd / √n``, the two-sided paired t-test p-value
(``scipy.stats.ttest_rel``; None when every ``d_s`` is the same, where the t statistic is undefined) and the sign
count (in how many seeds A > B, A < B).

Read these with care: with 3 seeds the t-test has 2 degrees of freedom and little power — only a difference
large against the spread between training runs reaches p < 0.05, and a p above it is no evidence that two
methods are equal. The bootstrap intervals of the per-run tables resample questions of one evaluation: they
measure how the accuracy of *these trained models* would move on other questions, not how it would move if the
training were run again — that variance is only seen across seeds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

BASES = (("delta_m1", 1), ("delta_m0", 0))  # ΔAvg against M1 (the SFT model) and against M0


HARNESS_METRIC = "acc"  # a multiple-choice task's accuracy by log-likelihood in lm-evaluation-harness


def _averages(rows: list[dict], harness: list[dict] | None = None) -> dict[int, float]:
    """k → Avg(M_k) of one run: the mean over every task measured for M_k of its accuracy (carried models
    included, as the tables show them). A task's accuracy is the harness's ``acc`` where the run evaluated it
    through lm-evaluation-harness (multiple choice by log-likelihood), else Table 1's (generated answers); without
    harness rows this is Table 1's Avg."""
    per_k: dict[int, dict[str, float]] = {}
    for r in rows:
        if r["k"] is not None:
            found = {t: v["accuracy"] for t, v in r["tasks"].items() if v.get("accuracy") is not None}
            per_k.setdefault(r["k"], {}).update(found)
    for r in harness or []:
        if r["k"] is not None:
            found = {t: m[HARNESS_METRIC]["value"] for t, m in r["tasks"].items()
                     if m.get(HARNESS_METRIC, {}).get("value") is not None}
            per_k.setdefault(r["k"], {}).update(found)
    return {k: float(np.mean(list(acc.values()))) for k, acc in per_k.items() if acc}


def run_gains(rows: list[dict], last: int | None, harness: list[dict] | None = None) -> dict:
    """One run's Avg(M0), Avg(M1), Avg(M_last) and its gains ΔAvg vs M1 and vs M0 (None where undefined)."""
    avg = _averages(rows, harness)
    top = avg.get(last) if last is not None else None
    out = {"k_last": last, "avg_m0": avg.get(0), "avg_m1": avg.get(1), "avg_last": top}
    for key, base in BASES:
        ok = top is not None and avg.get(base) is not None and last > base
        out[key] = top - avg[base] if ok else None
    return out


def pooled(values: dict[int, float | None]) -> dict:
    """n, mean, sample sd (ddof = 1) and the per-seed values of one method's gains (seeds without one left out)."""
    found = {s: v for s, v in sorted(values.items()) if v is not None}
    x = np.array(list(found.values()), dtype=np.float64)
    return {"n": int(x.size), "mean": float(x.mean()) if x.size else None,
            "sd": float(x.std(ddof=1)) if x.size > 1 else None, "values": {str(s): v for s, v in found.items()}}


def paired_seeds(a: dict[int, float | None], b: dict[int, float | None]) -> dict | None:
    """``A − B`` seed by seed over the seeds where both have a value; None with fewer than two such seeds."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if len(seeds) < 2:
        return None
    xa = np.array([a[s] for s in seeds], dtype=np.float64)
    xb = np.array([b[s] for s in seeds], dtype=np.float64)
    d = xa - xb
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(xa, xb).pvalue) if sd > 0 else None
    return {"seeds": seeds, "differences": {str(s): float(v) for s, v in zip(seeds, d)}, "n": n, "mean": mean,
            "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "p_value": p,
            "a_wins": int((d > 0).sum()), "b_wins": int((d < 0).sum()), "ties": int((d == 0).sum())}


def across_seeds(runs: dict[str, tuple[str, int]], accuracy: dict[str, list[dict]],
                 harness: dict[str, list[dict]] | None = None) -> dict:
    """The across-seeds section: ``runs`` = label → (method, seed) in the report's order, ``accuracy`` = label →
    the run's Table 1 rows, ``harness`` = label → its harness rows (multiple-choice tasks by log-likelihood; they
    enter Avg, see :func:`_averages`). Per run its gains, per method the pooled gains, and every paired comparison."""
    harness = harness or {}
    methods = list(dict.fromkeys(m for m, _ in runs.values()))
    labels = {m: [label for label, (method, _) in runs.items() if method == m] for m in methods}
    last = {}
    for m in methods:  # the last model every seed of the method evaluated
        tops = [max(_averages(accuracy[label], harness.get(label)), default=None) for label in labels[m]]
        last[m] = None if None in tops else min(tops)
    per_run = {label: {"method": m, "seed": s, **run_gains(accuracy[label], last[m], harness.get(label))}
               for label, (m, s) in runs.items()}
    by_seed = {key: {m: {per_run[label]["seed"]: per_run[label][key] for label in labels[m]} for m in methods}
               for key, _ in BASES}
    per_method = {m: {"seeds": [runs[label][1] for label in labels[m]], "k_last": last[m],
                      **{key: pooled(by_seed[key][m]) for key, _ in BASES}} for m in methods}
    paired = []
    for i, b in enumerate(methods):
        for a in methods[i + 1:]:
            found = paired_seeds(by_seed["delta_m1"][a], by_seed["delta_m1"][b])
            if found is not None:
                paired.append({"a": a, "b": b, **found})
    return {"runs": per_run, "methods": per_method, "paired": paired}
