"""Two label outputs of one iteration (`cream label … --out lab` and a re-pairing `--out lab-spearman`, as in the
README's tour) stay apart: `cream sql` says which table each row came from (`table_path`), and `cream publish`
refuses to merge them into one split unless `--exclude` picks one. Built without any model."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from cream_data.errors import CreamError
from cream_data.publish import hub
from cream_data.tables import sql
from cream_data.tables.io import read_table, write_table
from tests.support import REPO
from tests.support.cli import assert_user_error, snapshot
from tests.support.published import make_run, make_tables

FOLDERS = ("lab/preferences", "lab-spearman/preferences")


def two_label_folders(root: Path, n_prompts: int = 6, n_spearman: int = 4, t: int = 1) -> dict[str, pa.Table]:
    """The tour's layout: ``responses/``, ``lab/{scores,preferences}`` and ``lab-spearman/preferences`` (the same
    scores re-paired with Spearman's ρ, here over the first ``n_spearman`` prompts), all of iteration ``t``."""
    tables = make_tables(t, n_prompts, seed=11)
    write_table(tables["responses"], root / "responses", "responses")
    write_table(tables["scores"], root / "lab" / "scores", "scores")
    write_table(tables["preferences"], root / "lab" / "preferences", "preferences",
                manifest_extra={"config": {"consistency": "kendall"}})
    sp = tables["preferences"].slice(0, n_spearman)
    c = [(float(spearmanr(r, p).statistic) + 1) / 2
         for r, p in zip(sp.column("ranks").to_pylist(), sp.column("prev_ranks").to_pylist())]
    for name, values in (("consistency", pa.array(c)), ("weight", pa.array(c)),
                         ("consistency_method", pa.array(["spearman"] * sp.num_rows))):
        i = sp.schema.get_field_index(name)
        sp = sp.set_column(i, sp.schema.field(i), values.cast(sp.schema.field(i).type))
    write_table(sp, root / "lab-spearman" / "preferences", "preferences",
                manifest_extra={"config": {"consistency": "spearman", "rebuilt_from_scores": str(root / "lab")}})
    return {"lab/preferences": tables["preferences"], "lab-spearman/preferences": sp, "lab/scores": tables["scores"],
            "responses": tables["responses"]}


@pytest.fixture
def labeled(tmp_path) -> tuple[Path, dict[str, pa.Table]]:
    root = tmp_path / "runs" / "x"
    return root, two_label_folders(root)


def direct(root: Path, rel: str) -> pa.Table:
    """A table read straight from its Parquet parts with pyarrow (not through cream or DuckDB)."""
    return pq.read_table(root / rel)


# ------------------------------------------------------------------------------------------- cream sql
def test_every_view_says_which_table_a_row_came_from(labeled):
    root, tables = labeled
    for view, want in (("preferences", sorted(FOLDERS)), ("scores", ["lab/scores"]), ("responses", ["responses"])):
        t, _ = sql.query(root, f"SELECT DISTINCT table_path FROM {view} ORDER BY 1")
        assert t.column("table_path").to_pylist() == want
    # the same query on one label folder, or on the table itself: paths relative to what was queried
    t, _ = sql.query(root / "lab", "SELECT DISTINCT table_path FROM preferences")
    assert t.to_pylist() == [{"table_path": "preferences"}]
    t, _ = sql.query(root / "lab-spearman" / "preferences", "SELECT DISTINCT table_path FROM preferences")
    assert t.to_pylist() == [{"table_path": "preferences"}]


def test_a_count_grouped_by_table_path_is_each_folders_own(labeled):
    root, _ = labeled
    t, _ = sql.query(root, "SELECT table_path, count(*) AS pairs, avg(consistency) AS c, "
                           "min(consistency_method) AS m FROM preferences GROUP BY table_path ORDER BY table_path")
    got = {r["table_path"]: r for r in t.to_pylist()}
    assert set(got) == set(FOLDERS)
    for rel in FOLDERS:
        d = direct(root, rel)
        assert got[rel]["pairs"] == d.num_rows
        assert got[rel]["c"] == pytest.approx(pc.mean(d.column("consistency")).as_py(), rel=1e-12)
        assert got[rel]["m"] == d.column("consistency_method")[0].as_py()
    assert got["lab/preferences"]["pairs"] == 6 and got["lab-spearman/preferences"]["pairs"] == 4
    # the label folder, for joining a folder's preferences with its own scores
    t, _ = sql.query(root, """
        SELECT parse_dirpath(p.table_path) AS folder, count(*) AS n FROM preferences p JOIN scores s
          ON parse_dirpath(s.table_path) = parse_dirpath(p.table_path) AND s.prompt_id = p.prompt_id
         AND s.response_idx = p.chosen_idx AND s.scorer = 'current'
        GROUP BY ALL""")
    assert t.to_pylist() == [{"folder": "lab", "n": 6}]  # lab-spearman holds no scores of its own


def test_a_run_directory_keeps_one_table_per_iteration(tmp_path):
    """`cream run`'s layout (one label folder per iteration, iter-<t>/): table_path and iteration agree."""
    run = tmp_path / "run"
    tables = make_run(run)
    t, _ = sql.query(run, "SELECT table_path, iteration, count(*) AS n FROM preferences GROUP BY ALL ORDER BY 1")
    assert t.to_pylist() == [{"table_path": f"iter-{i}/preferences", "iteration": i,
                              "n": tables[i]["preferences"].num_rows} for i in (1, 2)]
    splits, _ = hub.collect(run)
    assert [(s.name, s.sources) for s in splits["preferences"]] == [("iter_1", ["iter-1/preferences"]),
                                                                      ("iter_2", ["iter-2/preferences"])]


# ------------------------------------------------------------------------------------------- cream publish
def test_publish_refuses_two_label_sets_of_one_iteration(labeled, tmp_path, cream_exe):
    root, _ = labeled
    out = tmp_path / "hub"
    before = snapshot(tmp_path)
    r = cream_exe("publish", root, "--repo-id", "me/x", "--dry-run", "--out", out)
    assert_user_error(r, "iteration 1", "lab/preferences", "lab-spearman/preferences",
                      "--exclude lab-spearman", "--exclude lab)")
    assert not out.exists()
    assert snapshot(tmp_path) == before  # nothing written, no staging folder left


def test_exclude_picks_one_label_set(labeled, tmp_path, cli):
    root, tables = labeled
    r = cli("publish", root, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "hub", "--exclude", "lab-spearman")
    assert r.code == 0, r
    got = read_table(tmp_path / "hub" / "data" / "preferences" / "train-00000-of-00001.parquet", "preferences")
    got = got.drop_columns(["ref_chosen_logps", "ref_rejected_logps"])  # TRL's copies of chosen/rejected_logp
    assert got.to_pylist() == tables["lab/preferences"].to_pylist()
    assert (tmp_path / "hub" / "data" / "scores").is_dir()

    folder = hub.build(root, tmp_path / "hub2", "me/x", exclude=["lab"])
    got = read_table(folder / "data" / "preferences" / "train-00000-of-00001.parquet", "preferences")
    got = got.drop_columns(["ref_chosen_logps", "ref_rejected_logps"])  # TRL's copies of chosen/rejected_logp
    assert got.to_pylist() == tables["lab-spearman/preferences"].to_pylist()
    assert not (folder / "data" / "scores").exists()  # lab's scores went with it
    assert (folder / "data" / "responses").is_dir()

    assert_user_error(cli("publish", root, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "hub3",
                          "--exclude", "lab-spearmann"), "--exclude lab-spearmann", "no such")
    assert not (tmp_path / "hub3").exists()


def test_loading_preferences_from_the_whole_folder_names_both_tables(labeled):
    """hub.load_preferences of such a folder cannot choose either: it names both paths to pass instead."""
    root, _ = labeled
    with pytest.raises(CreamError) as err:
        hub.load_preferences(str(root))
    msg = str(err.value)
    assert str(root / "lab" / "preferences") in msg and str(root / "lab-spearman" / "preferences") in msg
    assert "--exclude" not in msg


def test_an_unknown_iteration_and_a_numbered_one_do_not_share_the_train_split(tmp_path):
    """Scores have no iteration column: outside an iter-<t> folder their iteration is unknown, yet a single
    iteration is published as `train` too, so the two would merge."""
    root = tmp_path / "mixed"
    scores = make_tables(1, 3, seed=2)["scores"]
    write_table(scores, root / "iter-1" / "scores", "scores")
    write_table(scores, root / "lab" / "scores", "scores")
    with pytest.raises(CreamError, match=r"2 scores tables for split 'train' \(iter-1/scores, lab/scores\)"):
        hub.collect(root)
    assert [s.sources for s in hub.collect(root, exclude=["lab"])[0]["scores"]] == [["iter-1/scores"]]


# ------------------------------------------------------------------------------------------- the README's tour
def tour_sql_line() -> tuple[list[str], str]:
    """The `cream sql` command of README.md's "A short tour" block (as argv) and the comment line above it."""
    text = (REPO / "README.md").read_text()
    block = text.split("## A short tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("cream sql "))
    return shlex.split(lines[i], comments=True), lines[i - 1]


def test_the_tours_sql_line_counts_each_label_folder(tmp_path, cream_exe):
    argv, comment = tour_sql_line()
    assert argv[:3] == ["cream", "sql", "runs/x"] and "table_path" in argv[3]
    # the tour's folder: 8 prompts (subset-1 of 16 split in 2), 4 responses each, labeled twice
    root = tmp_path / "runs" / "x"
    two_label_folders(root, n_prompts=8, n_spearman=8)
    r = cream_exe(*argv[1:], cwd=tmp_path)  # as written: `runs/x` relative to the current folder
    assert r.code == 0, r
    rows = [[c.strip() for c in ln.strip().strip("│┃").split("│")]
            for ln in r.out.splitlines() if "preferences" in ln]
    got = {row[0]: (float(row[1]), int(row[2])) for row in rows}
    want = {rel: (round(pc.mean(direct(root, rel).column("consistency")).as_py(), 3), direct(root, rel).num_rows)
            for rel in FOLDERS}
    assert got == want
    assert [row[0] for row in rows] == sorted(FOLDERS)  # ordered as the query says
    # the comment above the line says what it prints: both folders, and the pairs of each
    assert all(rel in comment for rel in FOLDERS), comment
    n = int(re.search(r"(\d+) pairs each", comment).group(1))
    assert {pairs for _, pairs in got.values()} == {n}
