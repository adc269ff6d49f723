"""One iteration-folder rule: `cream sql` and `cream publish` split a run with hand-named folders the same way."""

from __future__ import annotations

import doctest

import pytest

from cream_data.publish import hub
from cream_data.tables import iterations
from cream_data.tables import sql
from cream_data.tables.io import write_table
from tests.support.published import make_tables


def test_doctests():
    result = doctest.testmod(iterations)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("name, want", [("iter-2", 2), ("iter_2", 2), ("iter2", 2), ("Iteration-2", 2),
                                        ("ITER_2", 2), ("iteration_12", 12), ("literature-2", None),
                                        ("iter-", None), ("iter-2b", None), ("iterations-2", None)])
def test_parse_iteration_dir(name, want):
    assert iterations.parse_iteration_dir(name) == want


@pytest.mark.parametrize("folders", [("Iteration-1", "ITER_2"), ("iter_1", "iteration-2"), ("iter-1", "iter-2")])
def test_sql_and_publish_split_a_run_the_same_way(tmp_path, folders):
    run = tmp_path / "run"
    tables = {}
    for t, folder in enumerate(folders, start=1):
        tables[t] = make_tables(t, 3, seed=t)
        for kind in ("scores", "preferences"):  # scores have no iteration column: only the folder says which
            write_table(tables[t][kind], run / folder / kind, kind)

    by_sql = {}
    for kind in ("scores", "preferences"):
        t, _ = sql.query(run, f"SELECT iteration, count(*) AS n FROM {kind} GROUP BY ALL ORDER BY 1")
        by_sql[kind] = {r["iteration"]: r["n"] for r in t.to_pylist()}

    splits, _ = hub.collect(run)
    by_hub = {kind: {s.iteration: s.table.num_rows for s in splits[kind]} for kind in ("scores", "preferences")}

    want = {kind: {t: tables[t][kind].num_rows for t in (1, 2)} for kind in ("scores", "preferences")}
    assert by_sql == want
    assert by_hub == want
    assert [s.name for s in splits["scores"]] == ["iter_1", "iter_2"]
