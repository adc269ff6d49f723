"""Compare the runs of a study (one run directory per method, same seeds and data): the paper's two tables side by
side, paired accuracy differences with bootstrap intervals, and the quality of each method's self-rewarded pairs
against the oracle.

``cream inspect RUN_A RUN_B …`` writes ``study.md`` / ``study.json`` and PNGs (``make study`` → docs/RESULTS.md).

**Accuracy (Table 1).** Per model ``M_k`` of each run, per task: ``acc = x / n`` with the 95 % Wilson interval,
and ``Avg`` = the mean of the task accuracies (as :mod:`cream_data.reports.run_report`). Models whose eval stage has the
same fingerprint in every run (M0 and M1 when the runs share SFT) are shown once, as *shared*.

**Paired differences.** Every model is scored on the same questions, so differences are measured per question:
``Δ = Avg(A) − Avg(B)``, with a 95 % percentile bootstrap interval over questions (resampled within each task,
B = 4000, seed 0). An interval that contains 0 means the difference is within noise at this sample size.

**Reward quality against the oracle.** For pairs whose prompt has a reference answer, the oracle
(:func:`cream_data.rewards.answers.oracle_reward`) marks the chosen and the rejected response right or wrong:
*win* = chosen right and rejected wrong, *loss* = the reverse, *tie* = both right or both wrong. The pair is
informative only when it is not a tie; ``win rate = wins / (wins + losses)`` with its Wilson interval (0.5 =
no better than a coin). The mean consistency C of winning and losing pairs is shown too (every DPO-rewarded
method stores it; only cream/cream-avg train with it): CREAM's premise is that unreliable (losing) pairs get a
lower C.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cream_data.tables import io
from cream_data.rewards.answers import oracle_reward
from cream_data.errors import CreamError
from cream_data.stats import wilson
from cream_data.tables.iterations import iteration_dir
from cream_data.reports.study_plots import plot_accuracy, plot_consistency, plot_reward_quality, plot_tasks
from cream_data.reports.run_report import _finite, is_run_dir
from cream_data.reports.run_tables import TASK_ORDER, accuracy_rows, harness_rows, iteration_rows
from cream_data.reports.study_bootstrap import paired_difference
from cream_data.reports.study_markdown import to_markdown

METHOD_ORDER = ("srlm", "cream-no-rc", "cream-avg", "cream", "oracle")


# ---------------------------------------------------------------------------- reading the runs
def _manifest(run: Path) -> dict:
    try:
        return json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CreamError(f"{run / 'manifest.json'}: not readable ({e})") from None


def _method_key(item: tuple[str, Path]) -> tuple[int, str]:
    m = item[0]
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def _eval_outcomes(path: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """task → (example ids, correct as 0/1) of one eval table, in example-id order."""
    t = io.read_table(path, "eval", columns=["task", "example_id", "correct"]).to_pydict()
    out: dict[str, dict[str, int]] = {}
    for task, ex, ok in zip(t["task"], t["example_id"], t["correct"]):
        out.setdefault(task, {})[ex] = int(bool(ok))
    return {task: (sorted(d), np.array([d[k] for k in sorted(d)], dtype=np.float64)) for task, d in out.items()}


def _texts(responses: pa.Table) -> dict[tuple[str, int], str]:
    d = responses.select(["prompt_id", "response_idx", "response"]).to_pydict()
    return {(p, int(i)): r for p, i, r in zip(d["prompt_id"], d["response_idx"], d["response"])}


def reward_quality(run: Path, t: int) -> dict | None:
    """Oracle verdicts on iteration ``t``'s pairs (win / loss / tie), and every sampled response's accuracy."""
    it = run / iteration_dir(t)
    if not (it / "preferences" / io.MANIFEST).exists() or not (it / "responses" / io.MANIFEST).exists():
        return None
    prompts_dir = run / "prompts" / f"subset-{t}"
    refs = {}
    if (prompts_dir / io.MANIFEST).exists():
        p = io.read_table(prompts_dir, "prompts", columns=["prompt_id", "reference_answer"]).to_pydict()
        refs = dict(zip(p["prompt_id"], p["reference_answer"]))
    texts = _texts(io.read_table(it / "responses", "responses"))
    verdict = {}
    for (pid, idx), text in texts.items():
        verdict[(pid, idx)] = oracle_reward(text, refs.get(pid))
    known = [v for v in verdict.values() if v is not None]
    prefs = io.read_table(it / "preferences", "preferences",
                          columns=["prompt_id", "chosen_idx", "rejected_idx", "consistency"]).to_pydict()
    wins = losses = both_right = both_wrong = no_ref = 0
    w_win, w_loss = [], []
    for pid, c, r, w in zip(prefs["prompt_id"], prefs["chosen_idx"], prefs["rejected_idx"], prefs["consistency"]):
        vc, vr = verdict.get((pid, int(c))), verdict.get((pid, int(r)))
        if vc is None or vr is None:
            no_ref += 1
        elif vc > vr:
            wins += 1
            if w is not None:
                w_win.append(w)
        elif vc < vr:
            losses += 1
            if w is not None:
                w_loss.append(w)
        elif vc:
            both_right += 1
        else:
            both_wrong += 1
    lo, hi = wilson(wins, wins + losses)
    return {"iteration": t, "pairs": len(prefs["prompt_id"]), "with_reference": len(prefs["prompt_id"]) - no_ref,
            "wins": wins, "losses": losses, "both_right": both_right, "both_wrong": both_wrong,
            "win_rate": wins / (wins + losses) if wins + losses else None, "ci_low": lo, "ci_high": hi,
            "c_win": float(np.mean(w_win)) if w_win else None,
            "c_loss": float(np.mean(w_loss)) if w_loss else None,
            "sample_accuracy": float(np.mean(known)) if known else None, "responses_with_reference": len(known)}


def _stage_minutes(manifest: dict) -> dict:
    own = sum(s.get("seconds") or 0 for s in manifest["stages"].values() if not s.get("reused_from"))
    every = sum(s.get("seconds") or 0 for s in manifest["stages"].values())
    return {"own_min": own / 60, "total_min": every / 60}


# ---------------------------------------------------------------------------- the comparison
def compare_runs(run_dirs: list[str | Path]) -> dict:
    """Every number of the study report as a JSON-ready dict (nothing is written)."""
    runs = _runs_by_method(run_dirs)
    manifests = {m: _manifest(r) for m, r in runs.items()}

    # which eval stages are the same computation in every run (same fingerprint) → shown once
    def eval_fp(m, k):
        s = manifests[m]["stages"].get(f"eval-M{k}")
        return s.get("fingerprint") if s and s.get("status") == "done" else None

    accuracy = {m: accuracy_rows(r) for m, r in runs.items()}
    outcomes = {m: _outcomes(accuracy[m]) for m in runs}
    ks = sorted({row["k"] for rows in accuracy.values() for row in rows if row["k"] is not None})
    shared = [k for k in ks if len({eval_fp(m, k) for m in runs}) == 1 and eval_fp(next(iter(runs)), k)]
    harness = {m: harness_rows(r) for m, r in runs.items()}  # lm-evaluation-harness, shared models as above
    harness_fps = {k: {(manifests[m]["stages"].get(f"harness-M{k}") or {}).get("fingerprint") for m in runs}
                   for k in {row["k"] for rows in harness.values() for row in rows if row["k"] is not None}}
    harness_shared = sorted(k for k, fps in harness_fps.items() if len(fps) == 1 and None not in fps)
    tasks = sorted({t for rows in accuracy.values() for row in rows for t in row["tasks"]},
                   key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else 99)
    consistency, pairs, quality, c_values = {}, {}, {}, {}
    for m, r in runs.items():
        consistency[m], pairs[m], c_values[m] = iteration_rows(r)
        T = manifests[m].get("iterations") or len(pairs[m])
        quality[m] = [q for t in range(1, int(T) + 1) if (q := reward_quality(r, t)) is not None]
    return _finite({"methods": list(runs), "runs": {m: str(r) for m, r in runs.items()}, "tasks": tasks,
                    "shared_models": shared, "accuracy": accuracy,
                    "deltas": _deltas(list(runs), ks, shared, outcomes), "consistency": consistency,
                    "harness": harness, "harness_shared": harness_shared,
                    "pairs": pairs, "reward_quality": quality,
                    "setup": {m: _setup(r, manifests[m]) for m, r in runs.items()},
                    "c_values": {m: {str(t): v.tolist() for t, v in cv.items()} for m, cv in c_values.items()}})


def _runs_by_method(run_dirs: list[str | Path]) -> dict[str, Path]:
    """method → run directory, one per method, in the report's method order; at least two."""
    runs: dict[str, Path] = {}
    for r in map(Path, run_dirs):
        if not is_run_dir(r) or not (r / "manifest.json").is_file():
            raise CreamError(f"{r}: not a run directory of `cream run` (no manifest.json)")
        method = _manifest(r).get("method") or r.name
        if method in runs:
            raise CreamError(f"{r}: method {method} already given by {runs[method]}; compare one run per method")
        runs[method] = r
    if len(runs) < 2:
        raise CreamError("a study compares at least two run directories")
    return dict(sorted(runs.items(), key=_method_key))


def _outcomes(rows: list[dict]) -> dict:
    """k → the model's per-example outcomes; a carried model takes those of its source (ordered by k: the source
    comes first)."""
    out = {}
    for row in rows:
        if row["k"] is None:
            continue
        src = row.get("carried_from")
        found = out.get(int(src[1:])) if src else _eval_outcomes(Path(row["path"]))
        if found is not None:
            out[row["k"]] = found
    return out


def _deltas(methods: list[str], ks: list[int], shared: list[int], outcomes: dict) -> list[dict]:
    """Paired differences: each model vs the last shared model (M1 = the SFT model), each method vs the first, and
    cream vs cream-no-rc."""
    base_k = max(shared) if shared else None
    first = methods[0]
    deltas = []

    def add(a_m, b_m, k, b_k, vs):
        deltas.append({"a": f"{a_m} M{k}", "b": f"{b_m + ' ' if b_m else ''}M{b_k}", "method": a_m, "k": k,
                       "vs": vs, **paired_difference(outcomes[a_m][k], outcomes[b_m or a_m][b_k])})

    for m in methods:
        for k in ks:
            if k in shared or k not in outcomes[m]:
                continue
            if base_k is not None and base_k in outcomes[m]:
                add(m, "", k, base_k, "base")
            if m != first and k in outcomes[first]:
                add(m, first, k, k, first)
    if "cream" in methods and "cream-no-rc" in methods and first != "cream-no-rc":
        for k in ks:
            if k not in shared and k in outcomes["cream"] and k in outcomes["cream-no-rc"]:
                add("cream", "cream-no-rc", k, k, "cream-no-rc")
    return deltas


def _setup(run: Path, manifest: dict) -> dict:
    cfg = {}
    if (run / "config.yaml").is_file():
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    return {"run": str(run), **_stage_minutes(manifest),
            "reused": sorted(k for k, s in manifest["stages"].items() if s.get("reused_from")), "config": cfg}


@dataclass
class StudyReport:
    study: dict
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)


def write_study(run_dirs: list[str | Path], out: str | Path, *, markdown: str | Path | None = None,
                plot_prefix: str = "") -> StudyReport:
    """Write ``OUT/study.json``, the PNG plots and ``OUT/study.md``.

    ``markdown``: also put the tables into this file between ``<!-- study:begin -->`` and ``<!-- study:end -->``
    (the text around them is kept; the markers are appended when missing), with plot links relative to it.
    """
    out = Path(out)
    study = compare_runs(run_dirs)  # every run is checked before the output folder is made
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "accuracy": plot_accuracy(study, out / "study_accuracy.png"),
        "tasks": plot_tasks(study, out / "study_tasks.png"),
        "consistency": plot_consistency(study, out / "study_consistency.png"),
        "reward_quality": plot_reward_quality(study, out / "study_reward_quality.png"),
    }
    md = to_markdown(study, {k: p.name for k, p in files.items()})
    io.atomic_write_bytes(out / "study.md", md.encode())
    io.atomic_write_bytes(out / "study.json", json.dumps(study, indent=1).encode())
    files.update(markdown=out / "study.md", json=out / "study.json")
    if markdown is not None:
        doc = Path(markdown)
        rel = {k: _relpath(p, doc.parent) for k, p in files.items() if p.suffix == ".png"}
        block = "<!-- study:begin (generated by `cream inspect RUN…`; edit outside the markers) -->\n" + \
            to_markdown(study, rel) + "\n<!-- study:end -->"
        text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
        begin, end = text.find("<!-- study:begin"), text.find("<!-- study:end -->")
        if begin >= 0 and end > begin:
            text = text[:begin] + block + text[end + len("<!-- study:end -->"):]
        else:
            text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
        doc.parent.mkdir(parents=True, exist_ok=True)
        io.atomic_write_bytes(doc, text.encode())
        files["document"] = doc
    return StudyReport(study, md, files)


def _relpath(p: Path, base: Path) -> str:
    import os

    return os.path.relpath(p.resolve(), base.resolve())

