"""The study's Markdown: its tables (setup and cost, accuracy per task, paired differences, harness metrics,
ranking consistency, pairs, reward quality) from the dict :func:`cream_data.reports.study.compare_runs` builds."""

from __future__ import annotations

from cream_data.reports.inspect import fmt
from cream_data.reports.run_report import (_md_table, _pct, harness_cell, harness_columns, harness_settings,
                                           measure_cell)
from cream_data.reports.run_tables import MEASURES
from cream_data.reports.study_bootstrap import BOOTSTRAP


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
    lines += ["## Table 1: accuracy per task (%)", ""] + _md_table(accuracy_table(study))
    lines += ["± is half the 95% Wilson interval (normal approximation for Avg, the mean of the task accuracies). "
              "Models evaluated by the same stage in every run (same fingerprint) are shown once as *shared*.", ""]
    lines += ["### Paired differences in average accuracy", ""] + _md_table(delta_table(study))
    lines += ["Same questions for every model; Δ in accuracy points; 95% percentile bootstrap over questions "
              f"(resampled within each task, B = {BOOTSTRAP}). *Within noise* = the interval contains 0.", ""]
    if any(study.get("harness", {}).values()):
        lines += ["### Standard benchmarks (lm-evaluation-harness)", ""] + _md_table(harness_table(study))
        lines += ["The harness's own prompts and metrics beside the paper-protocol accuracies above, in % ± standard "
                  "error. " + harness_settings([r for rows in study["harness"].values() for r in rows]) + ".", ""]
    lines += ["## Table 2: ranking consistency between consecutive iterations (mean ± std over prompts)", ""]
    lines += _md_table(consistency_table(study))
    lines += ["Rankings by the DPO rewards of M_t and M_{t-1} on the same responses (every prompt of the iteration "
              "with finite rewards), whatever reward picked the pairs; C = (τ + 1) / 2.", ""]
    lines += ["## Pairs per iteration", ""] + _md_table(pairs_table(study))
    lines += ["*Mean stored weight*: the preferences' `weight` column, the pair's C for DPO-rewarded methods, 1 for "
              "srlm and oracle; only cream (and cream-avg, with the mean) train with it — cream-no-rc, srlm and "
              "oracle train with weight 1.", ""]
    lines += ["## Reward gap between chosen and rejected", ""] + _md_table(gap_table(study))
    lines += ["The reward of the chosen response minus the rejected's, mean ± std over each iteration's pairs, on the "
              "scale of the reward that picked them (the judge's 0–5 for srlm and temporal, the DPO implicit reward "
              "for the cream rows): compare methods that share a reward.", ""]
    lines += ["## Reward quality against the oracle", ""] + _md_table(quality_table(study))
    lines += ["Win: the self-rewarded chosen response is correct and the rejected one is not; loss: the reverse; "
              "win rate = win / (win + loss), 95% Wilson interval (50% = a coin). *Sampled responses correct*: "
              "all N responses of the iteration, by the same oracle.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()] + [""]
    return "\n".join(lines)
