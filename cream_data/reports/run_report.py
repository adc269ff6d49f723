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
``srlm``, the dataset mean for ``cream-avg``). The rankings come from the iteration's scores table (the DPO
rewards of ``current`` and ``previous``, every prompt with finite rewards) when there is one, else from the
preferences (only prompts that yielded a pair). A prompt whose current or previous rewards are all equal has no
ranking to compare (its ordinal ranks would be the response order) and is left out, counted as ``all_equal``
(from the preferences, plus the prompts the labeler skipped as all-equal when it used a previous scorer). An
iteration with no prompt left to measure reports "no ranking" when prompts were left out as all-equal, else n/a
(no previous ranking).

**Pairs per iteration.** From each preferences manifest's ``summary`` (written by the labeling stage):
prompts, pairs, and prompts skipped by reason; plus the mean ``weight`` the trainer used.

**Agreement per iteration** (``iter-<t>/scores``, ``iter-<t>/human``): every two scorers' Kendall tau-b and
top-pair agreement, each scorer against the oracle, the human answers' ranks (:mod:`cream_data.rewards.agreement`,
rendered by :mod:`cream_data.reports.agreement_report`; ``agreement.png``).

matplotlib is imported only when a plot is drawn (Agg backend).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.reports import agreement_report
from cream_data.tables import io
from cream_data.rewards import ranking
from cream_data import markdown
from cream_data.errors import CreamError
from cream_data.stats import Z95, json_safe, wilson  # noqa: F401  (wilson: re-exported for the study)
from cream_data.reports.inspect import describe, fmt, new_figure, padded, save_png
from cream_data.tables.iterations import ITER_DIR, iteration_from_path
from cream_data.tables.sql import find_tables

TASK_ORDER = ("arc_easy", "arc_challenge", "openbookqa", "siqa", "gsm8k")
_MODEL_DIR = re.compile(r"^M(\d+)$")
PREF_COLUMNS = ["iteration", "rewards", "prev_rewards", "ranks", "prev_ranks", "consistency_method", "weight",
                "model", "prev_model"]
MEASURES = (("C", "C"), ("kendall_tau", "Kendall τ"), ("spearman_rho", "Spearman ρ"), ("top_order", "TopOrder"),
            ("kendall_tau_b", "τ-b (raw)"))


# ---------------------------------------------------------------------------- finding a run
def is_run_dir(path: str | Path) -> bool:
    """A run directory has the loop's ``manifest.json`` + ``config.yaml``, or ``iter-<t>`` folders."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "manifest.json").is_file() and (path / "config.yaml").is_file():
        return True
    return any(p.is_dir() and ITER_DIR.match(p.name) for p in path.iterdir())


def _model_index(path: Path, label: str | None) -> int | None:
    for name in ([label] if label else []) + [p for p in reversed(path.parts)]:
        m = _MODEL_DIR.match(str(name))
        if m:
            return int(m.group(1))
    return None


# ---------------------------------------------------------------------------- table 1: accuracy
def accuracy_rows(run: Path) -> list[dict]:
    """One dict per evaluated model, ordered M0, M1, …: per-task accuracy with CI, and the average; a model carried
    forward by a pair-less iteration repeats the row of the model it copies, with ``carried_from``."""
    root = run / "eval"
    if not root.is_dir():
        return []
    rows = []
    for src in (t for t in find_tables(root) if t.kind == "eval"):
        manifest = io.read_manifest(src.path) if src.path.is_dir() else {}
        k = _model_index(src.path.relative_to(root), manifest.get("label"))
        table = io.read_table(src.path, "eval", columns=["model", "task", "correct", "prediction"])
        # count of `prediction` counts non-null values: the answers the extractor found.
        g = table.group_by("task", use_threads=False).aggregate(
            [("correct", "sum"), ("correct", "count"), ("prediction", "count")])
        found = zip(g.column("task").to_pylist(), g.column("correct_sum").to_pylist(),
                    g.column("correct_count").to_pylist(), g.column("prediction_count").to_pylist())
        tasks = {}
        for task, x, n, extracted in sorted(found, key=lambda r: _task_key(r[0])):
            x = int(x or 0)
            lo, hi = wilson(x, n)
            tasks[task] = {"n": n, "correct": x, "extracted": extracted, "accuracy": x / n if n else None,
                           "ci_low": lo, "ci_high": hi}
        models = sorted(v for v in pc.unique(table.column("model")).to_pylist() if v)
        name = manifest.get("model") or (manifest.get("summary") or {}).get("model") or ", ".join(models) or None
        rows.append({"label": manifest.get("label") or (f"M{k}" if k is not None else src.path.name), "k": k,
                     "model": name, "path": str(src.path), "tasks": tasks, "average": _average(tasks),
                     "extractor": (manifest.get("summary") or {}).get("extractor", "cream"),
                     "authors": _authors_accuracy(src.path)})
    return _with_carried(rows, _carried(run))


def _authors_accuracy(path: Path) -> dict:
    """The same stored generations scored by the CREAM authors' extraction rules (``cream eval --extract
    authors``): per-task accuracy and the macro average, to set beside the paper's numbers. Rescoring needs only
    the response and the gold answer, so it is computed for every eval table whichever extractor wrote it."""
    from cream_data.stages.evaluate import score

    t = io.read_table(path, "eval", columns=["task", "response", "answer"])
    right: dict[str, list[bool]] = {}
    for task, resp, gold in zip(t["task"].to_pylist(), t["response"].to_pylist(), t["answer"].to_pylist()):
        right.setdefault(task, []).append(score(task, resp or "", gold, None, "authors")[1])
    tasks = {task: sum(v) / len(v) for task, v in sorted(right.items(), key=lambda kv: _task_key(kv[0])) if v}
    return {"tasks": tasks, "average": sum(tasks.values()) / len(tasks) if tasks else None}


def _task_key(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def _average(tasks: dict) -> dict:
    accs = [t for t in tasks.values() if t["n"]]
    if not accs:
        return {"accuracy": None, "ci_low": None, "ci_high": None, "tasks": 0}
    k = len(accs)
    avg = sum(t["accuracy"] for t in accs) / k
    half = Z95 * math.sqrt(sum(t["accuracy"] * (1 - t["accuracy"]) / t["n"] for t in accs)) / k
    return {"accuracy": avg, "ci_low": max(0.0, avg - half), "ci_high": min(1.0, avg + half), "tasks": k}


# ---------------------------------------------------------------------------- table 2 and pairs
def rank_measures(ranked: pa.Table, where: str = "preferences") -> dict[str, np.ndarray]:
    """Per prompt with both rankings, neither all-equal: C, Kendall tau, Spearman rho, TopOrder on the ordinal
    ranks, and Kendall's tau-b on the raw rewards (ties kept: what ordinal ranks hide for integer-valued scorers)
    (grouped by N, vectorised). ``ranked`` has ``ranks``, ``prev_ranks``, ``values``, ``prev_values`` and
    ``all_equal`` (:func:`ranks_from_scores`, :func:`ranks_from_preferences`)."""
    t = ranked.filter(pc.and_(ranked.column("prev_ranks").is_valid(), pc.invert(ranked.column("all_equal"))))
    out: dict[str, list[np.ndarray]] = {name: [] for name, _ in MEASURES}
    n_cur = pc.list_value_length(t.column("ranks")).to_numpy()
    n_prev = pc.list_value_length(t.column("prev_ranks")).to_numpy()
    if (bad := np.flatnonzero(n_cur != n_prev)).size:
        raise CreamError(f"{where}: row {int(bad[0])} has {n_cur[bad[0]]} ranks but {n_prev[bad[0]]} prev_ranks")
    for n in np.unique(n_cur):
        sub = t.filter(pa.array(n_cur == n))
        a = pc.list_flatten(sub.column("ranks")).to_numpy().reshape(-1, int(n))
        b = pc.list_flatten(sub.column("prev_ranks")).to_numpy().reshape(-1, int(n))
        va = pc.list_flatten(sub.column("values")).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, int(n))
        vb = pc.list_flatten(sub.column("prev_values")).to_numpy(zero_copy_only=False).astype(np.float64) \
            .reshape(-1, int(n))
        try:
            tau = ranking.kendall_tau(a, b)
            out["spearman_rho"].append(ranking.spearman_rho(a, b))
            out["top_order"].append(ranking.top_order(a, b))
            out["kendall_tau_b"].append(ranking.kendall_tau_b(va, vb))
        except ValueError as e:
            raise CreamError(f"{where}: {e}") from None
        out["kendall_tau"].append(tau)
        out["C"].append((tau + 1.0) / 2.0)
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def ranks_from_scores(scores: pa.Table) -> pa.Table | None:
    """``ranks``/``prev_ranks`` lists per prompt from a scores table's ``current`` and ``previous`` DPO rewards, and
    ``all_equal``: either reward list is all equal (no ranking to compare).

    This is the paper's measurement for every method: the rankings of M_t and M_{t-1} on the same responses,
    whatever reward picked the pairs (judge, oracle). Prompts with a non-finite reward or N < 2 are left out.
    None when the table lacks either scorer.
    """
    from cream_data.rewards.agreement import reward_cube

    sub = scores.select(["prompt_id", "response_idx", "scorer", "reward"]).filter(
        pc.is_in(scores["scorer"], pa.array(["current", "previous"])))
    roles, ids, cube = reward_cube(sub)
    if roles != ["current", "previous"]:
        return None
    _, _, present = reward_cube(sub.set_column(3, "reward", pa.array(np.ones(sub.num_rows))))
    present = np.isfinite(present).any(axis=0)  # [P, N]: a row of either scorer exists for the response
    order = np.argsort(np.array(ids.to_pylist(), dtype=object), kind="stable")  # prompts by id
    cur_lists = [cube[0, p][present[p]].tolist() for p in order]
    prev_lists = [cube[1, p][present[p]].tolist() for p in order]
    ranks, prev_ranks, all_equal, values, prev_values = [], [], [], [], []
    for n in sorted({len(c) for c in cur_lists}):
        idx = [i for i, c in enumerate(cur_lists) if len(c) == n]
        a = np.array([cur_lists[i] for i in idx], dtype=np.float64)
        b = np.array([prev_lists[i] for i in idx], dtype=np.float64)
        ok = np.isfinite(a).all(1) & np.isfinite(b).all(1) & (n >= 2)
        if ok.any():
            a, b = a[ok], b[ok]
            ranks.extend(ranking.ordinal_ranks(a).tolist())
            prev_ranks.extend(ranking.ordinal_ranks(b).tolist())
            values.extend(a.tolist())
            prev_values.extend(b.tolist())
            all_equal.extend((_all_equal(a) | _all_equal(b)).tolist())
    return pa.table({"ranks": pa.array(ranks, pa.list_(pa.int16())),
                     "prev_ranks": pa.array(prev_ranks, pa.list_(pa.int16())),
                     "values": pa.array(values, pa.list_(pa.float64())),
                     "prev_values": pa.array(prev_values, pa.list_(pa.float64())),
                     "all_equal": pa.array(all_equal, pa.bool_())})


def ranks_from_preferences(prefs: pa.Table) -> pa.Table:
    """The preferences' ``ranks``/``prev_ranks`` and ``all_equal`` (the ``rewards`` or ``prev_rewards`` of the row
    are all equal), the form :func:`rank_measures` takes."""
    flags = np.zeros(prefs.num_rows, dtype=bool)
    for col in ("rewards", "prev_rewards"):
        mat, present = padded(prefs.column(col))
        flags |= present & _all_equal(mat)
    return pa.table({"ranks": prefs.column("ranks"), "prev_ranks": prefs.column("prev_ranks"),
                     "values": prefs.column("rewards"), "prev_values": prefs.column("prev_rewards"),
                     "all_equal": pa.array(flags, pa.bool_())})


def _all_equal(mat: np.ndarray) -> np.ndarray:
    """Per row of a reward matrix: are all its (non-NaN) values equal? NaN is padding here."""
    if mat.size == 0:
        return np.zeros(mat.shape[0], dtype=bool)
    return np.fmax.reduce(mat, axis=1) == np.fmin.reduce(mat, axis=1)


def _preference_tables(run: Path) -> dict[int, Path]:
    """iteration → its preferences table; several for one iteration → prefer ``iter-<t>/preferences``."""
    found: dict[int, list[Path]] = {}
    for src in find_tables(run):
        if src.kind == "preferences" and src.iteration is not None:
            found.setdefault(src.iteration, []).append(src.path)
    chosen = {}
    for t, paths in sorted(found.items()):
        direct = [p for p in paths if p.name == "preferences" and iteration_from_path(p.parent) == t
                  and ITER_DIR.match(p.parent.name)]
        if len(paths) > 1 and len(direct) != 1:
            raise CreamError(f"{run}: iteration {t} has {len(paths)} preferences tables "
                             f"({', '.join(str(p) for p in paths[:4])}); expected one in iter-{t}/preferences")
        chosen[t] = direct[0] if len(paths) > 1 else paths[0]
    return chosen


def iteration_rows(run: Path) -> tuple[list[dict], list[dict], dict[int, np.ndarray]]:
    """(table 2 rows, pair-count rows, C values per iteration for the plot)."""
    consistency, pairs, c_values = [], [], {}
    carried = _carried(run)
    for t, path in _preference_tables(run).items():
        prefs = io.read_table(path, "preferences", columns=PREF_COLUMNS)
        manifest = io.read_manifest(path) if path.is_dir() else {}
        summary = manifest.get("summary") or {}
        scores_dir = path.parent / "scores"
        from_scores = ranks_from_scores(io.read_table(scores_dir, "scores")) if (scores_dir / io.MANIFEST).exists() \
            else None
        ranked = from_scores if from_scores is not None else ranks_from_preferences(prefs)
        m = rank_measures(ranked, str(path))
        all_equal = int(pc.sum(pc.and_(ranked.column("prev_ranks").is_valid(), ranked.column("all_equal"))).as_py()
                        or 0)
        if from_scores is None and summary.get("consistency_method") not in (None, "none"):
            all_equal += int((summary.get("skipped") or {}).get("all_equal", 0))  # never paired: not in the table
        # iteration t ranks with M_t and its parent: M_{t-1}, or earlier when M_{t-1} was carried forward
        row = {"iteration": t, "label": f"M{t} vs M{_parent(t, carried)}", "path": str(path), "n": int(m["C"].size),
               "all_equal": all_equal,
               "measured_on": "scores (all prompts, DPO rewards of M_t and M_{t-1})" if from_scores is not None
               else "preferences (paired prompts)",
               "pairs": prefs.num_rows, "stored_method": _distinct(prefs, "consistency_method"),
               "models": _distinct(prefs, "model"), "prev_models": _distinct(prefs, "prev_model")}
        row.update({name: describe(v) for name, v in m.items()})
        consistency.append(row)
        if m["C"].size:
            c_values[t] = m["C"]
        skipped = {str(k): int(v) for k, v in sorted((summary.get("skipped") or {}).items())}
        prompts = summary.get("prompts")
        pairs.append({"iteration": t, "path": str(path), "pairs": prefs.num_rows,
                      "prompts": prompts if isinstance(prompts, int) else None,
                      "skipped": skipped, "skipped_total": sum(skipped.values()), "scope": summary.get("scope"),
                      "consistency_method": ", ".join(_distinct(prefs, "consistency_method")) or None,
                      "weight_mean": describe(prefs.column("weight").to_numpy().astype(np.float64))["mean"]})
    return consistency, pairs, c_values


def _distinct(t: pa.Table, name: str) -> list:
    return sorted(v for v in pc.unique(t.column(name)).to_pylist() if v is not None)


# ---------------------------------------------------------------------------- the report
def _run_info(run: Path) -> dict:
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


def _carried(run: Path) -> dict[str, str]:
    """``{"M2": "M1", …}``: models a pair-less iteration carried forward (the loop's manifest says which)."""
    import json

    mf = run / "manifest.json"
    try:
        carried = json.loads(mf.read_text()).get("carried") if mf.is_file() else None
    except (OSError, ValueError, AttributeError):
        carried = None
    return carried if isinstance(carried, dict) else {}


def _with_carried(acc: list[dict], carried: dict[str, str]) -> list[dict]:
    """Add a row per carried model: the evaluation of the model it copies (same weights, not evaluated again)."""
    by_label = {r["label"]: r for r in acc}
    for label in sorted(carried, key=lambda m: int(m[1:])):
        src = by_label.get(carried[label])
        if src is not None and label not in by_label:
            by_label[label] = {**src, "label": label, "k": int(label[1:]), "path": None,
                               "carried_from": carried[label]}
    rows = list(by_label.values())
    return sorted(rows, key=lambda r: (r["k"] is None, r["k"] if r["k"] is not None else 0, r["label"]))


def _parent(k: int, carried: dict[str, str]) -> int:
    """The model M_k was trained from: a carried model keeps the parent of the model it copies."""
    return _parent(k - 1, carried) if f"M{k}" in carried else k - 1


def harness_rows(run: Path) -> list[dict]:
    """One dict per model evaluated through lm-evaluation-harness (``RUN/eval-harness/M<k>/``), ordered M0, M1, …:
    ``tasks`` = task → metric (with its filter unless none) → value, stderr, n, shots, source; carried models as in
    Table 1."""
    root = run / "eval-harness"
    if not root.is_dir():
        return []
    rows = []
    for src in (t for t in find_tables(root) if t.kind == "eval_summary"):
        manifest = io.read_manifest(src.path) if src.path.is_dir() else {}
        k = _model_index(src.path.relative_to(root), manifest.get("label"))
        table = io.read_table(src.path, "eval_summary").to_pylist()
        tasks: dict[str, dict] = {}
        for r in sorted(table, key=lambda r: (_task_key(r["task"]), r["metric"], r["filter"])):
            metric = r["metric"] if r["filter"] == "none" else f"{r['metric']} ({r['filter']})"
            tasks.setdefault(r["task"], {})[metric] = {
                key: r[key] for key in ("value", "stderr", "n", "num_fewshot", "source", "harness_version")}
        rows.append({"label": manifest.get("label") or (f"M{k}" if k is not None else src.path.name), "k": k,
                     "model": ", ".join(sorted({r["model"] for r in table})) or None, "path": str(src.path),
                     "tasks": tasks})
    return _with_carried(rows, _carried(run))


def _collect(run: Path) -> tuple[dict, dict[int, np.ndarray]]:
    if not run.is_dir():
        raise CreamError(f"{run}: no such run directory")
    acc = accuracy_rows(run)
    consistency, pairs, c_values = iteration_rows(run)
    if not acc and not pairs:
        raise CreamError(f"{run}: no eval tables (eval/M<k>/) or preferences tables (iter-<t>/preferences/) "
                         f"finished yet")
    tasks = sorted({t for r in acc for t in r["tasks"]}, key=_task_key)
    report = {**_run_info(run), "tasks": tasks, "accuracy": acc, "consistency": consistency, "pairs": pairs,
              "ci": "95% Wilson score interval per task; normal approximation for Avg", "harness": harness_rows(run),
              "agreement": agreement_report.run_agreement({t: p.parent for t, p in _preference_tables(run).items()})}
    return report, c_values


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
    header = ["iteration", "prompts", "pairs", "skipped", "skip reasons", "stored C method", "mean weight"]
    body = []
    for p in report["pairs"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in p["skipped"].items() if v) or "none"
        body.append([str(p["iteration"]), fmt(p["prompts"]), str(p["pairs"]), str(p["skipped_total"]), reasons,
                     p["consistency_method"] or "–", fmt(p["weight_mean"], 3)])
    return [header] + body


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
    lines += ["## Table 1: accuracy per task (%)", ""]
    if report["accuracy"]:
        lines += _md_table(accuracy_table(report))
        lines += ["± is half the width of the 95% Wilson interval (normal approximation for Avg); "
                  "Avg is the mean of the task accuracies; the last column scores the same generations with the "
                  "CREAM authors' answer extraction (docs/EVALUATION.md), to set beside the paper's numbers."
                  + (" A carried model is the same weights as the one it copies (its iteration formed no "
                     "preference pairs): its row repeats that evaluation." if any(r.get("carried_from")
                                                                                 for r in report["accuracy"]) else ""),
                  ""]
    else:
        lines += ["No eval tables yet (RUN/eval/M<k>/).", ""]
    if report.get("harness"):
        lines += ["## Standard benchmarks (lm-evaluation-harness)", ""] + _md_table(harness_table(report))
        lines += ["The harness's own prompts and metrics (no chat template; acc_norm: log-likelihood per byte; "
                  f"exact_match after each filter), in % ± standard error. {harness_settings(report['harness'])}.",
                  ""]
    lines += ["## Table 2: ranking consistency between consecutive iterations (mean ± std over prompts)", ""]
    if report["consistency"]:
        lines += _md_table(consistency_table(report))
        lines += ["The DPO-reward rankings of M_t and M_{t-1} on the same responses, from each iteration's scores "
                  "table (every prompt with finite rewards; the preferences' rank lists when no scores table is "
                  "there), whatever reward picked the pairs; C = (τ + 1) / 2. Prompts whose current or previous "
                  "rewards are all equal have no ranking to compare and are left out; no ranking: every prompt was; "
                  "n/a: no previous ranking.", ""]
        lines += ["## Pairs per iteration", ""] + _md_table(pairs_table(report))
    else:
        lines += ["No preferences tables yet (RUN/iter-<t>/preferences/).", ""]
    lines += agreement_report.run_markdown(report.get("agreement") or [])
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{k}]({name})" for k, name in report["plots"].items()] + [""]
    return "\n".join(lines)
