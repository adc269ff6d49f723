"""The study's Markdown: its tables (setup and cost, accuracy per task, paired differences, gains across seeds,
harness metrics, ranking consistency, pairs, reward quality, the premise) from the dict
:func:`cream_data.reports.study.compare_runs` builds."""

from __future__ import annotations

from cream_data.reports.inspect import fmt
from cream_data.reports.run_report import (_md_table, _pct, harness_cell, harness_columns, harness_settings,
                                           measure_cell)
from cream_data.reports.run_tables import MEASURES
from cream_data.reports.study_bootstrap import BOOTSTRAP
from cream_data.reports.study_premise import premise_section


def _acc_cell(c: dict | None) -> str:
    if not c or c.get("accuracy") is None:
        return "–"
    return f"{_pct(c['accuracy'])} ± {_pct((c['ci_high'] - c['ci_low']) / 2)}"


def accuracy_table(study: dict) -> list[list[str]]:
    tasks, shared = study["tasks"], set(study["shared_models"])
    ns = {}
    for t in tasks:
        found = {r["tasks"][t]["n"] for rows in study["accuracy"].values() for r in rows if t in r["tasks"]}
        ns[t] = found.pop() if len(found) == 1 else None
    header = ["method", "model"] + [f"{t} (n={ns[t]})" if ns[t] else t for t in tasks] + ["Avg"]
    body = []
    first = study["methods"][0]
    for k in sorted(shared):
        r = next(r for r in study["accuracy"][first] if r["k"] == k)
        body.append(["(shared)", f"M{k}"] + [_acc_cell(r["tasks"].get(t)) for t in tasks] + [_acc_cell(r["average"])])
    for m in study["methods"]:
        for r in study["accuracy"][m]:
            if r["k"] in shared:
                continue
            body.append([m, r["label"]] + [_acc_cell(r["tasks"].get(t)) for t in tasks] + [_acc_cell(r["average"])])
    return [header] + body


def harness_table(study: dict) -> list[list[str]]:
    """The lm-evaluation-harness numbers of every model (% ± stderr); models shared by every run shown once."""
    shared = set(study["harness_shared"])
    columns = harness_columns([r for rows in study["harness"].values() for r in rows])
    body = []
    first = study["methods"][0]
    for k in sorted(shared):
        r = next(r for r in study["harness"][first] if r["k"] == k)
        body.append(["(shared)", f"M{k}"] + [harness_cell(r["tasks"].get(t, {}).get(m)) for t, m in columns])
    for method in study["methods"]:
        for r in study["harness"][method]:
            if r["k"] not in shared:
                body.append([method, r["label"]] + [harness_cell(r["tasks"].get(t, {}).get(m)) for t, m in columns])
    return [["method", "model"] + [f"{t} {m}" for t, m in columns]] + body


def delta_table(study: dict) -> list[list[str]]:
    rows = [["A", "B", "Δ Avg (points)", "95% bootstrap CI", "within noise?"]]
    for d in study["deltas"]:
        if d["delta"] is None:
            continue
        noise = "yes" if d["ci_low"] <= 0 <= d["ci_high"] else "no"
        rows.append([d["a"], d["b"], f"{100 * d['delta']:+.1f}", f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]",
                     noise])
    return rows


def _points(x: float | None) -> str:
    """An accuracy difference in signed points (fraction × 100), one decimal; '–' for None."""
    return "–" if x is None else f"{100 * x:+.1f}"


def _per_seed(values: dict[str, float]) -> str:
    return ", ".join(f"{seed}: {_points(v)}" for seed, v in values.items()) or "–"


def _mean_sd(p: dict) -> str:
    if p["mean"] is None:
        return "–"
    return _points(p["mean"]) + ("" if p["sd"] is None else f" ± {100 * p['sd']:.1f}")


def seeds_table(study: dict) -> list[list[str]]:
    """Per method: its seeds and the gain ΔAvg of its last model over M1 and over M0, mean ± sd and per seed."""
    rows = [["method", "seeds", "last model", "ΔAvg vs M1 (mean ± sd)", "per seed", "ΔAvg vs M0 (mean ± sd)",
             "per seed"]]
    for m, s in study["across_seeds"]["methods"].items():
        last = "–" if s["k_last"] is None else f"M{s['k_last']}"
        rows.append([m, str(len(s["seeds"])), last, _mean_sd(s["delta_m1"]), _per_seed(s["delta_m1"]["values"]),
                     _mean_sd(s["delta_m0"]), _per_seed(s["delta_m0"]["values"])])
    return rows


def seed_pairs_table(study: dict) -> list[list[str]]:
    """Every two methods with ≥ 2 shared seeds: the difference of their ΔAvg vs M1, seed by seed and summarised."""
    rows = [["A − B", "seeds", "per seed", "mean", "sd", "95% t-interval", "paired t-test p", "A > B / A < B"]]
    for d in study["across_seeds"]["paired"]:
        p = "–" if d["p_value"] is None else f"{d['p_value']:.3f}"
        rows.append([f"{d['a']} − {d['b']}", str(d["n"]), _per_seed(d["differences"]), _points(d["mean"]),
                     f"{100 * d['sd']:.1f}", f"[{_points(d['ci_low'])}, {_points(d['ci_high'])}]", p,
                     f"{d['a_wins']} / {d['b_wins']} of {d['n']}"])
    return rows


def seeds_section(study: dict) -> list[str]:
    """The "Across seeds" section (only when some method has several seeds)."""
    lines = ["## Across seeds", "", "### Gain of the self-rewarding iterations per method", ""]
    lines += _md_table(seeds_table(study))
    lines += ["ΔAvg = Avg(last model) − Avg(M1), the gain of the self-rewarding iterations over the SFT model (and "
              "over M0), in accuracy points. Avg: the mean accuracy over every task the model was evaluated on (the "
              "harness's `acc` for a task scored by lm-evaluation-harness, multiple choice by log-likelihood; "
              "Table 1's accuracy for the others). *Last model*: the last model every seed of the method evaluated. "
              "Mean ± sample sd (ddof = 1) over the seeds, the seed as the unit of replication.", ""]
    lines += ["### Paired comparisons across seeds", ""]
    if study["across_seeds"]["paired"]:
        lines += _md_table(seed_pairs_table(study))
    else:
        lines += ["No two methods share two seeds with a ΔAvg: nothing to pair.", ""]
    lines += ["Per shared seed the difference of the two methods' ΔAvg vs M1 (the same seed shares the prompt "
              "split and usually M1), in points; 95% t-interval and two-sided paired t-test over the seeds "
              "(p – where every difference is the same). With 3 seeds the test has 2 degrees of freedom and "
              "little power: p ≥ 0.05 is no evidence that the methods are equal. The bootstrap intervals above "
              "resample questions of one evaluation and do not cover the variance between training runs; only "
              "the spread across seeds does.", ""]
    return lines


def consistency_table(study: dict) -> list[list[str]]:
    rows = [["method", "iteration", "n"] + [label for _, label in MEASURES]]
    for m in study["methods"]:
        for r in study["consistency"][m]:
            vals = [measure_cell(r, k) for k, _ in MEASURES]
            rows.append([m, r["label"], str(r["n"])] + vals)
    return rows


def quality_table(study: dict) -> list[list[str]]:
    rows = [["method", "iteration", "pairs (with ref.)", "win", "loss", "tie (both ✓ / both ✗)",
             "win rate [95% CI]", "mean C win / loss", "sampled responses correct"]]
    for m in study["methods"]:
        for q in study["reward_quality"][m]:
            rate = "–" if q["win_rate"] is None else \
                f"{_pct(q['win_rate'])}% [{_pct(q['ci_low'])}, {_pct(q['ci_high'])}]"
            rows.append([m, str(q["iteration"]), f"{q['pairs']} ({q['with_reference']})", str(q["wins"]),
                         str(q["losses"]), f"{q['both_right']} / {q['both_wrong']}", rate,
                         f"{fmt(q['c_win'], 3)} / {fmt(q['c_loss'], 3)}",
                         f"{_pct(q['sample_accuracy'])}% of {q['responses_with_reference']}"])
    return rows


def pairs_table(study: dict) -> list[list[str]]:
    rows = [["method", "iteration", "prompts", "pairs", "skipped (by reason)", "mean stored weight"]]
    for m in study["methods"]:
        for p in study["pairs"][m]:
            reasons = ", ".join(f"{k}: {v}" for k, v in p["skipped"].items() if v) or "none"
            rows.append([m, str(p["iteration"]), fmt(p["prompts"]), str(p["pairs"]), f"{p['skipped_total']} ({reasons})",
                         fmt(p["weight_mean"], 3)])
    return rows


def gap_table(study: dict) -> list[list[str]]:
    """Per iteration, each method's reward gap between chosen and rejected (mean ± std over its pairs): the signal
    DPO learns from, which temporal self-rewarding is built to keep from shrinking as chosen and rejected improve
    together."""
    its = sorted({p["iteration"] for m in study["methods"] for p in study["pairs"][m]})
    rows = [["iteration", *study["methods"]]]
    for t in its:
        cells = []
        for m in study["methods"]:
            gap = next((p.get("gap") or {} for p in study["pairs"][m] if p["iteration"] == t), {})
            cells.append("–" if gap.get("mean") is None else f"{fmt(gap['mean'], 3)} ± {fmt(gap.get('std'), 3)} "
                         f"(n = {gap['n']})")
        rows.append([str(t), *cells])
    return rows


def setup_table(study: dict) -> list[list[str]]:
    rows = [["method", "run dir", "own stages (min)", "incl. shared stages (min)", "stages reused"]]
    for m in study["methods"]:
        s = study["setup"][m]
        rows.append([m, s["run"], f"{s['own_min']:.1f}", f"{s['total_min']:.1f}", ", ".join(s["reused"]) or "none"])
    return rows


def to_markdown(study: dict, plots: dict[str, str] | None = None) -> str:
    lines = ["## Setup and cost", ""] + _md_table(setup_table(study))
    if "across_seeds" in study:
        lines += ["Several seeds per method: every run is a row of the tables, labelled `method (seed N)`, and the "
                  "paired differences compare a method with the first method of the same seed; the section *Across "
                  "seeds* pools the seeds.", ""]
    lines += ["## Table 1: accuracy per task (%)", ""] + _md_table(accuracy_table(study))
    lines += ["± is half the 95% Wilson interval (normal approximation for Avg, the mean of the task accuracies). "
              "Models evaluated by the same stage in every run (same fingerprint) are shown once as *shared*.", ""]
    lines += ["### Paired differences in average accuracy", ""] + _md_table(delta_table(study))
    lines += ["Same questions for every model; Δ in accuracy points; 95% percentile bootstrap over questions "
              f"(resampled within each task, B = {BOOTSTRAP}). *Within noise* = the interval contains 0.", ""]
    if "across_seeds" in study:
        lines += seeds_section(study)
    if any(study.get("harness", {}).values()):
        lines += ["### Standard benchmarks (lm-evaluation-harness)", ""] + _md_table(harness_table(study))
        lines += ["The harness's own prompts and metrics beside the paper-protocol accuracies above, in % ± standard "
                  "error. " + harness_settings([r for rows in study["harness"].values() for r in rows]) + ".", ""]
    lines += ["## Table 2: ranking consistency between consecutive iterations (mean ± std over prompts)", ""]
    lines += _md_table(consistency_table(study))
    lines += ["Rankings by the DPO rewards of M_t and M_{t-1} on the same responses (every prompt of the iteration "
              "with finite rewards), whatever reward picked the pairs; C = (τ + 1) / 2.", ""]
    lines += ["## Pairs per iteration", ""] + _md_table(pairs_table(study))
    lines += ["*Mean stored weight*: the preferences' `weight` column. For DPO-rewarded methods it is the C the "
              "pair trains with under the label stage's scope (`dataset`, the default: the iteration's mean "
              "(τ + 1)/2, the same for every pair; `prompt`: the pair's own), raised to ½ where `clip_c` is on; 1 "
              "for srlm and oracle. Only cream (and cream-avg, with the mean) train with it — cream-no-rc, srlm and "
              "oracle train with weight 1.", ""]
    lines += ["## Reward gap between chosen and rejected", ""] + _md_table(gap_table(study))
    lines += ["The reward of the chosen response minus the rejected's, mean ± std over each iteration's pairs, on the "
              "scale of the reward that picked them (the judge's 0–5 for srlm and temporal, the DPO implicit reward "
              "for the cream rows): compare methods that share a reward.", ""]
    lines += ["## Reward quality against the oracle", ""] + _md_table(quality_table(study))
    lines += ["Win: the self-rewarded chosen response is correct and the rejected one is not; loss: the reverse; "
              "win rate = win / (win + loss), 95% Wilson interval (50% = a coin). *Sampled responses correct*: "
              "all N responses of the iteration, by the same oracle.", ""]
    lines += premise_section(study)
    if plots:
        lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()] + [""]
    return "\n".join(lines)
