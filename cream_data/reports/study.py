"""Compare the runs of a study (one run directory per method and training seed, same data): the paper's two tables
side by side, paired accuracy differences with bootstrap intervals, the quality of each method's self-rewarded pairs
against the oracle, and — with several seeds per method — the gains pooled across seeds
(:mod:`cream_data.reports.study_seeds`).

``cream inspect RUN_A RUN_B …`` writes ``study.md`` / ``study.json`` and PNGs (``make study`` → docs/RESULTS.md).

**Runs.** Each run is a method (``method`` of its manifest) and a training seed (``seeds.seed``); two runs of the
same method and seed are refused. With one run per method, a run's rows are labelled by its method. When some
method has several seeds, every run is its own row, labelled ``method (seed N)`` (``study["methods"]`` then lists
these labels): all the per-run tables below keep their meaning. Models are *shared* (one row) only when the same
evaluation stage is in every run, so with several seeds usually only M0 is: each seed trains its own M1. The paired
differences then stay within a seed: a run's models against the last model its seed's runs share (normally that
seed's M1, named by the run: ``cream (seed 0) M3`` vs ``cream (seed 0) M1``), a method against the first method
of the same seed.

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

**Premise.** Where a run's labeled iterations carry the oracle role, whether C predicts a right pair: per run and
iteration and pooled per method (:mod:`cream_data.reports.study_premise`).
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
from cream_data.reports.study_premise import study_premise
from cream_data.reports.study_seeds import across_seeds

METHOD_ORDER = ("srlm", "cream-no-rc", "cream-avg", "cream", "cream-prompt", "oracle")


# ---------------------------------------------------------------------------- reading the runs
def _manifest(run: Path) -> dict:
    try:
        return json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CreamError(f"{run / 'manifest.json'}: not readable ({e})") from None


def _method_key(m: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


@dataclass(frozen=True)
class StudyRun:
    """One run of the study: its directory and manifest, its method and training seed (None: not recorded), and
    ``group``: the runs its paired differences compare it with (its seed when some method has several seeds;
    None, i.e. every run, otherwise)."""

    path: Path
    manifest: dict
    method: str
    seed: int | None
    group: int | None = None


def _seed(manifest: dict) -> int | None:
    """The run's training seed as the loop records it (``"seeds": {"seed": N}``); None when absent."""
    seeds = manifest.get("seeds")
    seed = seeds.get("seed") if isinstance(seeds, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


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
    study_runs = _study_runs(run_dirs)
    runs = {label: r.path for label, r in study_runs.items()}
    manifests = {label: r.manifest for label, r in study_runs.items()}

    # which eval stages are the same computation in every run (same fingerprint) → shown once
    def eval_fp(m, k):
        s = manifests[m]["stages"].get(f"eval-M{k}")
        return s.get("fingerprint") if s and s.get("status") == "done" else None

    accuracy = {m: accuracy_rows(r) for m, r in runs.items()}
    outcomes = {m: _outcomes(accuracy[m]) for m in runs}
    ks = sorted({row["k"] for rows in accuracy.values() for row in rows if row["k"] is not None})

    def same_eval(labels: list[str]) -> list[int]:
        return [k for k in ks if len({eval_fp(m, k) for m in labels}) == 1 and eval_fp(labels[0], k)]

    shared = same_eval(list(runs))
    groups = {g: [m for m, r in study_runs.items() if r.group == g] for g in {r.group for r in study_runs.values()}}
    # per run, the models its group shares (M0 and the seed's M1): what its paired differences start from
    in_group = {m: same_eval(groups[r.group]) if len(groups[r.group]) > 1 else shared for m, r in study_runs.items()}
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
    study = {"methods": list(runs), "runs": {m: str(r) for m, r in runs.items()}, "tasks": tasks,
             "shared_models": shared, "accuracy": accuracy,
             "deltas": _deltas(study_runs, ks, shared, in_group, outcomes), "consistency": consistency,
             "harness": harness, "harness_shared": harness_shared,
             "pairs": pairs, "reward_quality": quality,
             "premise": study_premise({label: (r.path, r.method) for label, r in study_runs.items()}),
             "setup": {m: _setup(r, manifests[m]) for m, r in runs.items()},
             "c_values": {m: {str(t): v.tolist() for t, v in cv.items()} for m, cv in c_values.items()}}
    if _several_seeds(study_runs):
        study["across_seeds"] = across_seeds({label: (r.method, r.seed) for label, r in study_runs.items()},
                                             accuracy, harness)
    return _finite(study)


def _study_runs(run_dirs: list[str | Path]) -> dict[str, StudyRun]:
    """label → run, at least two, in the report's order (by method, then seed); one run per method and seed.

    The label is the method when every method has one run (the report as it always was), else ``method (seed N)``
    for every run, and then every run must have its seed recorded."""
    found: dict[tuple[str, int | None], StudyRun] = {}
    for r in map(Path, run_dirs):
        if not is_run_dir(r) or not (r / "manifest.json").is_file():
            raise CreamError(f"{r}: not a run directory of `cream run` (no manifest.json)")
        manifest = _manifest(r)
        run = StudyRun(r, manifest, manifest.get("method") or r.name, _seed(manifest))
        other = found.get((run.method, run.seed))
        if other is not None:
            seed = "" if run.seed is None else f" with seed {run.seed}"
            raise CreamError(f"{r}: method {run.method}{seed} already given by {other.path}; "
                             "compare one run per method and seed")
        found[run.method, run.seed] = run
    if len(found) < 2:
        raise CreamError("a study compares at least two run directories")
    runs = sorted(found.values(), key=lambda r: (_method_key(r.method), r.seed if r.seed is not None else -1))
    if not _several_seeds(runs):
        return {r.method: r for r in runs}
    for r in runs:
        if r.seed is None:
            raise CreamError(f"{r.path / 'manifest.json'}: no training seed recorded (seeds.seed); with several "
                             f"runs of one method each run is told apart by its seed")
    return {f"{r.method} (seed {r.seed})": StudyRun(r.path, r.manifest, r.method, r.seed, r.seed) for r in runs}


def _several_seeds(runs) -> bool:
    """Does some method have several runs (seeds)? ``runs``: StudyRuns, or label → StudyRun."""
    methods = [r.method for r in (runs.values() if isinstance(runs, dict) else runs)]
    return len(set(methods)) < len(methods)


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


def _deltas(runs: dict[str, StudyRun], ks: list[int], shared: list[int], in_group: dict[str, list[int]],
            outcomes: dict) -> list[dict]:
    """Paired differences: each model vs the last shared model (M1 = the SFT model), each method vs the first, and
    cream (and cream-prompt) vs cream-no-rc. Methods are compared within their group (the same seed when some method has several
    seeds, else all runs), from the models the group shares (``in_group``: label → k; ``shared`` by every run,
    named without a run)."""
    methods = list(runs)
    deltas = []

    def peer(label: str, method: str | None = None) -> str | None:
        """The first run of ``label``'s group (of ``method``, when given)."""
        return next((o for o in methods if runs[o].group == runs[label].group
                     and (method is None or runs[o].method == method)), None)

    def add(a_m, b_m, k, b_k, vs):
        deltas.append({"a": f"{a_m} M{k}", "b": f"{b_m + ' ' if b_m else ''}M{b_k}", "method": a_m, "k": k,
                       "vs": vs, **paired_difference(outcomes[a_m][k], outcomes[b_m or a_m][b_k])})

    for m in methods:
        first, base_k = peer(m), max(in_group[m], default=None)
        for k in ks:
            if k in in_group[m] or k not in outcomes[m]:
                continue
            if base_k is not None and base_k in outcomes[m]:
                add(m, "" if base_k in shared else m, k, base_k, "base")
            if m != first and k in outcomes[first]:
                add(m, first, k, k, first)
    for cream in (m for m in methods if runs[m].method in ("cream", "cream-prompt")):
        norc = peer(cream, "cream-no-rc")
        if norc is None or peer(cream) == norc:
            continue
        for k in ks:
            if k not in in_group[cream] and k in outcomes[cream] and k in outcomes[norc]:
                add(cream, norc, k, k, norc)
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

