"""`cream inspect RUN_DIR`: the iteration report of a run, every number against scipy / plain Python."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import schemas
from cream_data.stages import evaluate
from cream_data.tables import io
from cream_data.reports import run_report
from cream_data.tables import sql
from cream_data.errors import CreamError
from cream_data.stats import wilson
from tests.support.cli import assert_user_error
from tests.support.reports import EVAL, SKIPPED, make_prefs, make_run, ranks_of, write_eval, write_prefs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Z = 1.959963984540054


def expected_measures(prefs):
    """C, tau, rho, TopOrder per prompt with scipy / by hand (no shared code with cream_data.rewards.ranking)."""
    out = {"C": [], "kendall_tau": [], "spearman_rho": [], "top_order": []}
    for r in prefs.to_pylist():
        a, b = r["ranks"], r["prev_ranks"]
        tau = float(stats.kendalltau(a, b).statistic)
        out["kendall_tau"].append(tau)
        out["C"].append((tau + 1) / 2)
        out["spearman_rho"].append(float(stats.spearmanr(a, b).statistic))
        n = len(a)
        out["top_order"].append(float(a.index(1) == b.index(1) and a.index(n) == b.index(n)))
    return out


# ---------------------------------------------------------------------------- numbers
def test_wilson_matches_scipy():
    for x, n in [(0, 4), (4, 4), (3, 10), (1, 6), (57, 100), (1, 1)]:
        ci = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson(x, n)
        assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


def test_every_number_in_report_json(tmp_path):
    run, tables = make_run(tmp_path)
    result = run_report.write_run_report(run)
    rep = json.loads(result.json_path.read_text())
    assert result.json_path == run / "report" / "report.json"
    assert rep["method"] == "srlm" and rep["T"] == 2
    assert rep["tasks"] == ["arc_easy", "siqa", "gsm8k"]  # the paper's order, not alphabetical

    # Table 1: accuracy = mean(correct), Wilson CI from scipy, Avg = mean of task accuracies.
    assert [r["label"] for r in rep["accuracy"]] == ["M0", "M1", "M2"]
    for row in rep["accuracy"]:
        flags = EVAL[row["label"]]
        assert row["model"] == f"hub/{row['label']}"  # the eval manifest's name for the model
        assert set(row["tasks"]) == set(flags)
        for task, fl in flags.items():
            cell = row["tasks"][task]
            ci = stats.binomtest(sum(fl), len(fl)).proportion_ci(method="wilson")
            assert cell["n"] == len(fl) and cell["correct"] == sum(fl)
            assert cell["extracted"] == sum(1 for i in range(len(fl)) if i % 3 != 2)
            assert cell["accuracy"] == pytest.approx(statistics.fmean(fl))
            assert (cell["ci_low"], cell["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
        accs = [statistics.fmean(fl) for fl in flags.values()]
        avg = statistics.fmean(accs)
        half = Z * math.sqrt(sum(p * (1 - p) / len(fl) for p, fl in zip(accs, flags.values()))) / len(accs)
        assert row["average"]["accuracy"] == pytest.approx(avg) and row["average"]["tasks"] == 3
        assert row["average"]["ci_low"] == pytest.approx(max(0.0, avg - half))
        assert row["average"]["ci_high"] == pytest.approx(min(1.0, avg + half))
    assert rep["accuracy"][2]["average"]["accuracy"] == pytest.approx((0.8 + 0.75 + 0.5) / 3)  # by hand
    for row in rep["accuracy"]:  # the same numbers `cream eval` puts in its own summary
        n, correct, _, accuracy, average = evaluate.summarize(io.read_table(row["path"], "eval"), tuple(rep["tasks"]))
        assert {t: c["accuracy"] for t, c in row["tasks"].items()} == pytest.approx(accuracy)
        assert row["average"]["accuracy"] == pytest.approx(average)

    # Table 2: from the rank lists, mean ± population std over prompts.
    assert [r["label"] for r in rep["consistency"]] == ["M1 vs M0", "M2 vs M1"]
    for row in rep["consistency"]:
        prefs = tables[row["iteration"]]
        exp = expected_measures(prefs)
        assert row["n"] == row["pairs"] == prefs.num_rows
        for name, values in exp.items():
            assert row[name]["n"] == len(values)
            assert row[name]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12), name
            assert row[name]["std"] == pytest.approx(statistics.pstdev(values), abs=1e-12), name
        assert 0 < row["top_order"]["mean"] < 1 and row["kendall_tau"]["min"] < 0 < row["kendall_tau"]["mean"]

    # Pairs per iteration, from each manifest's summary.
    for p in rep["pairs"]:
        t = p["iteration"]
        assert p["pairs"] == tables[t].num_rows
        assert p["skipped"] == dict(sorted(SKIPPED[t].items()))
        assert p["skipped_total"] == sum(SKIPPED[t].values())
        assert p["prompts"] == tables[t].num_rows + sum(SKIPPED[t].values())
        assert p["weight_mean"] == 1.0 and p["consistency_method"] == "kendall"

    assert rep == json.loads(json.dumps(run_report.run_report(run) | {"plots": rep["plots"]}))


def test_markdown_tables_and_pngs(tmp_path):
    run, _ = make_run(tmp_path)
    result = run_report.write_run_report(run)
    md = result.md_path.read_text()
    assert md == result.markdown
    assert "## Table 1" in md and "## Table 2" in md and "## Pairs per iteration" in md
    # n per task in the header (shared by every model); percent ± half the Wilson width.
    assert "| model | arc_easy (n=10) | siqa (n=4) | gsm8k (n=6) | Avg | Avg, authors' extraction |" in md
    lo, hi = wilson(8, 10)
    assert f"| M2 | 80.0 ± {100 * (hi - lo) / 2:.1f} |" in md
    assert "| M2 vs M1 | 31 |" in md and "| M1 vs M0 | 40 |" in md
    assert "all_equal: 2, nonfinite_reward: 1" in md and "n_lt_2" not in md  # zero reasons hidden
    assert set(result.plots) == {"accuracy", "consistency"}
    for p in result.plots.values():
        assert p.parent == run / "report" and p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
        assert f"]({p.name})" in md


def test_models_sort_numerically_and_uneven_n_goes_in_the_cell(tmp_path):
    run, _ = make_run(tmp_path, prefs=False)
    write_eval(run, "M10", {"arc_easy": [1, 1, 0, 0, 1], "openbookqa": [1, 0]})
    r = run_report.write_run_report(run)
    assert [x["label"] for x in r.report["accuracy"]] == ["M0", "M1", "M2", "M10"]
    assert r.report["tasks"] == ["arc_easy", "openbookqa", "siqa", "gsm8k"]
    assert "| model | arc_easy | openbookqa (n=2) | siqa (n=4) | gsm8k (n=6) | Avg | Avg, authors' extraction |" in r.markdown
    lo, hi = wilson(3, 5)
    avg = (0.6 + 0.5) / 2
    half = Z * math.sqrt(0.6 * 0.4 / 5 + 0.5 * 0.5 / 2) / 2
    assert (f"| M10 | 60.0 ± {100 * (hi - lo) / 2:.1f} (n=5) | 50.0 ± " in r.markdown
            and f"| – | – | {100 * avg:.1f} ± {100 * half:.1f} |" in r.markdown)
    assert "| M0 | 30.0 ± 24.8 (n=10) | – |" in r.markdown


def test_iteration_without_prev_ranks_is_na(tmp_path):
    run, _ = make_run(tmp_path, prefs=False)
    write_prefs(run, 1, 12, seed=5, with_prev=False)
    write_prefs(run, 2, 9, seed=6)
    result = run_report.write_run_report(run)
    first, second = result.report["consistency"]
    assert first["n"] == 0 and first["pairs"] == 12 and first["C"]["mean"] is None
    assert second["n"] == 9
    assert "| M1 vs M0 | 0 | n/a | n/a | n/a | n/a |" in result.markdown
    assert json.loads(result.json_path.read_text())["consistency"][0]["C"]["mean"] is None


def test_eval_only_and_preferences_only_runs(tmp_path):
    run, _ = make_run(tmp_path, prefs=False, name="eval-only")  # manifest + config mark it as a run
    assert run_report.is_run_dir(run)
    r = run_report.write_run_report(run)
    assert [x["label"] for x in r.report["accuracy"]] == ["M0", "M1", "M2"] and r.report["consistency"] == []
    assert "No preferences tables yet" in r.markdown and set(r.plots) == {"accuracy"}

    run, tables = make_run(tmp_path, evals=False, name="prefs-only")
    (run / "manifest.json").unlink()  # iter-<t> folders alone also mark a run
    assert run_report.is_run_dir(run)
    r = run_report.write_run_report(run, tmp_path / "elsewhere")
    assert r.report["accuracy"] == [] and r.report["method"] is None
    assert [x["n"] for x in r.report["consistency"]] == [40, 31]
    assert "No eval tables yet" in r.markdown and set(r.plots) == {"consistency"}
    assert r.md_path == tmp_path / "elsewhere" / "report.md" and not (run / "report").exists()


def test_bad_rank_lists_are_one_line_errors(tmp_path):
    run, _ = make_run(tmp_path, evals=False, prefs=False)
    prefs = make_prefs(1, 5, seed=0).to_pylist()
    prefs[2]["prev_ranks"] = [1, 1, 2, 3, 4][: len(prefs[2]["ranks"])]  # not a permutation
    io.write_table(pa.Table.from_pylist(prefs, schema=schemas.get("preferences").arrow),
                   run / "iter-1" / "preferences", "preferences")
    with pytest.raises(CreamError, match="iter-1/preferences.*permutations"):
        run_report.run_report(run)


# ---------------------------------------------------------------------------- CLI and SQL
def test_cli_inspect_run_prints_tables_and_paths(tmp_path, cli):
    run, _ = make_run(tmp_path)
    r = cli("inspect", run)
    assert r.code == 0, r
    assert "## Table 1" in r.out and "## Table 2" in r.out and "M2 vs M1" in r.out
    for name in ("report.md", "report.json", "accuracy.png", "consistency.png"):
        assert str(run / "report" / name) in r.out
    # A labeled folder inside the run is still the single-folder summary.
    r = cli("inspect", run / "iter-1")
    assert r.code == 0 and (run / "iter-1" / "inspect" / "summary.json").exists()


def test_cli_run_without_tables_is_a_user_error(tmp_path, cli):
    run = tmp_path / "run"
    (run / "iter-1" / "responses").mkdir(parents=True)  # started, nothing finished yet
    assert_user_error(cli("inspect", run), str(run), "no eval tables")
    assert not (run / "report").exists()


def test_cream_sql_sees_every_iteration(tmp_path):
    run, tables = make_run(tmp_path)
    got, _ = sql.query(run, "SELECT iteration, count(*) AS n FROM preferences GROUP BY 1 ORDER BY 1")
    assert got.to_pylist() == [{"iteration": 1, "n": 40}, {"iteration": 2, "n": 31}]


def test_import_is_light():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, cream_data.reports.run_report\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'duckdb') if m in sys.modules]\nassert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_table2_prefers_scores_current_vs_previous_rankings():
    """For judge/oracle methods the pairs' ranks are not DPO ranks: Table 2 is measured on the scores table."""
    import numpy as np
    import pyarrow as pa
    from scipy.stats import kendalltau, rankdata

    from cream_data.reports.run_tables import rank_measures, ranks_from_scores

    rng = np.random.default_rng(0)
    rows, expected = [], []
    for p in range(30):
        n = 4 if p % 2 else 5
        cur, prev = rng.normal(size=n), rng.normal(size=n)
        if p == 7:
            cur[1] = np.nan  # a non-finite reward: left out
        for i in range(n):
            rows += [dict(prompt_id=f"q{p:02d}", response_idx=i, scorer="current", reward=float(cur[i])),
                     dict(prompt_id=f"q{p:02d}", response_idx=i, scorer="previous", reward=float(prev[i])),
                     dict(prompt_id=f"q{p:02d}", response_idx=i, scorer="judge", reward=1.0)]
        if p != 7:
            expected.append(kendalltau(rankdata(-cur, method="ordinal"), rankdata(-prev, method="ordinal")).statistic)
    ranks = ranks_from_scores(pa.Table.from_pylist(rows))
    assert ranks.num_rows == 29
    m = rank_measures(ranks)
    assert np.mean(m["kendall_tau"]) == pytest.approx(np.mean(expected), abs=1e-12)
    assert np.mean(m["C"]) == pytest.approx((np.mean(expected) + 1) / 2, abs=1e-12)
    assert ranks_from_scores(pa.Table.from_pylist([r for r in rows if r["scorer"] != "previous"])) is None


# ---------------------------------------------------------------------------- table 2: no ranking
def label_iteration(run, t, cur, prev, with_scores=True):
    """iter-<t>/scores and iter-<t>/preferences as `cream label` writes them (pairs, skips, manifest summary)."""
    from cream_data.rewards.pairing import build_preferences
    from tests.support.pairing import make_tables

    responses, scores = make_tables(cur, prev, iteration=t)
    prefs, summary = build_preferences(responses, scores)
    io.write_table(prefs, run / f"iter-{t}" / "preferences", "preferences",
                   manifest_extra={"summary": summary.to_dict()})
    if with_scores:
        io.write_table(scores, run / f"iter-{t}" / "scores", "scores")
    return prefs, summary


def table2_line(md: str, label: str) -> str:
    (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {label} |")]
    return line


@pytest.mark.parametrize("with_scores", [True, False])
def test_table2_iteration_without_any_strict_ranking_says_no_ranking(tmp_path, with_scores):
    """Every current reward exactly 0 (M_t = M_{t-1}): all prompts skipped as all-equal, nothing to measure."""
    run, _ = make_run(tmp_path, evals=False, prefs=False)
    rng = np.random.default_rng(3)
    prev = [rng.normal(size=2).tolist() for _ in range(8)]
    prefs, summary = label_iteration(run, 1, [[0.0, 0.0]] * 8, prev, with_scores)
    assert prefs.num_rows == 0 and summary.skipped["all_equal"] == 8
    label_iteration(run, 2, [[1.0, 2.0, 0.0], [0.5, 0.1, 0.2]], [[1.0, 3.0, 2.0], [0.3, 0.2, 0.1]], with_scores)
    result = run_report.write_run_report(run)
    first, second = result.report["consistency"]
    assert first["n"] == 0 and first["all_equal"] == 8 and first["C"]["mean"] is None
    line = table2_line(result.markdown, "M1 vs M0")
    assert line.count("no ranking (8 all-equal)") == len(run_report.MEASURES) and "±" not in line and "n/a" not in line
    assert second["n"] == 2 and second["all_equal"] == 0
    assert second["kendall_tau"]["mean"] == pytest.approx(1 / 3) and second["C"]["mean"] == pytest.approx(2 / 3)
    assert "±" in table2_line(result.markdown, "M2 vs M1")
    # the scorer-agreement section sees the same: iteration 1 all undefined (every current reward equal)
    assert set(result.plots) == ({"consistency", "agreement"} if with_scores else {"consistency"})
    assert "no ranking" in result.markdown.split("## Pairs")[0]
    if with_scores:
        (pair1,), (pair2,) = (r["matrix"] for r in result.report["agreement"])
        assert (pair1["n"], pair1["undefined"], pair1["tau_mean"]) == (0, 8, None)
        assert (pair2["n"], pair2["undefined"]) == (2, 0) and pair2["tau_mean"] == pytest.approx(1 / 3)


def test_table2_leaves_out_prompts_without_a_strict_ranking(tmp_path):
    """A prompt whose current or previous rewards are all equal has no ranking to compare: not counted."""
    run, _ = make_run(tmp_path, evals=False, prefs=False)
    cur = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0], [0.2, 0.1, 0.3]]
    prev = [[1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.1, 0.2, 0.3]]
    label_iteration(run, 1, cur, prev)
    (row,) = run_report.run_report(run)["consistency"]
    taus = [stats.kendalltau(ranks_of(cur[i]), ranks_of(prev[i])).statistic for i in (0, 3)]
    assert row["n"] == 2 and row["all_equal"] == 2
    assert row["kendall_tau"]["mean"] == pytest.approx(np.mean(taus), abs=1e-12)


@pytest.mark.parametrize("with_scores", [True, False])
def test_table2_tau_b_on_raw_rewards_shows_ties(tmp_path, with_scores):
    """Integer-valued rewards (a judge, an oracle) tie often: ordinal ranks break the ties by index, tau-b on the
    raw rewards keeps them. Both are in Table 2; tau-b equals scipy's kendalltau on the rewards."""
    from scipy import stats

    run, _ = make_run(tmp_path, evals=False, prefs=False)
    cur = [[1.0, 1.0, 0.0], [2.0, 0.0, 0.0, 1.0], [0.0, 1.0, 2.0]]
    prev = [[2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 2.0], [0.0, 2.0, 1.0]]
    label_iteration(run, 1, cur, prev, with_scores)
    row = run_report.write_run_report(run).report["consistency"][0]
    want_b = [stats.kendalltau(a, b).statistic for a, b in zip(cur, prev)]
    assert row["n"] == 3 and row["kendall_tau_b"]["mean"] == pytest.approx(np.mean(want_b))
    ordinal = [stats.kendalltau(stats.rankdata(a, "ordinal"), stats.rankdata(b, "ordinal")).statistic
               for a, b in zip(cur, prev)]
    assert row["kendall_tau"]["mean"] == pytest.approx(np.mean(ordinal))
    assert row["kendall_tau"]["mean"] != pytest.approx(row["kendall_tau_b"]["mean"])  # the ties show


def test_table1_shows_the_authors_extraction_beside_ours(tmp_path):
    """The report rescores the stored generations with the authors' rules: where the two extractors part (the
    article "a" read as option A; "###" outranking "Answer:"), the authors' column differs, as computed by hand."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"method": "cream", "T": 1, "stages": {}}))
    (run / "config.yaml").write_text("method: cream\n")
    gens = [  # (task, response, gold, right by cream, right by authors)
        ("arc_easy", "Answer: C", "C", True, True),
        ("arc_easy", "I pick C, since it is a dog.", "C", False, False),   # authors read "a" → A
        ("arc_easy", "I pick A, it is a dog.", "A", False, True),         # the flaw helps here
        ("arc_easy", "Answer: b. Then again, answer: c", "C", True, False),
        ("gsm8k", "### Step 1\nAnswer: 18", "18", True, False),
        ("gsm8k", "Answer: 7", "7", True, True),
    ]
    from cream_data.stages.evaluate import score

    rows = []
    for i, (task, resp, gold, cream_ok, authors_ok) in enumerate(gens):
        pred, ok = score(task, resp, gold, "ABCD" if task != "gsm8k" else None)
        assert ok == cream_ok and score(task, resp, gold, None, "authors")[1] == authors_ok
        rows.append({"model": "m", "task": task, "example_id": str(i), "response": resp, "prediction": pred,
                     "answer": gold, "correct": ok})
    io.write_table(pa.Table.from_pylist(rows, schema=schemas.get("eval").arrow), run / "eval" / "M0", "eval",
                   manifest_extra={"label": "M0", "summary": {"model": "m", "extractor": "cream"}})
    result = run_report.write_run_report(run)
    row = result.report["accuracy"][0]
    assert row["extractor"] == "cream"
    assert row["average"]["accuracy"] == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert row["authors"]["tasks"] == {"arc_easy": 2 / 4, "gsm8k": 1 / 2}
    assert row["authors"]["average"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    line = next(ln for ln in result.markdown.splitlines() if ln.startswith("| M0 "))
    assert line.rstrip(" |").endswith("50.0")
