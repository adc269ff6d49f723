"""The study across training seeds (`cream inspect RUN…` with several seeds per method): runs grouped by method and
seed, each run's gain ΔAvg, its mean ± sd per method, and the paired comparison of two methods over their shared
seeds — all checked against numbers worked out by hand from known per-question outcomes, and recomputed with
numpy/scipy independently of the report's code.

The run directories are the minimal structure the study reads, written with the real writers: the run's manifest
through :class:`cream_train.run.manifest.Manifest` (as `cream run` records its stages), the eval tables scored by
the eval stage's own row builder and written part by part as the eval stage writes them."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml
from scipy import stats

from cream_data.errors import CreamError
from cream_data.tables import io
from tests.support.cli import refused

N = 4  # questions per task
TASKS = ("arc_easy", "gsm8k")
SEEDS = (0, 1, 2)
# Correct answers out of N per task (arc_easy, gsm8k): Avg(M) = (arc + gsm) / 8.
M0 = (1, 0)  # no seed enters M0's evaluation: one fingerprint in every run
M1 = {0: (2, 1), 1: (2, 2), 2: (1, 1)}  # the SFT model of each seed, shared by the seed's runs
M3 = {"srlm": {0: (3, 1), 1: (2, 2), 2: (2, 1)}, "cream": {0: (4, 2), 1: (3, 2), 2: (2, 2)}}
# ΔAvg = Avg(M3) − Avg(M1) by hand, in eighths: srlm 4−3, 4−4, 3−2; cream 6−3, 5−4, 4−2
GAIN_M1 = {"srlm": {0: 1 / 8, 1: 0.0, 2: 1 / 8}, "cream": {0: 3 / 8, 1: 1 / 8, 2: 2 / 8}}
GAIN_M0 = {"srlm": {0: 3 / 8, 1: 3 / 8, 2: 2 / 8}, "cream": {0: 5 / 8, 1: 4 / 8, 2: 3 / 8}}


def write_eval(run, k: int, counts: tuple[int, int], fingerprint: str, manifest) -> None:
    """``RUN/eval/M<k>``: per task the first ``count`` of N questions answered right, as the eval stage writes it
    (one part per task, the manifest with label and summary last), and the stage recorded done in the run."""
    from cream_data.stages.evaluate import Examples, _task_table

    out = run / "eval" / f"M{k}"
    writer = io.PartWriter(out, "eval")
    for task, right in zip(TASKS, counts):
        numeric = task == "gsm8k"
        gold = "7" if numeric else "A"
        ex = Examples(task, [f"{task}-{i}" for i in range(N)], [[{"role": "user", "content": "q"}]] * N, [gold] * N,
                      [None if numeric else "ABCD"] * N)
        wrong = "Answer: 8" if numeric else "Answer: B"
        responses = [f"Answer: {gold}" if i < right else wrong for i in range(N)]
        writer.write(_task_table(ex, responses, f"M{k}", "cream"))
    writer.finish({"summary": {"model": f"M{k}", "extractor": "cream"}, "label": f"M{k}"})
    manifest.record_running(f"eval-M{k}", fingerprint, {}, 0)
    manifest.record_done(f"eval-M{k}", 60.0, [out], {})


def make_run(root, method: str, seed: int | None, name: str | None = None):
    """A finished two-iteration run of ``method`` with training seed ``seed`` (None: no seed recorded)."""
    from cream_train.run.manifest import Manifest

    s = 0 if seed is None else seed
    run = root / (name or f"{method}-seed-{s}")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": method, "seed": s, "iterations": 2}))
    manifest = Manifest.open(run)
    manifest.begin(method=method, iterations=2, **({} if seed is None else {"seeds": {"seed": seed}}))
    write_eval(run, 0, M0, "eval-m0", manifest)
    write_eval(run, 1, M1[s], f"eval-m1-seed{s}", manifest)
    write_eval(run, 2, M1[s], f"eval-m2-{method}-seed{s}", manifest)
    write_eval(run, 3, M3[method][s], f"eval-m3-{method}-seed{s}", manifest)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(method, seed) → run directory, for srlm and cream × seeds 0, 1, 2."""
    root = tmp_path_factory.mktemp("seeds")
    return {(m, s): make_run(root, m, s) for m in ("cream", "srlm") for s in SEEDS}


def every_run(runs):
    return [runs[m, s] for s in SEEDS for m in ("cream", "srlm")]  # any order: the study sorts them


def test_each_run_gain_and_the_pooled_gain_per_method(runs):
    from cream_data.reports.study import compare_runs

    study = compare_runs(every_run(runs))
    labels = [f"{m} (seed {s})" for m in ("srlm", "cream") for s in SEEDS]
    assert study["methods"] == labels and study["shared_models"] == [0]  # each seed trains its own M1
    seeds = study["across_seeds"]
    for (m, s), run in runs.items():
        r = seeds["runs"][f"{m} (seed {s})"]
        assert (r["method"], r["seed"], r["k_last"]) == (m, s, 3)
        assert r["avg_m1"] == pytest.approx(sum(M1[s]) / 8) and r["avg_last"] == pytest.approx(sum(M3[m][s]) / 8)
        assert r["delta_m1"] == pytest.approx(GAIN_M1[m][s]) and r["delta_m0"] == pytest.approx(GAIN_M0[m][s])
        assert study["runs"][f"{m} (seed {s})"] == str(run)
    for m in ("srlm", "cream"):
        for key, hand in (("delta_m1", GAIN_M1[m]), ("delta_m0", GAIN_M0[m])):
            x = np.array([hand[s] for s in SEEDS])
            pooled = seeds["methods"][m][key]
            assert pooled["n"] == 3 and pooled["values"] == pytest.approx({str(s): hand[s] for s in SEEDS})
            assert pooled["mean"] == pytest.approx(x.sum() / 3)
            assert pooled["sd"] == pytest.approx(math.sqrt(((x - x.mean()) ** 2).sum() / 2))
    assert seeds["methods"]["srlm"]["delta_m1"]["mean"] == pytest.approx(1 / 12)

    # within a seed, a method against the first method of that seed only (per-question bootstrap as before)
    d = [x for x in study["deltas"] if x["a"] == "cream (seed 1) M3" and x["vs"] != "base"]
    assert [x["b"] for x in d] == ["srlm (seed 1) M3"] and d[0]["delta"] == pytest.approx((5 - 4) / 8)
    # each run from its seed's shared M1: the per-question bootstrap of the run's ΔAvg; no row for M1 itself
    base = {x["a"]: x for x in study["deltas"] if x["vs"] == "base"}
    for (m, s) in runs:
        x = base[f"{m} (seed {s}) M3"]
        assert x["b"] == f"{m} (seed {s}) M1" and x["delta"] == pytest.approx(GAIN_M1[m][s])
        assert x["ci_low"] <= x["delta"] <= x["ci_high"]
    assert not any(x["a"].endswith("M1") for x in study["deltas"])


def test_the_paired_comparison_over_shared_seeds(runs):
    from cream_data.reports.study import compare_runs

    (pair,) = compare_runs(every_run(runs))["across_seeds"]["paired"]
    assert (pair["a"], pair["b"], pair["seeds"], pair["n"]) == ("cream", "srlm", [0, 1, 2], 3)
    d = np.array([GAIN_M1["cream"][s] - GAIN_M1["srlm"][s] for s in SEEDS])  # 2/8, 1/8, 1/8
    assert pair["differences"] == pytest.approx({"0": 0.25, "1": 0.125, "2": 0.125})
    mean, sd = 1 / 6, math.sqrt(3) / 24  # by hand: deviations 1/12, −1/24, −1/24 → var = (6/576) / 2
    assert pair["mean"] == pytest.approx(mean) and pair["sd"] == pytest.approx(sd)
    t = mean / (sd / math.sqrt(3))  # = 4
    assert t == pytest.approx(4.0)
    assert pair["p_value"] == pytest.approx(2 * stats.t.sf(t, df=2))
    assert pair["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert (pair["a_wins"], pair["b_wins"], pair["ties"]) == (3, 0, 0)


def test_the_rendered_section_and_the_written_files(runs, tmp_path):
    from cream_data.reports.study import write_study

    result = write_study(every_run(runs), tmp_path / "study")
    md = result.markdown
    assert "## Across seeds" in md and "labelled `method (seed N)`" in md
    assert "| srlm | 3 | M3 | +8.3 ± 7.2 | 0: +12.5, 1: +0.0, 2: +12.5 | +33.3 ± 7.2 | 0: +37.5, 1: +37.5, " \
           "2: +25.0 |" in md, md
    assert "| cream | 3 | M3 | +25.0 ± 12.5 | 0: +37.5, 1: +12.5, 2: +25.0 | +50.0 ± 12.5 |" in md, md
    half = 100 * stats.t.ppf(0.975, 2) * (math.sqrt(3) / 24) / math.sqrt(3)
    p = 2 * stats.t.sf(4.0, df=2)
    row = (f"| cream − srlm | 3 | 0: +25.0, 1: +12.5, 2: +12.5 | +16.7 | 7.2 | [{100 / 6 - half:+.1f}, "
           f"{100 / 6 + half:+.1f}] | {p:.3f} | 3 / 0 of 3 |")
    assert row in md, md
    assert "| cream (seed 2) | M3 |" in md and "| (shared) | M0 |" in md  # Table 1: one row per run
    assert "little power" in md and "do not cover the variance between training runs" in md
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["across_seeds"]["paired"][0]["p_value"] == pytest.approx(p)
    assert (tmp_path / "study" / "study_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_one_seed_per_method_keeps_the_study_as_it_was(runs):
    from cream_data.reports.study import compare_runs
    from cream_data.reports.study_markdown import to_markdown

    study = compare_runs([runs["cream", 1], runs["srlm", 1]])
    assert study["methods"] == ["srlm", "cream"] and study["shared_models"] == [0, 1]  # M1 shared by the seed
    assert "across_seeds" not in study and "Across seeds" not in to_markdown(study)
    d = next(x for x in study["deltas"] if x["a"] == "cream M3" and x["b"] == "srlm M3")
    assert d["delta"] == pytest.approx((5 - 4) / 8)
    # different seeds, one per method: compared as before (no pooling with a single seed each)
    assert "across_seeds" not in compare_runs([runs["cream", 0], runs["srlm", 2]])


def test_one_method_over_seeds_has_no_pairs(runs):
    from cream_data.reports.study import compare_runs
    from cream_data.reports.study_markdown import to_markdown

    study = compare_runs([runs["cream", s] for s in SEEDS] + [runs["srlm", 0]])
    assert study["across_seeds"]["paired"] == []  # srlm has one seed: nothing to pair
    assert study["across_seeds"]["methods"]["srlm"]["delta_m1"] == {"n": 1, "mean": pytest.approx(1 / 8),
                                                                     "sd": None, "values": {"0": pytest.approx(1 / 8)}}
    md = to_markdown(study)
    assert "| srlm | 1 | M3 | +12.5 | 0: +12.5 |" in md and "nothing to pair" in md


def test_a_run_without_its_seed_is_refused_when_seeds_tell_runs_apart(runs, tmp_path):
    from cream_data.reports.study import compare_runs

    unseeded = make_run(tmp_path, "cream", None, name="old-cream")
    with pytest.raises(CreamError, match=r"old-cream/manifest.json: no training seed recorded \(seeds.seed\)"):
        compare_runs([runs["cream", 1], unseeded, runs["srlm", 1]])
    # alone with one run per method it is compared as before
    assert compare_runs([unseeded, runs["srlm", 0]])["methods"] == ["srlm", "cream"]


def test_the_same_method_and_seed_twice_is_a_user_error(runs, cream_exe, tmp_path):
    """Through the installed console script: one line naming both run directories, exit 2, nothing written."""
    first = runs["srlm", 1]
    again = tmp_path / "srlm-again"
    shutil.copytree(first, again)
    r = refused(cream_exe, tmp_path, "inspect", runs["cream", 1], first, again,
                needles=(f"{again}: method srlm with seed 1 already given by {first}", "one run per method and seed"))
    assert not (tmp_path / "study").exists(), r


def test_avg_takes_the_harness_tasks_beside_table_1():
    """Avg(M_k) is the mean over every task: a harness task (multiple choice by log-likelihood) counts with its acc,
    Table 1's generated-answer tasks with their accuracy; without harness rows it is Table 1's Avg."""
    from cream_data.reports.study_seeds import _averages, run_gains

    table1 = [{"k": 1, "tasks": {"gsm8k": {"accuracy": 0.10}}, "average": {"accuracy": 0.10}},
              {"k": 3, "tasks": {"gsm8k": {"accuracy": 0.20}}, "average": {"accuracy": 0.20}}]
    harness = [{"k": 1, "tasks": {"arc_easy": {"acc": {"value": 0.40}, "acc_norm": {"value": 0.9}},
                                  "siqa": {"acc": {"value": 0.30}}}},
               {"k": 3, "tasks": {"arc_easy": {"acc": {"value": 0.46}}, "siqa": {"acc": {"value": 0.36}}}}]
    assert _averages(table1) == {1: 0.10, 3: 0.20}
    got = _averages(table1, harness)
    assert got[1] == pytest.approx((0.10 + 0.40 + 0.30) / 3) and got[3] == pytest.approx((0.20 + 0.46 + 0.36) / 3)
    gains = run_gains(table1, 3, harness)
    assert gains["delta_m1"] == pytest.approx((0.10 + 0.06 + 0.06) / 3) and gains["delta_m0"] is None


def test_cream_prompt_is_its_own_method_compared_with_cream_no_rc(tmp_path, monkeypatch):
    """cream-prompt (cream with each prompt's own C) is a method of its own in a study: its rows, its pooled gain,
    its paired difference with cream-no-rc within each seed (as cream's), and cream's colour family in the plots."""
    from cream_data.reports.study import compare_runs
    from cream_data.reports.study_plots import COLORS, method_color

    monkeypatch.setitem(M3, "cream-prompt", M3["cream"])
    monkeypatch.setitem(M3, "cream-no-rc", M3["srlm"])
    methods = ("srlm", "cream-no-rc", "cream-prompt")
    study = compare_runs([make_run(tmp_path, m, s) for s in (0, 1) for m in methods])
    assert study["methods"] == [f"{m} (seed {s})" for m in methods for s in (0, 1)]
    for s in (0, 1):
        d = [x for x in study["deltas"] if x["a"] == f"cream-prompt (seed {s}) M3" and x["vs"] != "base"]
        assert [x["b"] for x in d] == [f"srlm (seed {s}) M3", f"cream-no-rc (seed {s}) M3"]
        assert d[1]["delta"] == pytest.approx((sum(M3["cream"][s]) - sum(M3["srlm"][s])) / 8)
    pooled = study["across_seeds"]["methods"]["cream-prompt"]["delta_m1"]
    assert pooled["values"] == pytest.approx({str(s): GAIN_M1["cream"][s] for s in (0, 1)})
    assert method_color("cream-prompt (seed 1)") == COLORS["cream-prompt"] != COLORS["cream"]
