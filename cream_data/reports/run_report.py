"""The iteration report of a run directory: the paper's two tables, pair counts, and two plots.

A run directory (written by ``cream run``; see README.md, Tables) holds ``RUN/eval/M<k>/`` (the eval table of model
``M_k``) and ``RUN/iter-<t>/preferences/`` (the pairs labeled in iteration ``t``, with ``ranks`` = M_t's
ranking of the responses and ``prev_ranks`` = M_{t-1}'s ranking of the *same* responses).

**Table 1, accuracy per task per model.** For model ``M_k`` and task ``j`` with ``n`` evaluated examples of
which ``x`` are correct: ``acc = x / n``, with the 95 % Wilson score interval (z = 1.959964)::

    centre = (acc + z²/2n) / (1 + z²/n),   half = z / (1 + z²/n) · sqrt(acc (1 - acc) / n + z² / 4n²)

(Wilson rather than the normal interval because eval subsets are small and accuracies can be 0 or 1).
``Avg`` = the mean of the K task accuracies (not of all examples pooled, as the paper averages tasks); its
interval is the normal approximation ``Avg ± z · sqrt(Σ_j acc_j (1 - acc_j) / n_j) / K``, clipped to [0, 1].
The Markdown shows ``±`` = half the interval's width.

**Table 2, ranking consistency ``M_t vs M_{t-1}``.** Over the prompts of iteration ``t`` that have both
rankings (rows with ``prev_ranks``): Kendall tau, C = (tau + 1) / 2, Spearman rho and TopOrder (same best
and same worst response), each as mean ± std (population, ddof = 0), computed from the rank lists with
:mod:`cream_data.rewards.ranking`, never from the ``weight`` column (whose meaning depends on the method: 1 for
``srlm``, the dataset mean for ``cream`` under the default scope and for ``cream-avg``). The rankings come from the
iteration's scores table (the DPO rewards of ``current`` and ``previous``, every prompt with finite rewards) when
there is one, else from the preferences (only prompts that yielded a pair). A prompt whose current or previous
rewards are all equal has no ranking to compare (its ordinal ranks would be the response order) and is left out,
counted as ``all_equal`` (from the preferences, plus the prompts the labeler skipped as all-equal when it used a
previous scorer). An iteration with no prompt left to measure reports "no ranking" when prompts were left out as
all-equal, else n/a (no previous ranking).

**Pairs per iteration.** From each preferences manifest's ``summary`` (written by the labeling stage):
prompts, pairs, and prompts skipped by reason; plus the mean ``weight`` the trainer used.

**Agreement per iteration** (``iter-<t>/scores``, ``iter-<t>/human``): every two scorers' Kendall tau-b and
top-pair agreement, each scorer against the oracle, the human answers' ranks (:mod:`cream_data.rewards.agreement`,
rendered by :mod:`cream_data.reports.agreement_report`; ``agreement.png``).

**Self-preference on the probe set** (``iter-<t>/probe/``, a run with ``prompts.probe``): the same table on the same
held-out prompts at every iteration (:func:`cream_data.reports.agreement_report.run_probe`; JSON ``probe``, only
where a probe exists and the run's config.yaml does not say ``prompts.probe: 0``: an earlier config's folders).

**Premise per iteration** (``iter-<t>/preferences`` with ``iter-<t>/scores`` holding an oracle role): how well each
pair's C, and each scorer's reward margin, tell the pairs the oracle calls right from the wrong ones (AUC with a
bootstrap interval) and the pair accuracy split at C = 1/2 (:mod:`cream_data.rewards.premise`, rendered by
:mod:`cream_data.reports.premise_report`); one line per iteration where it cannot be measured.

matplotlib is imported only when a plot is drawn (Agg backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cream_data.reports import agreement_report, premise_report
from cream_data.tables import io
from cream_data import markdown
from cream_data.errors import CreamError
from cream_data.stats import json_safe
from cream_data.reports.figures import new_figure, save_png
from cream_data.reports.inspect import fmt
from cream_data.tables.iterations import ITER_DIR
from cream_data.reports.run_tables import (MEASURES, preference_tables, _task_key, accuracy_rows, harness_rows,
                                           iteration_rows)



# ---------------------------------------------------------------------------- finding a run
def is_run_dir(path: str | Path) -> bool:
    """A run directory has the loop's ``manifest.json`` + ``config.yaml``, or ``iter-<t>`` folders."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "manifest.json").is_file() and (path / "config.yaml").is_file():
        return True
    return any(p.is_dir() and ITER_DIR.match(p.name) for p in path.iterdir())


# ---------------------------------------------------------------------------- the report folder
REPORT_FILES = ("summary.md", "summary.json", "report.md", "report.json", "study.md", "study.json",
                "accuracy.png", "consistency.png", "margins.png", "rewards.png", "agreement.png")


def is_report_output(path: Path) -> bool:
    """What `cream inspect` writes into --out: only its own Markdown, JSON and PNG files."""
    from cream_data.tables.outputs import only_entries

    return only_entries(path, lambda e: e.is_file() and (e.name in REPORT_FILES or (
        e.name.startswith("study_") and e.suffix == ".png")))


# ---------------------------------------------------------------------------- the report
def run_info(run: Path) -> dict:
    import json

    info = {"run": str(run), "method": None, "T": None}
    mf = run / "manifest.json"
    if mf.is_file():
        try:
            m = json.loads(mf.read_text())
        except (OSError, ValueError) as e:
            raise CreamError(f"{mf}: not readable JSON ({e})") from None
        info.update({k: m.get(k) for k in ("method", "T")})
    return info


def run_report(run_dir: str | Path) -> dict:
    """Every number of the iteration report of ``run_dir`` as a JSON-ready dict (nothing is written)."""
    return _collect(Path(run_dir))[0]


def _collect(run: Path) -> tuple[dict, dict[int, np.ndarray]]:
    if not run.is_dir():
        raise CreamError(f"{run}: no such run directory")
    acc = accuracy_rows(run)
    consistency, pairs, c_values = iteration_rows(run)
    if not acc and not pairs:
        raise CreamError(f"{run}: no eval tables (eval/M<k>/) or preferences tables (iter-<t>/preferences/) "
                         f"finished yet")
    tasks = sorted({t for r in acc for t in r["tasks"]}, key=_task_key)
    labeled = preference_tables(run)
    read = {t: (p.parent, *agreement_report.read_folder(p.parent)) for t, p in labeled.items()}  # scores read once
    report = {**run_info(run), "tasks": tasks, "accuracy": acc, "consistency": consistency, "pairs": pairs,
              "ci": "95% Wilson score interval per task; normal approximation for Avg", "harness": harness_rows(run),
              "agreement": agreement_report.run_agreement(read),
              "premise": premise_report.run_premise(labeled, {t: scores for t, (_, scores, _) in read.items()})}
    if not _probe_off(run) and (probe := agreement_report.run_probe(run)):
        report["probe"] = probe
    return report, c_values


def _probe_off(run: Path) -> bool:
    """Whether the run's config.yaml (the settings it last ran with) says ``prompts.probe: 0``: its iter-<t>/probe
    folders are then an earlier config's, stale, and left out of the report (a run without the key, or a folder that
    is no run, shows what is there)."""
    import yaml

    path = run / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return False
    prompts = cfg.get("prompts") if isinstance(cfg, dict) else None
    return isinstance(prompts, dict) and prompts.get("probe") == 0


@dataclass
class RunReport:
    """The report of a run and the files written for it (``plots``: name → PNG path)."""

    report: dict
    markdown: str
    md_path: Path
    json_path: Path
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, Path]:
        return {"markdown": self.md_path, "json": self.json_path, **self.plots}


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> RunReport:
    """Compute the report and write report.md, report.json and the PNG plots into ``out`` (default RUN/report)."""
    run = Path(run_dir)
    report, c_values = _collect(run)
    out = Path(out) if out else run / "report"
    plots = {}
    if report["accuracy"]:
        plots["accuracy"] = plot_accuracy(report, out / "accuracy.png")
    if c_values:
        plots["consistency"] = plot_consistency(c_values, out / "consistency.png",
                                                  {r["iteration"]: r["label"] for r in report["consistency"]})
    if (agreement_png := agreement_report.plot_agreement(report["agreement"], out / "agreement.png")) is not None:
        plots["agreement"] = agreement_png
    report["plots"] = {k: p.name for k, p in plots.items()}
    md = to_markdown(report)
    md_path, json_path = out / "report.md", out / "report.json"
    io.atomic_write_bytes(md_path, md.encode())
    io.atomic_write_json(json_path, _finite(report))
    return RunReport(report, md, md_path, json_path, plots)


_finite = json_safe  # NaN/inf → None, so report.json is strict JSON


# ---------------------------------------------------------------------------- plots
def plot_accuracy(report: dict, path: Path) -> Path:
    """Accuracy per model (x = M0, M1, …): one line per task, the average in bold black."""
    rows = report["accuracy"]
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig, (ax,) = new_figure(3.6)
    for task in report["tasks"]:
        y = [r["tasks"][task]["accuracy"] if task in r["tasks"] else np.nan for r in rows]
        ax.plot(x, np.array(y, dtype=float) * 100, marker="o", linewidth=1.2, label=task)
    avg = np.array([r["average"]["accuracy"] if r["average"]["accuracy"] is not None else np.nan
                    for r in rows], dtype=float)
    ax.plot(x, avg * 100, marker="s", color="black", linewidth=2.4, label="Avg")
    ax.set_xticks(x, labels)
    method = f" ({report['method']})" if report.get("method") else ""
    ax.set(title=f"Accuracy per iteration{method}", xlabel="model", ylabel="accuracy (%)", ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_png(fig, path)


def plot_consistency(c_values: dict[int, np.ndarray], path: Path, labels: dict[int, str] | None = None) -> Path:
    """C = (tau + 1) / 2 per prompt, one box per iteration (mean as a red diamond, n under each label)."""
    its = sorted(c_values)
    fig, (ax,) = new_figure(3.6)
    data = [c_values[t] for t in its]
    ax.boxplot(data, showmeans=True, showfliers=False, widths=0.5,  # the dots already show every prompt
               meanprops={"marker": "D", "markerfacecolor": "#C44E52", "markeredgecolor": "#C44E52"})
    rng = np.random.default_rng(0)  # jitter only spreads the dots: C is discrete (multiples of 1/n0)
    for i, c in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.18, 0.18, c.size), c, s=6, alpha=0.35, color="#4C72B0", zorder=1)
    labels = labels or {}
    ax.set_xticks(range(1, len(its) + 1),
                  [f"{labels.get(t, f'M{t} vs M{t - 1}')}\n(n={c_values[t].size})" for t in its])
    ax.set(title="Ranking consistency C per prompt (◆ mean)", ylabel="C = (τ + 1) / 2", ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3, axis="y")
    return save_png(fig, path)


# ---------------------------------------------------------------------------- text
def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _cell(c: dict) -> str:
    if c.get("accuracy") is None:
        return "–"
    return f"{_pct(c['accuracy'])} ± {_pct((c['ci_high'] - c['ci_low']) / 2)}"


def accuracy_table(report: dict) -> list[list[str]]:
    """Header + rows of table 1 (percent ± half the 95% interval; n in the header when every model shares it)."""
    tasks, rows = report["tasks"], report["accuracy"]
    shared_n = {}  # task → the n every model shares, when it does
    for task in tasks:
        ns = {r["tasks"][task]["n"] for r in rows if task in r["tasks"]}
        if len(ns) == 1:
            shared_n[task] = ns.pop()
    header = ["model"] + [f"{t} (n={shared_n[t]})" if t in shared_n else t for t in tasks]
    body = []
    for r in rows:
        cells = [f"{r['label']} (= {r['carried_from']}, carried)" if r.get("carried_from") else r["label"]]
        for task in tasks:
            c = r["tasks"].get(task)
            cells.append("–" if c is None else _cell(c) + ("" if task in shared_n else f" (n={c['n']})"))
        authors = (r.get("authors") or {}).get("average")
        body.append(cells + [_cell(r["average"]), _pct(authors) if authors is not None else "–"])
    return [header + ["Avg", "Avg, authors' extraction"]] + body


def measure_cell(row: dict, key: str) -> str:
    """A Table 2 cell: mean ± std; "no ranking (K all-equal)" when every prompt was left out as all-equal; n/a
    when there is no previous ranking."""
    if row[key]["n"]:
        return f"{fmt(row[key]['mean'], 3)} ± {fmt(row[key]['std'], 3)}"
    return f"no ranking ({row['all_equal']} all-equal)" if row["all_equal"] else "n/a"


def consistency_table(report: dict) -> list[list[str]]:
    header = ["iteration", "n"] + [label for _, label in MEASURES]
    body = [[r["label"], str(r["n"])] + [measure_cell(r, k) for k, _ in MEASURES] for r in report["consistency"]]
    return [header] + body


def pairs_table(report: dict) -> list[list[str]]:
    header = ["iteration", "prompts", "pairs", "skipped", "skip reasons", "stored C method", "mean weight",
              "reward gap (chosen − rejected)"]
    sides = any(p.get("chosen_from") and (p["chosen_from"]["other"] or p["rejected_from"]["other"])
                for p in report["pairs"])
    if sides:
        header += ["chosen from M_t / other", "rejected from M_t / other"]
    body = []
    for p in report["pairs"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in p["skipped"].items() if v) or "none"
        gap = p.get("gap") or {}
        row = [str(p["iteration"]), fmt(p["prompts"]), str(p["pairs"]), str(p["skipped_total"]), reasons,
               p["consistency_method"] or "–", fmt(p["weight_mean"], 3), _mean_std(gap)]
        if sides:
            row += [_split(p.get("chosen_from")), _split(p.get("rejected_from"))]
        body.append(row)
    return [header] + body


def _mean_std(d: dict) -> str:
    return "–" if d.get("mean") is None else f"{fmt(d['mean'], 3)} ± {fmt(d.get('std'), 3)}"


def _split(d: dict | None) -> str:
    return "–" if not d else f"{d['M_t']} / {d['other']}"


def harness_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(task, metric) of every harness number, tasks in the usual order."""
    found = {(task, metric) for r in rows for task, metrics in r["tasks"].items() for metric in metrics}
    return sorted(found, key=lambda c: (_task_key(c[0]), c[1]))


def harness_cell(c: dict | None) -> str:
    """A harness number in percent ± its standard error."""
    if c is None:
        return "–"
    return _pct(c["value"]) + ("" if c["stderr"] is None else f" ± {_pct(c['stderr'])}")


def harness_table(report: dict) -> list[list[str]]:
    """Header + rows of the lm-evaluation-harness table: one column per task and metric (percent ± stderr)."""
    columns = harness_columns(report["harness"])
    body = []
    for r in report["harness"]:
        cells = [f"{r['label']} (= {r['carried_from']}, carried)" if r.get("carried_from") else r["label"]]
        body.append(cells + [harness_cell(r["tasks"].get(task, {}).get(metric)) for task, metric in columns])
    return [["model"] + [f"{task} {metric}" for task, metric in columns]] + body


def harness_settings(rows: list[dict]) -> str:
    """Per task: examples, shots and data source of the harness numbers (with lm-eval's version)."""
    seen: dict[str, set] = {}
    for r in rows:
        for task, metrics in r["tasks"].items():
            for c in metrics.values():
                seen.setdefault(task, set()).add((c["n"], c["num_fewshot"], c["source"], c["harness_version"]))
    parts = [f"{task}: " + "; ".join(f"n={n}, {k}-shot, {src}" for n, k, src, _ in sorted(v))
             for task, v in sorted(seen.items(), key=lambda kv: _task_key(kv[0]))]
    versions = sorted({v[3] for vals in seen.values() for v in vals})
    return f"lm-eval {', '.join(versions)}; " + "; ".join(parts)


def _md_table(rows: list[list[str]]) -> list[str]:
    """A Markdown table from rows whose first row is the header."""
    return markdown.table(rows[0], rows[1:])


def to_markdown(report: dict) -> str:
    title = f"# Run `{report['run']}`"
    meta = ", ".join(f"{k} {report[k]}" for k in ("method", "T") if report.get(k) is not None)
    lines = [title, ""] + ([f"{meta}", ""] if meta else [])
    carried = any(r.get("carried_from") for r in report["accuracy"])
    lines += _section("Table 1: accuracy per task (%)", report["accuracy"] and accuracy_table(report),
                      "± is half the width of the 95% Wilson interval (normal approximation for Avg); "
                      "Avg is the mean of the task accuracies; the last column scores the same generations with the "
                      "CREAM authors' answer extraction (docs/EVALUATION.md), to set beside the paper's numbers."
                      + (" A carried model is the same weights as the one it copies (its iteration formed no "
                         "preference pairs): its row repeats that evaluation." if carried else ""),
                      "No eval tables yet (RUN/eval/M<k>/).")
    if report.get("harness"):
        lines += _section("Standard benchmarks (lm-evaluation-harness)", harness_table(report),
                          "The harness's own prompts and metrics (no chat template; acc_norm: log-likelihood per "
                          "byte; exact_match after each filter), in % ± standard error. "
                          f"{harness_settings(report['harness'])}.")
    lines += _section("Table 2: ranking consistency between consecutive iterations (mean ± std over prompts)",
                      report["consistency"] and consistency_table(report),
                      "The DPO-reward rankings of M_t and M_{t-1} on the same responses, from each iteration's "
                      "scores table (every prompt with finite rewards; the preferences' rank lists when no scores "
                      "table is there), whatever reward picked the pairs; C = (τ + 1) / 2. Prompts whose current or "
                      "previous rewards are all equal have no ranking to compare and are left out; no ranking: "
                      "every prompt was; n/a: no previous ranking.",
                      "No preferences tables yet (RUN/iter-<t>/preferences/).")
    if report["consistency"]:
        lines += ["## Pairs per iteration", ""] + _md_table(pairs_table(report))
    lines += agreement_report.run_markdown(report.get("agreement") or [])
    lines += agreement_report.probe_markdown(report.get("probe") or [])
    lines += premise_report.run_markdown(report.get("premise") or [])
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{k}]({name})" for k, name in report["plots"].items()] + [""]
    return "\n".join(lines)


def _section(title: str, rows: list[list[str]] | None, note: str, empty: str | None = None) -> list[str]:
    """A titled table with its note below, or the ``empty`` line when there are no rows."""
    head = [f"## {title}", ""]
    if rows:
        return head + _md_table(rows) + [note, ""]
    return head + [empty, ""] if empty else []
