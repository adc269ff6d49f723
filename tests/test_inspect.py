"""`cream inspect`: every summary number against an independent per-row computation, plots, CLI."""

from __future__ import annotations

import json
import statistics
import struct

import numpy as np
import pyarrow as pa
import pytest

from cream_data.tables import io
from cream_data.reports import inspect as report
from tests.support.cli import assert_user_error
from tests.support.tables import SKIPPED, make_labeled, write_labeled

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- numbers
def expected_summary(prefs: pa.Table) -> dict:
    """The same numbers, row by row in plain Python (no shared code with cream_data.reports.inspect)."""
    rows = prefs.to_pylist()
    margins = [r["rewards"][r["chosen_idx"]] - r["rewards"][r["rejected_idx"]] for r in rows]
    with_prev = [r for r in rows if r["prev_rewards"] is not None]
    agree_c = [r["prev_rewards"].index(max(r["prev_rewards"])) == r["chosen_idx"] for r in with_prev]
    agree_r = [r["prev_rewards"].index(min(r["prev_rewards"])) == r["rejected_idx"] for r in with_prev]
    cs = [r["consistency"] for r in rows]
    taus = [r["kendall_tau"] for r in with_prev]
    return {
        "pairs": len(rows),
        "ties_current": sum(len(set(r["rewards"])) < len(r["rewards"]) for r in rows),
        "ties_previous": sum(len(set(r["prev_rewards"])) < len(r["prev_rewards"]) for r in with_prev),
        "with_previous": len(with_prev),
        "agreement_chosen": sum(agree_c) / len(agree_c),
        "agreement_rejected": sum(agree_r) / len(agree_r),
        "c_mean": statistics.fmean(cs), "c_median": statistics.median(cs), "c_std": statistics.pstdev(cs),
        "tau_mean": statistics.fmean(taus), "tau_std": statistics.pstdev(taus),
        "margin_mean": statistics.fmean(margins), "margin_median": statistics.median(margins),
        "weight_mean": statistics.fmean(r["weight"] for r in rows),
    }


def test_summary_matches_a_row_by_row_computation():
    prefs, _ = make_labeled(seed=3, n_prompts=200)
    manifest = {"summary": {"skipped": SKIPPED}}
    s = report.summarize_preferences(prefs, manifest)
    e = expected_summary(prefs)
    assert s["pairs"] == e["pairs"] == 200
    assert s["prompts"] == 200 + 6 and s["skipped"] == SKIPPED and s["skipped_total"] == 6
    assert s["ties_current"] == e["ties_current"] and e["ties_current"] >= 200 // 7
    assert s["ties_previous"] == e["ties_previous"]
    assert s["with_previous"] == e["with_previous"] == 160
    assert s["agreement_chosen"] == pytest.approx(e["agreement_chosen"], abs=1e-12)
    assert s["agreement_rejected"] == pytest.approx(e["agreement_rejected"], abs=1e-12)
    assert 0 < e["agreement_chosen"] < 1  # the data exercises both outcomes
    for got, want in [(s["consistency"]["mean"], e["c_mean"]), (s["consistency"]["median"], e["c_median"]),
                      (s["consistency"]["std"], e["c_std"]), (s["kendall_tau"]["mean"], e["tau_mean"]),
                      (s["kendall_tau"]["std"], e["tau_std"]), (s["margin"]["mean"], e["margin_mean"]),
                      (s["margin"]["median"], e["margin_median"]), (s["weight_mean"], e["weight_mean"])]:
        assert got == pytest.approx(want, abs=1e-12)
    assert s["kendall_tau"]["n"] == 160
    labeled = {"summary": {"prompts": 210, "skipped": SKIPPED, "scope": "dataset"}}
    s2 = report.summarize_preferences(prefs, labeled)  # the labeling stage's own prompt count wins
    assert s2["prompts"] == 210 and s2["scope"] == "dataset"
    assert s["iterations"] == [1] and s["consistency_methods"] == ["kendall"]
    assert s["models"] == ["m1"] and s["prev_models"] == ["m0"]
    assert s["n_responses"]["min"] == 3 and s["n_responses"]["max"] == 5


def test_hand_worked_example():
    """Two prompts worked by hand.

    row a: r = [1, 3, 3, 0] → chosen 1 (first max), rejected 3; tie (3, 3); r' = [5, 1, 2, 0] → argmax 0 ≠ 1,
           argmin 3 = 3; margin 3.
    row b: r = [2, 0, 1], no r'; margin 2.  C = 0.25, 1.0 → mean 0.625, median 0.625, std 0.375.
    """
    prefs, _ = make_labeled(n_prompts=2)
    rows = prefs.to_pylist()
    rows[0].update(rewards=[1.0, 3.0, 3.0, 0.0], prev_rewards=[5.0, 1.0, 2.0, 0.0], chosen_idx=1, rejected_idx=3,
                   n_responses=4, consistency=0.25, weight=0.25, kendall_tau=-0.5,
                   ranks=[3, 1, 2, 4], prev_ranks=[1, 3, 2, 4])
    rows[1].update(rewards=[2.0, 0.0, 1.0], prev_rewards=None, prev_ranks=None, chosen_idx=0, rejected_idx=1,
                   n_responses=3, consistency=1.0, weight=1.0, kendall_tau=None, ranks=[1, 3, 2])
    s = report.summarize_preferences(pa.Table.from_pylist(rows, schema=prefs.schema), None)
    assert s["prompts"] is None and s["skipped"] == {}
    assert s["ties_current"] == 1 and s["ties_previous"] == 0 and s["with_previous"] == 1
    assert s["agreement_chosen"] == 0.0 and s["agreement_rejected"] == 1.0
    assert s["margin"]["mean"] == 2.5 and s["margin"]["median"] == 2.5
    assert s["consistency"]["mean"] == 0.625 and s["consistency"]["std"] == 0.375
    assert s["kendall_tau"] == {"n": 1, "mean": -0.5, "median": -0.5, "std": 0.0, "min": -0.5, "max": -0.5}


def test_padded_lists_and_ties_with_nulls_and_nan():
    col = pa.chunked_array([[[1.0, 2.0], None], [[3.0, None, 3.0], [float("nan"), float("nan")]]],
                           type=pa.list_(pa.float64()))
    mat, present = report.padded(col)
    assert present.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(np.isnan(mat), [[0, 0, 1], [1, 1, 1], [0, 1, 0], [1, 1, 1]])
    assert mat[0, :2].tolist() == [1.0, 2.0] and mat[2, 0] == mat[2, 2] == 3.0
    assert report.has_ties(mat).tolist() == [False, False, True, False]  # NaN never ties
    full, present = report.padded(pa.chunked_array([[[1.0, 2.0], [2.0, 2.0]], [[0.5, None]]]))
    np.testing.assert_array_equal(full, [[1.0, 2.0], [2.0, 2.0], [0.5, np.nan]])
    assert present.all() and report.has_ties(full).tolist() == [False, True, False]


def test_scores_summary_per_scorer_and_model():
    _, scores = make_labeled(seed=1, n_prompts=40)
    rows = scores.to_pylist()
    rows[0]["reward"] = None  # an unparsed judge output
    scores = pa.Table.from_pylist(rows, schema=scores.schema)
    groups = {(g["scorer"], g["model"]): g for g in report.summarize_scores(scores)}
    assert set(groups) == {("current", "m1"), ("previous", "m0")}
    for (scorer, model), g in groups.items():
        rs = [r["reward"] for r in rows if r["scorer"] == scorer and r["model"] == model]
        finite = [x for x in rs if x is not None]
        assert g["rows"] == len(rs) and g["null_or_nonfinite"] == len(rs) - len(finite)
        assert g["mean"] == pytest.approx(statistics.fmean(finite), abs=1e-12)
        assert g["std"] == pytest.approx(statistics.pstdev(finite), abs=1e-12)
        assert (g["min"], g["max"]) == (min(finite), max(finite))
    assert groups[("current", "m1")]["null_or_nonfinite"] == 1


# ---------------------------------------------------------------------------- files and plots
def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_inspect_folder_writes_markdown_json_and_valid_pngs(tmp_path):
    prefs, _ = write_labeled(tmp_path / "lab", seed=2)
    r = report.inspect_folder(tmp_path / "lab")
    out = tmp_path / "lab" / "inspect"
    assert r.files["markdown"] == out / "summary.md"
    for name in ("consistency", "rewards", "margins"):
        w, h = png_size(r.files[name])
        assert 300 <= w <= 2000 and 200 <= h <= 3000, (name, w, h)
        assert r.files[name].stat().st_size > 5_000  # drawn, not blank
    saved = json.loads((out / "summary.json").read_text())
    assert saved["preferences"]["pairs"] == prefs.num_rows
    assert saved["preferences"]["skipped"] == SKIPPED
    assert saved["plots"] == {"consistency": "consistency.png", "margins": "margins.png", "rewards": "rewards.png"}
    md = (out / "summary.md").read_text()
    e = expected_summary(prefs)
    assert f"| pairs | {prefs.num_rows} |" in md
    assert f"{e['c_mean']:.4f}" in md and "all_equal: 3" in md and "![rewards](rewards.png)" in md


def test_inspect_preferences_only_plots_rewards_from_the_lists(tmp_path):
    prefs, _ = make_labeled(seed=4, n_prompts=30)
    io.write_table(prefs, tmp_path / "p.parquet", "preferences")
    r = report.inspect_folder(tmp_path / "p.parquet", tmp_path / "plots")
    assert set(r.files) == {"markdown", "json", "consistency", "margins", "rewards"}
    assert all(p.parent == tmp_path / "plots" for p in r.files.values())
    groups = report.preference_reward_groups(prefs)
    assert sorted(k[0] for k in groups) == ["current", "previous"]
    assert groups[("current", "m1", "")].size == sum(prefs.column("n_responses").to_pylist())
    assert r.summary["preferences"]["prompts"] is None  # no manifest, no skip counts


def test_cli_inspect_prints_summary_and_paths(tmp_path, cli):
    prefs, _ = write_labeled(tmp_path / "lab", seed=5)
    res = cli("inspect", tmp_path / "lab", "--out", tmp_path / "plots")
    assert res.code == 0, res
    e = expected_summary(prefs)
    assert "C mean / median / std" in res.out and f"{e['c_mean']:.4f}" in res.out
    for name in ("summary.md", "summary.json", "consistency.png", "rewards.png", "margins.png"):
        assert str(tmp_path / "plots" / name) in res.out.replace("\n", "")
        assert (tmp_path / "plots" / name).is_file()


def test_cli_inspect_user_errors(tmp_path, cli):
    assert_user_error(cli("inspect", tmp_path / "nope"), "no such file")
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("inspect", tmp_path / "empty"), "no preferences or scores table")
    # Two labeled folders that are not a run (a run dir gets the iteration report: tests/test_run_report.py).
    write_labeled(tmp_path / "labels" / "a", seed=1)
    write_labeled(tmp_path / "labels" / "b", seed=2)
    assert_user_error(cli("inspect", tmp_path / "labels"), "2 preferences tables")
    assert not (tmp_path / "labels" / "inspect").exists()
