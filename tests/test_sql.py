"""`cream sql`: views over real Parquet tables, the iteration union, output formats, and read-only refusals."""

from __future__ import annotations

import csv
import io as stdio
import json
import os

import pyarrow as pa
import pytest

from cream_data.tables import io
from cream_data.tables import sql
from cream_data.errors import CreamError
from cream_data.tables.iterations import iteration_from_path
from tests.support.cli import assert_user_error
from tests.support.tables import make_labeled, write_labeled


@pytest.fixture
def run_dir(tmp_path):
    """A run with two iterations, each with preferences + scores, and an eval table at the top."""
    run = tmp_path / "run"
    p1, s1 = write_labeled(run / "iter-1", seed=1, n_prompts=12, iteration=1, model="m1", prev_model="m0")
    p2, s2 = write_labeled(run / "iter-2", seed=2, n_prompts=9, iteration=2, model="m2", prev_model="m1")
    ev = pa.table({"model": ["m1", "m1", "m2"], "task": ["gsm8k", "arc_easy", "gsm8k"],
                   "example_id": ["a", "b", "a"], "response": ["x", "y", "z"], "prediction": ["1", "B", "2"],
                   "answer": ["1", "C", "2"], "correct": [True, False, True]})
    io.write_table(ev, run / "eval.parquet", "eval")
    return run, (p1, s1), (p2, s2)


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_views_count_rows_of_every_table(run_dir):
    run, (p1, s1), (p2, s2) = run_dir
    t, truncated = sql.query(run, "SELECT (SELECT count(*) FROM preferences) AS p, (SELECT count(*) FROM scores) AS s,"
                                  " (SELECT count(*) FROM eval) AS e")
    assert not truncated
    assert t.to_pylist() == [{"p": p1.num_rows + p2.num_rows, "s": s1.num_rows + s2.num_rows, "e": 3}]
    names = sql.query(run, "SHOW TABLES")[0].column("name").to_pylist()
    assert sorted(names) == ["eval", "preferences", "scores"]  # no helper views leak


def test_iteration_union_takes_the_column_or_the_path(run_dir):
    run, (p1, s1), (p2, s2) = run_dir
    t, _ = sql.query(run, "SELECT iteration, count(*) AS n, max(model) AS model FROM scores "
                          "WHERE scorer = 'current' GROUP BY iteration ORDER BY iteration")
    cur = lambda s: sum(1 for r in s.to_pylist() if r["scorer"] == "current")  # noqa: E731
    assert t.to_pylist() == [{"iteration": 1, "n": cur(s1), "model": "m1"},
                             {"iteration": 2, "n": cur(s2), "model": "m2"}]
    t, _ = sql.query(run, "SELECT iteration, count(*) AS n FROM preferences GROUP BY ALL ORDER BY 1")
    assert t.to_pylist() == [{"iteration": 1, "n": 12}, {"iteration": 2, "n": 9}]
    t, _ = sql.query(run, "SELECT DISTINCT iteration FROM eval")
    assert t.to_pylist() == [{"iteration": None}]  # not under an iter-<t> folder
    # the iteration column of the table itself wins over the folder name
    prefs, _ = make_labeled(seed=3, n_prompts=4, iteration=7)
    io.write_table(prefs, run / "iter-3" / "preferences", "preferences")
    t, _ = sql.query(run, "SELECT iteration, count(*) AS n FROM preferences GROUP BY ALL ORDER BY 1")
    assert t.to_pylist()[-1] == {"iteration": 7, "n": 4}


def test_join_scores_with_preferences_recovers_the_chosen_reward(run_dir):
    run, (p1, _), (p2, _) = run_dir
    t, _ = sql.query(run, """
        SELECT p.prompt_id, s.reward AS chosen_reward, p.rewards[p.chosen_idx + 1] AS listed
        FROM preferences p JOIN scores s
          ON s.prompt_id = p.prompt_id AND s.response_idx = p.chosen_idx AND s.scorer = 'current'
         AND s.iteration = p.iteration
        ORDER BY p.prompt_id""")
    want = sorted((r["prompt_id"], r["rewards"][r["chosen_idx"]]) for r in p1.to_pylist() + p2.to_pylist())
    assert [(r["prompt_id"], r["chosen_reward"]) for r in t.to_pylist()] == want
    assert all(r["chosen_reward"] == r["listed"] for r in t.to_pylist())


def test_a_single_table_folder_and_a_single_file(tmp_path):
    prefs, scores = write_labeled(tmp_path / "lab", seed=4, n_prompts=5)
    t, _ = sql.query(tmp_path / "lab" / "scores", "SELECT count(*) AS n, count(iteration) AS it FROM scores")
    assert t.to_pylist() == [{"n": scores.num_rows, "it": 0}]
    io.write_table(prefs, tmp_path / "prefs.parquet", "preferences")
    t, _ = sql.query(tmp_path / "prefs.parquet", "SELECT sum(n_responses) AS n FROM preferences")
    assert t.to_pylist() == [{"n": sum(prefs.column("n_responses").to_pylist())}]


def test_limit_reports_truncation(run_dir):
    run, *_ = run_dir
    t, truncated = sql.query(run, "SELECT * FROM scores", limit=5)
    assert t.num_rows == 5 and truncated
    t, truncated = sql.query(run, "SELECT * FROM eval", limit=3)
    assert t.num_rows == 3 and not truncated


def test_incomplete_tables_are_not_views(tmp_path):
    prefs, scores = write_labeled(tmp_path / "lab", seed=5, n_prompts=5)
    w = io.PartWriter(tmp_path / "lab" / "partial", "scores")
    w.write(scores)  # no finish(): no manifest, so not a complete table
    t, _ = sql.query(tmp_path / "lab", "SELECT count(*) AS n FROM scores")
    assert t.to_pylist() == [{"n": scores.num_rows}]


# ---------------------------------------------------------------------------- CLI and formats
def test_cli_csv_and_json_parse_back(run_dir, cli):
    run, (p1, _), (p2, _) = run_dir
    q = "SELECT prompt_id, iteration, consistency, rewards, chosen FROM preferences ORDER BY prompt_id"
    want = sorted(p1.to_pylist() + p2.to_pylist(), key=lambda r: r["prompt_id"])

    res = cli("sql", run, q, "--format", "json")
    assert res.code == 0, res
    got = json.loads(res.out)
    assert [r["prompt_id"] for r in got] == [r["prompt_id"] for r in want]
    assert [r["rewards"] for r in got] == [r["rewards"] for r in want]
    assert [r["chosen"] for r in got] == [r["chosen"] for r in want]
    assert [r["consistency"] for r in got] == [r["consistency"] for r in want]

    res = cli("sql", run, q, "--format", "csv")
    assert res.code == 0, res
    rows = list(csv.DictReader(stdio.StringIO(res.out)))
    assert len(rows) == len(want)
    assert [float(r["consistency"]) for r in rows] == [r["consistency"] for r in want]  # repr round-trips
    assert [json.loads(r["rewards"]) for r in rows] == [r["rewards"] for r in want]
    assert [int(r["iteration"]) for r in rows] == [r["iteration"] for r in want]


def test_cli_table_format_limit_and_default_path(run_dir, cli, monkeypatch):
    run, *_ = run_dir
    res = cli("sql", run, "SELECT model, task, correct FROM eval ORDER BY task", "--limit", "2")
    assert res.code == 0, res
    assert "arc_easy" in res.out and "3 row" not in res.out and "2 row(s) (more rows" in res.out
    monkeypatch.chdir(run)  # PATH defaults to the current folder
    res = cli("sql", "SELECT count(*) AS n FROM eval", "--format", "csv")
    assert res.out.splitlines() == ["n", "3"]


def test_json_nan_becomes_null(tmp_path, cli):
    prefs, scores = make_labeled(seed=6, n_prompts=2)
    rows = scores.to_pylist()
    rows[0]["reward"] = float("nan")
    # cream's writers refuse NaN now; a file from elsewhere may still hold one, and JSON has no NaN: null
    import pyarrow.parquet as pq

    import schemas

    table = pa.Table.from_pylist(rows, schema=scores.schema).replace_schema_metadata(
        {schemas.META_SCHEMA: b"scores", schemas.META_VERSION: str(schemas.CURRENT_VERSION).encode()})
    pq.write_table(table, tmp_path / "s.parquet")
    res = cli("sql", tmp_path / "s.parquet", "SELECT reward FROM scores LIMIT 1", "--format", "json")
    assert json.loads(res.out) == [{"reward": None}]


# ---------------------------------------------------------------------------- read-only
REFUSED = [
    ("COPY preferences TO '{out}/x.parquet'", "read-only"),
    ("COPY (SELECT 1) TO '{out}/x.csv' (FORMAT csv)", "read-only"),
    ("CREATE TABLE t AS SELECT * FROM scores", "read-only"),
    ("CREATE VIEW v AS SELECT 1", "read-only"),
    ("INSERT INTO scores SELECT * FROM scores", "read-only"),
    ("DELETE FROM scores", "read-only"),
    ("ATTACH '{out}/db.duckdb' AS d", "read-only"),
    ("INSTALL httpfs", "read-only"),
    ("LOAD httpfs", "read-only"),
    ("SET enable_external_access = true", "read-only"),
    ("EXPORT DATABASE '{out}/exp'", "read-only"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}/x.csv'", "read-only"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT 1; COPY (SELECT 1) TO '{out}/x.csv'", "one statement"),
    ("SELECT * FROM read_csv('{secret}')", "disabled by configuration"),
    ("SELECT * FROM read_parquet('{secret_pq}')", "disabled by configuration"),
    ("SELECT * FROM glob('{out}/*')", "disabled by configuration"),
    ("SELEC 1", "syntax error"),
    ("SELECT nope FROM scores", "nope"),
    ("SELECT * FROM responses", "responses"),
]


@pytest.mark.parametrize("statement,needle", REFUSED)
def test_refused_with_one_line_and_no_file(run_dir, cli, tmp_path, statement, needle):
    run, *_ = run_dir
    out = tmp_path / "outside"
    out.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    io.write_table(make_labeled(n_prompts=1)[1], tmp_path / "other.parquet", "scores")
    before = tree(run)
    res = cli("sql", run, statement.format(out=out, secret=secret, secret_pq=tmp_path / "other.parquet"))
    assert_user_error(res, needle)
    assert os.listdir(out) == [] and tree(run) == before


def test_explain_and_pragma_table_info_are_allowed(run_dir):
    run, *_ = run_dir
    t, _ = sql.query(run, "PRAGMA table_info('preferences')")
    assert "consistency" in t.column("name").to_pylist() and "iteration" in t.column("name").to_pylist()
    t, _ = sql.query(run, "EXPLAIN SELECT count(*) FROM scores")
    assert t.num_rows >= 1
    t, _ = sql.query(run, "WITH x AS (SELECT weight FROM preferences) SELECT count(*) AS n FROM x")
    assert t.to_pylist()[0]["n"] == 21


def test_even_a_statement_past_the_check_cannot_touch_files(run_dir, tmp_path):
    """Defence in depth: the connection itself has external access off and its configuration locked."""
    import duckdb

    run, *_ = run_dir
    con, views = sql.connect(run)
    assert sorted(views) == ["eval", "preferences", "scores"]
    target = tmp_path / "escape.csv"
    for stmt in (f"COPY (SELECT 1) TO '{target}'", "SET enable_external_access = true",
                 "RESET lock_configuration", f"ATTACH '{tmp_path / 'x.db'}'"):
        with pytest.raises(duckdb.Error):
            con.execute(stmt)
    # writing over the very Parquet parts the views read is impossible too
    part = next((run / "iter-1" / "scores").glob("part-*.parquet"))
    size = part.stat().st_size
    with pytest.raises(duckdb.Error):
        con.execute(f"COPY (SELECT 1 AS a) TO '{part}' (FORMAT parquet, OVERWRITE true)")
    assert part.stat().st_size == size and not target.exists()
    assert con.execute("SELECT count(*) FROM scores").fetchone()[0] > 0
    local_table = pa.table({"a": [1]})  # noqa: F841 (a Python object DuckDB must not find by name)
    with pytest.raises(duckdb.Error, match="local_table"):
        con.execute("SELECT * FROM local_table")
    con.close()


def test_no_tables_and_missing_paths(tmp_path, cli):
    assert_user_error(cli("sql", tmp_path / "nope", "SELECT 1"), "no such file")
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("sql", tmp_path / "empty", "SELECT 1"), "no complete cream tables")
    write_labeled(tmp_path / "lab", n_prompts=2)
    with pytest.raises(CreamError, match="one statement"):
        sql.query(tmp_path / "lab", "SELECT 1;SELECT 2")


def test_iteration_from_path():
    from pathlib import Path

    assert iteration_from_path(Path("/r/iter-2/scores")) == 2
    assert iteration_from_path(Path("/r/iteration_11/x/preferences")) == 11
    assert iteration_from_path(Path("/r/iter-1/iter-3/scores")) == 3  # the nearest wins
    assert iteration_from_path(Path("/r/literature-2/scores")) is None
