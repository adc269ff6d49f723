"""Schemas as data, the validator (every violation at once), and atomic table I/O."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from cream_data.tables import io
from cream_data.errors import CreamError, SchemaError
from cream_data.tables.validate import conform, violations

from tests.support import REPO


def conv(*turns):
    return [{"role": r, "content": c} for r, c in turns]


def prompts_table(n=3):
    return pa.table({
        "prompt_id": [f"p{i}" for i in range(n)],
        "prompt": [conv(("user", f"question {i}")) for i in range(n)],
        "source": ["test"] * n,
        "reference_answer": [str(i) if i % 2 else None for i in range(n)],
    })


def preferences_table():
    rows = {
        "prompt_id": ["a", "b"],
        "prompt": [conv(("user", "x")), conv(("user", "y"))],
        "chosen": [conv(("assistant", "good")), conv(("assistant", "fine"))],
        "rejected": [conv(("assistant", "bad")), conv(("assistant", "poor"))],
        "chosen_idx": [0, 2], "rejected_idx": [1, 0], "iteration": [1, 1], "n_responses": [3, 3],
        "rewards": [[1.0, -1.0, 0.0], [-2.0, 0.5, 3.0]], "prev_rewards": [[0.1, 0.0, 0.2], None],
        "ranks": [[1, 3, 2], [3, 2, 1]], "prev_ranks": [[2, 3, 1], None],
        "kendall_tau": [1 / 3, None], "consistency": [2 / 3, 1.0], "consistency_method": ["kendall", "kendall"],
        "weight": [2 / 3, 1.0], "chosen_logp": [-3.0, -4.0], "rejected_logp": [-5.0, -6.0],
        "chosen_n_tokens": [4, 5], "rejected_n_tokens": [6, 7], "model": ["m1", "m1"], "ref_model": ["m0", "m0"],
        "prev_model": ["m0", None], "prev_ref_model": [None, None], "template_hash": ["abc", "abc"],
    }
    return pa.table(rows)


def test_every_table_kind_has_a_v1_schema_with_the_design_columns():
    assert schemas.versions() == [1, 2]
    design = {
        "prompts": ["prompt_id", "prompt", "source", "reference_answer"],
        "responses": ["prompt_id", "prompt", "response_idx", "response", "model", "iteration", "seed",
                      "temperature", "top_p", "max_new_tokens", "finish_reason", "n_tokens"],
        "scores": ["prompt_id", "response_idx", "scorer", "model", "ref_model", "logp", "ref_logp", "n_tokens",
                   "reward", "reward_kind", "judge_text"],
        "eval": ["model", "task", "example_id", "response", "prediction", "answer", "correct"],
    }
    assert schemas.get("sft").column_names == ["prompt_id", "prompt", "completion", "source"]
    for kind, cols in design.items():
        assert schemas.get(kind, 1).column_names == cols
        assert schemas.get(kind).column_names[:len(cols)] == cols  # later versions only add columns
    pref = schemas.get("preferences").column_names
    for c in ["prompt", "chosen", "rejected", "weight", "chosen_logp", "rejected_logp", "template_hash",
              "prev_ranks", "kendall_tau", "consistency_method"]:
        assert c in pref
    assert schemas.get("preferences").arrow.field("ranks").type == pa.list_(pa.int16())
    assert schemas.get("prompts").arrow.field("prompt").type == schemas.CONVERSATION
    with pytest.raises(KeyError, match="unknown table kind"):
        schemas.get("nope")


def test_valid_tables_pass():
    assert violations(prompts_table(), schemas.get("prompts")) == []
    assert violations(preferences_table(), schemas.get("preferences")) == []


def test_validator_reports_every_violation_at_once():
    t = preferences_table()
    t = t.drop_columns(["template_hash"])
    t = t.set_column(t.column_names.index("consistency"), "consistency", pa.array([1.5, 0.2]))
    t = t.set_column(t.column_names.index("iteration"), "iteration", pa.array(["1", "1"]))
    t = t.set_column(t.column_names.index("model"), "model", pa.array(["m1", None]))
    t = t.set_column(t.column_names.index("ranks"), "ranks", pa.array([[1, 2], [3, 2, 1]], pa.list_(pa.int16())))
    found = violations(t, schemas.get("preferences"))
    text = " | ".join(found)
    assert "missing column 'template_hash'" in text
    assert "'consistency' out of range" in text
    assert "'iteration' has type string, expected int32" in text
    assert "'model' has 1 null(s)" in text
    assert "'ranks' has 2 item(s) at row 0 but n_responses = 3" in text
    assert len(found) == 5


def test_duplicate_keys_and_enum_values_are_reported():
    t = prompts_table()
    t = t.set_column(0, "prompt_id", pa.array(["p0", "p0", "p2"]))
    assert any("duplicate key" in v for v in violations(t, schemas.get("prompts")))
    bad_role = pa.table({"prompt_id": ["a"], "prompt": [conv(("robot", "hi"))], "source": ["s"],
                         "reference_answer": pa.array([None], pa.string())})
    assert any("role" in v for v in violations(bad_role, schemas.get("prompts")))


def test_write_read_roundtrip_single_file_and_folder(tmp_path):
    t = prompts_table()
    f = io.write_table(t, tmp_path / "p.parquet", "prompts")
    d = io.write_table(t, tmp_path / "pdir", "prompts")
    for path in (f, d):
        back = io.read_table(path, "prompts")
        assert back.to_pylist() == conform(t, "prompts").to_pylist()
    md = pq.ParquetFile(f).schema_arrow.metadata
    assert md[b"cream.schema"] == b"prompts" and md[b"cream.schema_version"] == b"2"
    assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
    assert json.loads((d / "_manifest.json").read_text())["rows"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_invalid_table_is_not_written(tmp_path):
    t = prompts_table().drop_columns(["source"])
    with pytest.raises(SchemaError, match="missing column 'source'"):
        io.write_table(t, tmp_path / "out", "prompts")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_table_of_another_kind_or_version_fails_clearly(tmp_path):
    io.write_table(prompts_table(), tmp_path / "p.parquet", "prompts")
    with pytest.raises(CreamError, match="holds a 'prompts' table, expected a 'preferences' table"):
        io.read_table(tmp_path / "p.parquet", "preferences")
    t = conform(prompts_table(), "prompts")
    t = t.replace_schema_metadata({b"cream.schema": b"prompts", b"cream.schema_version": b"7"})
    pq.write_table(t, tmp_path / "v7.parquet")
    with pytest.raises(CreamError, match="schema version 7"):
        io.read_table(tmp_path / "v7.parquet", "prompts")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CreamError, match="not a readable Parquet file"):
        io.read_table(tmp_path / "junk.parquet", "prompts")


def test_part_writer_resume_and_shards(tmp_path):
    folder = tmp_path / "t"
    w = io.PartWriter(folder, "prompts")
    w.write(prompts_table(2))
    with pytest.raises(CreamError, match="incomplete"):
        io.read_table(folder, "prompts")  # no manifest yet: an interrupted stage
    w2 = io.PartWriter(folder, "prompts")  # a rerun sees the earlier part
    assert w2.existing().num_rows == 2
    w2.write(pa.table({"prompt_id": ["z"], "prompt": [conv(("user", "z"))], "source": ["t"],
                       "reference_answer": pa.array([None], pa.string())}))
    w2.finish()
    assert io.read_table(folder, "prompts").num_rows == 3

    sharded = tmp_path / "s"
    for i in range(2):
        sw = io.PartWriter(sharded, "prompts", shard=(i, 2))
        t = prompts_table(4).slice(i * 2, 2)
        sw.write(t)
        if i == 0:
            with pytest.raises(CreamError, match=r"shards finished: \[0\] of 2"):
                sw.finish() and io.read_table(sharded, "prompts")
        else:
            sw.finish()
    assert sorted(io.read_table(sharded, "prompts")["prompt_id"].to_pylist()) == ["p0", "p1", "p2", "p3"]
    assert io.read_manifest(sharded)["rows"] == 4


def test_write_replaces_an_older_folder_atomically(tmp_path):
    io.write_table(prompts_table(3), tmp_path / "t", "prompts")
    io.write_table(prompts_table(1), tmp_path / "t", "prompts")
    assert io.read_table(tmp_path / "t", "prompts").num_rows == 1
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_cream_data_and_help_do_not_import_torch():
    code = (
        "import sys, cream_data, cream_data.tables.io, cream_data.tables.validate\n"
        "from cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout


def test_version_flag(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("cream ")


def test_a_kind_versions_on_its_own_and_older_files_still_read(tmp_path, cli):
    """scores is at v2 (reward_kind 'rm', a nullable 'confidence'); a v1 file written by an older cream still
    reads, with the new column as null, through io and through `cream sql`; a newer version is refused."""
    import pyarrow.parquet as pq

    assert schemas.latest("scores") == 2 and schemas.latest("responses") == 1
    v2 = schemas.get("scores")
    assert "rm" in v2.enums["reward_kind"] and v2.column("confidence").since == 2
    v1 = schemas.get("scores", 1)
    row = {"prompt_id": "a", "response_idx": 0, "scorer": "current", "model": "m", "ref_model": None, "logp": -1.0,
           "ref_logp": None, "n_tokens": 3, "reward": -0.5, "reward_kind": "likelihood_norm", "judge_text": None}
    old = pa.Table.from_pylist([row], schema=v1.arrow)  # v1 metadata, no confidence column
    pq.write_table(old, tmp_path / "old.parquet")
    t = io.read_table(tmp_path / "old.parquet", "scores")
    assert t.column("confidence").to_pylist() == [None] and t.column("reward").to_pylist() == [-0.5]
    new = io.write_table(pa.Table.from_pylist([{**row, "response_idx": 1, "confidence": 0.75}]), tmp_path / "new",
                         "scores")
    assert pq.read_schema(next(new.glob("part-*.parquet"))).metadata[schemas.META_VERSION] == b"2"
    res = cli("sql", tmp_path / "old.parquet", "SELECT confidence, reward FROM scores", "--format", "json")
    assert res.code == 0 and json.loads(res.out) == [{"confidence": None, "reward": -0.5}]
    future = old.replace_schema_metadata({schemas.META_SCHEMA: b"scores", schemas.META_VERSION: b"3"})
    pq.write_table(future, tmp_path / "future.parquet")
    with pytest.raises(CreamError, match="schema version 3, this cream reads versions 1 to 2; upgrade cream"):
        io.read_table(tmp_path / "future.parquet", "scores")


def test_prompts_v2_human_answer_is_optional_on_write_and_null_from_v1_files(tmp_path):
    """prompts v2 adds the nullable human_answer: a v1 file reads with it null; a table built without it (an
    older writer) is written with it null; one with it keeps it."""
    import pyarrow.parquet as pq

    assert schemas.latest("prompts") == 2 and schemas.get("prompts").column("human_answer").since == 2
    v1 = conform(prompts_table(2), schemas.get("prompts", 1)).replace_schema_metadata(
        {schemas.META_SCHEMA: b"prompts", schemas.META_VERSION: b"1"})
    pq.write_table(v1, tmp_path / "v1.parquet")
    assert io.read_table(tmp_path / "v1.parquet", "prompts").column("human_answer").to_pylist() == [None, None]
    out = io.write_table(prompts_table(2), tmp_path / "w", "prompts")
    assert io.read_table(out, "prompts").column("human_answer").to_pylist() == [None, None]
    with_human = prompts_table(2).append_column("human_answer", pa.array(["I wrote this.", None]))
    out = io.write_table(with_human, tmp_path / "h", "prompts")
    assert io.read_table(out, "prompts").column("human_answer").to_pylist() == ["I wrote this.", None]
