"""The study's premise table: per run and iteration, does C predict a right pair? — and per method, pooled.

``cream inspect RUN_A RUN_B …`` (:mod:`cream_data.reports.study`) adds this section; the numbers are those of the
run report's premise table (:func:`cream_data.rewards.premise.premise`, rendered for one folder by
:mod:`cream_data.reports.premise_report`), read from each run's labeled iterations (``RUN/iter-<t>/preferences``
beside ``RUN/iter-<t>/scores``). The premise can be measured where the scores hold the oracle role (1 = correct,
0 = wrong against the reference answer: ``cream label`` with oracle scores, or the oracle method's own rewards);
elsewhere one line says why, in the run report's words.

**Per run and iteration**: right / wrong / tie pairs, the AUC of C for right vs wrong pairs with its 95 % bootstrap
interval over the iteration's prompts, and the pair accuracy right / (right + wrong) at C ≥ ½ and C < ½.

**Pooled per method** (where a method has two or more measurable run-iterations, e.g. its seeds): the same
measure over the union of those pairs, computed by :func:`~cream_data.rewards.premise.premise` on the tables put
together with *run-qualified prompt ids* (``<run label>/iter-<t>/<prompt_id>``): the AUC compares every right pair
with every wrong pair of the method, across runs and iterations, and the bootstrap resamples these pooled prompts
(not stratified by run). C is each pair's own C, as in the per-run rows; C measured on different iterations'
scales is pooled as it is. A method whose C is stored per pair in some iterations and recomputed from the scores
in others (``consistency_method`` none) is not pooled, and one line says so.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from cream_data import markdown as md
from cream_data.reports import premise_report
from cream_data.reports.agreement_report import SCORE_COLUMNS, read_folder
from cream_data.reports.run_tables import preference_tables
from cream_data.rewards.premise import PAIR_COLUMNS, premise
from cream_data.tables import io

POOLED_NOTE = ("*Pooled*: every measurable run and iteration of the method together, prompts told apart by run "
               "and iteration; the AUC's bootstrap resamples these pooled prompts (not stratified by run).")


def _qualified(table: pa.Table, prefix: str) -> pa.Table:
    """``table`` with each ``prompt_id`` prefixed by ``prefix`` (its run and iteration), so pooled prompts differ."""
    ids = pa.array([f"{prefix}/{p}" for p in table.column("prompt_id").to_pylist()], pa.string())
    return table.set_column(table.schema.get_field_index("prompt_id"), "prompt_id", ids)


def study_premise(runs: dict[str, tuple[Path, str]]) -> dict:
    """``runs``: label → (run directory, method), in the report's order. Returns ``{"rows": [{"run", "method",
    "iteration", "path", **premise}], "pooled": [{"method", "runs", "iterations", **premise}]}``: a row per labeled
    iteration (``absent`` says why it cannot be measured), a pooled entry per method with ≥ 2 measurable rows."""
    rows, tables = [], {}
    for label, (run, method) in runs.items():
        for t, path in sorted(preference_tables(run).items()):
            prefs = io.read_table(path, "preferences", columns=PAIR_COLUMNS)
            scores = read_folder(path.parent)[0]  # as the run report reads them
            manifest = io.read_manifest(path) if path.is_dir() else None
            entry = premise_report.folder_premise(prefs, None if scores is None else scores.select(SCORE_COLUMNS),
                                                  manifest)
            rows.append({"run": label, "method": method, "iteration": t, "path": str(path), **entry})
            if not entry.get("absent"):
                prefix = f"{label}/iter-{t}"
                between = ((manifest or {}).get("summary") or {}).get("consistency_between")
                tables.setdefault(method, []).append((label, t, _qualified(prefs, prefix),
                                                      _qualified(scores.select(SCORE_COLUMNS), prefix), between,
                                                      entry["c_source"]))
    return {"rows": rows, "pooled": [_pooled(method, found) for method, found in tables.items() if len(found) > 1]}


def _pooled(method: str, found: list[tuple]) -> dict:
    """The premise over the union of a method's measurable run-iterations (run-qualified prompt ids)."""
    where = {"method": method, "runs": list(dict.fromkeys(f[0] for f in found)),
             "iterations": [[f[0], f[1]] for f in found]}
    if len({f[5] for f in found}) > 1:  # stored C in some, recomputed in others: premise() would mix them up
        return {**where, "absent": "its runs' C is stored per pair in some iterations and recomputed in others: "
                                   "not pooled", "pairs": sum(f[2].num_rows for f in found)}
    betweens = {tuple(b) for b in (f[4] for f in found) if isinstance(b, list) and len(b) == 2}
    pairs = pa.concat_tables([f[2] for f in found], promote_options="permissive")
    scores = pa.concat_tables([f[3] for f in found], promote_options="permissive")
    return {**where, **premise(scores, pairs, between=list(betweens.pop()) if len(betweens) == 1 else None)}


# ---------------------------------------------------------------------------- Markdown
def _c_auc(entry: dict) -> str:
    return premise_report.auc_cell(next(a for a in entry["auc"] if a["score"] == "C"))


def premise_table(premise_section: dict) -> list[list[str]]:
    """Header and one row per measurable run-iteration, then one per pooled method."""
    rows = [["run", "iteration", "right", "wrong", "ties", "AUC of C [95% CI]", "pair accuracy C ≥ ½",
             "pair accuracy C < ½"]]
    measured = [(r["run"], str(r["iteration"]), r) for r in premise_section["rows"] if not r.get("absent")]
    pooled = [(f"{p['method']} (pooled)", f"all ({len(p['iterations'])} run-iterations)", p)
              for p in premise_section["pooled"] if not p.get("absent")]
    for label, iteration, e in measured + pooled:
        high, low = e["by_c"]
        rows.append([label, iteration, str(e["right"]), str(e["wrong"]), str(e["ties"]), _c_auc(e),
                     premise_report.accuracy_cell(high), premise_report.accuracy_cell(low)])
    return rows


def absent_lines(premise_section: dict) -> list[str]:
    """One line per reason the premise cannot be measured, naming the runs and iterations it applies to."""
    by_reason: dict[str, dict[str, list[int]]] = {}
    for r in premise_section["rows"]:
        if r.get("absent"):
            by_reason.setdefault(r["absent"], {}).setdefault(r["run"], []).append(r["iteration"])
    lines = []
    for reason, where in by_reason.items():
        named = "; ".join(f"{run} iteration{'s' if len(its) > 1 else ''} {', '.join(map(str, its))}"
                          for run, its in where.items())
        lines += [f"No premise table for {named}: {reason}.", ""]
    for p in premise_section["pooled"]:
        if p.get("absent"):
            lines += [f"No pooled row for {p['method']}: {p['absent']}.", ""]
    return lines


def premise_section(study: dict) -> list[str]:
    """The study's "Premise: does C predict a right pair?" section ([] when no run has a labeled iteration)."""
    found = study.get("premise") or {}
    if not found.get("rows"):
        return []
    lines = [f"## {premise_report.TITLE}", ""]
    table = premise_table(found)
    if len(table) > 1:
        lines += md.table(table[0], table[1:])
    lines += absent_lines(found)
    if len(table) > 1:
        lines += [premise_report.NOTE + (" " + POOLED_NOTE if found["pooled"] else ""), ""]
    return lines
