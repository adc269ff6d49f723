"""The numbers of a run's report, read from its tables: Table 1 (accuracy per task and model), Table 2 (ranking
consistency of M_t vs its parent), pairs per iteration, lm-evaluation-harness rows. The run report
(:mod:`cream_data.reports.run_report`) renders them; the definitions are in its module docstring."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError
from cream_data.reports.inspect import padded
from cream_data.rewards import ranking
from cream_data.stats import Z95, describe, wilson
from cream_data.tables import io
from cream_data.tables.iterations import ITER_DIR, iteration_from_path
from cream_data.tables.sql import find_tables
from cream_data.vocab import TASKS

TASK_ORDER = TASKS
_MODEL_DIR = re.compile(r"^M(\d+)$")
PREF_COLUMNS = ["iteration", "rewards", "prev_rewards", "ranks", "prev_ranks", "consistency_method", "weight",
                "model", "prev_model", "chosen_idx", "rejected_idx", "chosen_model", "rejected_model"]
MEASURES = (("C", "C"), ("kendall_tau", "Kendall τ"), ("spearman_rho", "Spearman ρ"), ("top_order", "TopOrder"),
            ("kendall_tau_b", "τ-b (raw)"))


def _model_tables(root: Path, kind: str):
    """(k, table source, manifest) of every ``kind`` table under ``root`` (``RUN/eval/M<k>/`` and the like)."""
    if not root.is_dir():
        return
    for src in (t for t in find_tables(root) if t.kind == kind):
        manifest = io.read_manifest(src.path) if src.path.is_dir() else {}
        yield _model_index(src.path.relative_to(root), manifest.get("label")), src, manifest


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
    rows = []
    for k, src, manifest in _model_tables(run / "eval", "eval"):
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


def preference_tables(run: Path) -> dict[int, Path]:
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
    for t, path in preference_tables(run).items():
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
                      "weight_mean": describe(prefs.column("weight").to_numpy().astype(np.float64))["mean"],
                      "gap": describe(reward_gaps(prefs)), **pair_sides(prefs)})
    return consistency, pairs, c_values


def reward_gaps(prefs: pa.Table) -> np.ndarray:
    """Per pair: the reward of the chosen response minus the rejected's, on the scale of the reward that picked
    them (the quantity temporal self-rewarding keeps from shrinking across iterations)."""
    rewards = prefs.column("rewards").to_pylist()
    chosen, rejected = prefs.column("chosen_idx").to_pylist(), prefs.column("rejected_idx").to_pylist()
    return np.array([r[c] - r[j] for r, c, j in zip(rewards, chosen, rejected)], dtype=np.float64)


def _tail(model: str | None) -> str | None:
    """A model by the last two parts of its path (``models/M2``, ``future/model``): the same model of a run and of
    another that took stages from it (``--reuse-from``) compare equal."""
    return None if model is None else "/".join(Path(model).parts[-2:])


def pair_sides(prefs: pa.Table) -> dict:
    """Where the two sides of the pairs came from: the labeling model M_t's own samples, or another model's (a
    temporal run's future model for the chosen, the initial model M1 for the rejected); counts, None in v1 tables."""
    if prefs.column("chosen_model").null_count == prefs.num_rows:
        return {"chosen_from": None, "rejected_from": None}
    own = [_tail(m) for m in prefs.column("model").to_pylist()]
    out = {}
    for side in ("chosen", "rejected"):
        models = [_tail(m) for m in prefs.column(f"{side}_model").to_pylist()]
        other = sum(m is not None and m != o for m, o in zip(models, own))
        out[f"{side}_from"] = {"M_t": len(models) - other, "other": other}
    return out


def _distinct(t: pa.Table, name: str) -> list:
    return sorted(v for v in pc.unique(t.column(name)).to_pylist() if v is not None)


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
    rows = []
    for k, src, manifest in _model_tables(run / "eval-harness", "eval_summary"):
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
