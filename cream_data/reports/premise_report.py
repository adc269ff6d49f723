"""The premise table of the run report and of ``cream inspect``: does C predict a right pair?

Reads a labeled folder's ``preferences`` (the pairs and their C) and ``scores`` (every role's rewards, the oracle's
verdicts among them) and renders :func:`cream_data.rewards.premise.premise`'s numbers as Markdown / terminal rows:
an AUC table (C and each role's reward margin, right vs wrong pairs) and the pair accuracy split by C. Without an
oracle role (or without pairs, or without any C) the table is absent and one line says why.

A labeled folder is the ``--out`` of ``cream label`` (``OUT/preferences``, ``OUT/scores``) or an iteration of a run
(``RUN/iter-<t>/preferences``, ``RUN/iter-<t>/scores``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from cream_data import markdown as md
from cream_data.reports.agreement_report import SCORE_COLUMNS
from cream_data.rewards.agreement import N_BOOT
from cream_data.rewards.premise import PAIR_COLUMNS, premise
from cream_data.tables import io

TITLE = "Premise: does C predict a right pair?"
ACCURACY_TITLE = "Pair accuracy by C"
NOTE = ("CREAM weighs each pair by C, the agreement of the current and previous models' rankings of the prompt's "
        "responses, on the premise that a consistent ranking gives a correctly ordered pair. Measured against the "
        "oracle (1 = correct, 0 = wrong against the reference answer): a pair is right when its chosen is correct "
        "and its rejected wrong, wrong the other way round; ties (both correct or both wrong) are left out of the "
        "rates. AUC: the probability that a right pair has a higher score than a wrong one, ties ½ (0.5: the score "
        "says nothing; 1: it separates them) [2.5–97.5 percentiles over "
        f"{N_BOOT} bootstrap resamples of the prompts]; C is each pair's own C, whatever scope weighed the "
        "training; margin S: scorer S's reward of chosen minus rejected. Pair accuracy = right / (right + "
        "wrong), over all pairs and split at C = 1/2.")


# ---------------------------------------------------------------------------- numbers
def folder_premise(prefs: pa.Table | None, scores: pa.Table | None, manifest: dict | None = None) -> dict | None:
    """The premise of one labeled folder (:func:`~cream_data.rewards.premise.premise`; ``manifest``: the preferences
    manifest, whose pairing summary names the two roles of C); ``{"absent": why}`` without its preferences or its
    scores table, None without either."""
    if prefs is None and scores is None:
        return None
    if prefs is None:
        return {"absent": "no preferences table: nothing was paired", "pairs": 0}
    if scores is None:
        return {"absent": "no scores table beside the pairs: the oracle's verdicts are in it", "pairs": prefs.num_rows}
    between = ((manifest or {}).get("summary") or {}).get("consistency_between")
    return premise(scores.select(SCORE_COLUMNS), prefs.select(PAIR_COLUMNS),
                   between=between if isinstance(between, list) and len(between) == 2 else None)


def run_premise(preference_paths: dict[int, Path], scores_of: dict[int, pa.Table | None]) -> list[dict]:
    """Per iteration (``{t: RUN/iter-<t>/preferences}``) with a scores table beside its preferences (``scores_of``:
    each iteration's scores as :func:`~cream_data.reports.agreement_report.read_folder` read them, for the
    agreement tables too): ``{"iteration", "path", **premise}``."""
    rows = []
    for t, path in sorted(preference_paths.items()):
        scores = scores_of.get(t)
        if scores is None:
            continue
        prefs = io.read_table(path, "preferences", columns=PAIR_COLUMNS)
        manifest = io.read_manifest(path) if path.is_dir() else None
        rows.append({"iteration": t, "path": str(path), **folder_premise(prefs, scores, manifest)})
    return rows


# ---------------------------------------------------------------------------- text
def auc_cell(a: dict) -> str:
    """An AUC entry as a table cell: ``0.603 [0.450, 0.745]``, or ``–`` (with the reason it is missing)."""
    if a["auc"] is None:
        return f"– ({a['reason']})" if a.get("reason") else "–"
    ci = "" if a["auc_ci_low"] is None else f" [{a['auc_ci_low']:.3f}, {a['auc_ci_high']:.3f}]"
    return f"{a['auc']:.3f}{ci}"


def accuracy_cell(g: dict) -> str:
    """A pair-accuracy entry as a table cell: ``59.0% (23/39)``, or ``–`` without informative pairs."""
    n = g["right"] + g["wrong"]
    return "–" if g["accuracy"] is None else f"{100 * g['accuracy']:.1f}% ({g['right']}/{n})"


def _c_label(entry: dict) -> str:
    """``C (kendall, current–previous, per pair)``: its measure, its two roles where known, stored or recomputed."""
    roles = [" – ".join(entry["c_between"])] if entry.get("c_between") else []
    how = "recomputed" if entry["c_source"] == "recomputed" else "per pair"
    return f"C ({', '.join([entry['consistency_method'], *roles, how])})"


def tables(entry: dict | None) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """``(key, title, header, rows)`` of the two premise tables (AUC per score; pair accuracy by C), shared by the
    Markdown and the terminal; ``[]`` where the premise is absent."""
    if not entry or entry.get("absent"):
        return []
    auc_rows = [[_c_label(entry) if a["score"] == "C" else a["score"], auc_cell(a), f"{a['right']}/{a['wrong']}",
                 str(a["prompts"])] for a in entry["auc"]]
    ties = f"{entry['ties']} ({entry['ties_both_correct']} both correct, {entry['ties_both_wrong']} both wrong)"
    acc_rows = [["all pairs", str(entry["right"]), str(entry["wrong"]), ties, accuracy_cell(entry)]]
    acc_rows += [[g["group"], str(g["right"]), str(g["wrong"]), str(g["ties"]), accuracy_cell(g)] for g in entry["by_c"]]
    return [("premise", TITLE, ["score", "AUC right vs wrong [95% CI]", "right/wrong", "prompts"], auc_rows),
            ("premise_accuracy", ACCURACY_TITLE, ["pairs", "right", "wrong", "ties", "pair accuracy"], acc_rows)]


def counts_line(entry: dict) -> str:
    """The pairs that count nowhere: unknown oracle verdicts, and known pairs without a finite C."""
    line = f"{entry['pairs']} pairs; {entry['unknown']} with an unknown oracle verdict (left out)"
    return line + (f"; {entry['no_c']} without a finite C (left out of the C rows)" if entry["no_c"] else "") + "."


def absent_line(entry: dict | None) -> str | None:
    """One line saying why the premise table is absent, or None where it is there (or nothing was read)."""
    if not entry or not entry.get("absent"):
        return None
    return f"No premise table: {entry['absent']}."


def _body(entry: dict) -> list[str]:
    """The AUC table (under the section's heading), the accuracy table under its own title, the counts line."""
    lines = []
    for key, title, header, rows in tables(entry):
        lines += ([] if key == "premise" else [f"{title}:", ""]) + md.table(header, rows)
    return lines + [counts_line(entry), ""]


def markdown(entry: dict | None, level: int = 2) -> list[str]:
    """Markdown lines of one folder's premise: a heading of ``level``, the tables and their explanation, or the one
    line saying why they are absent."""
    if not entry:
        return []
    head = ["#" * level + " " + TITLE, ""]
    if entry.get("absent"):
        return head + [absent_line(entry), ""]
    return head + _body(entry) + [NOTE, ""]


def run_markdown(rows: list[dict]) -> list[str]:
    """The run report's section: per iteration, its tables or why they are absent; the explanation once."""
    if not rows:
        return []
    lines = [f"## {TITLE} (per iteration)", ""]
    for r in rows:
        if r.get("absent"):
            lines += [f"Iteration {r['iteration']}: {absent_line(r)}", ""]
        else:
            lines += [f"### Iteration {r['iteration']}", ""] + _body(r)
    if any(not r.get("absent") for r in rows):
        lines += [NOTE, ""]
    return lines
