"""Non-finite numbers: NaN/inf refused when a table is read for use or written; a training run that goes
non-finite stops with one line and publishes nothing."""

from __future__ import annotations

import math
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from cream_data.tables import io
from cream_data.errors import CreamError
from cream_data.tables.validate import violations
from tests.support.cli import assert_user_error, snapshot
from tests.support.models import make_tiny_model
from tests.support.pairing import make_tables
from tests.support.tables import prefs_table

NAN, INF = float("nan"), float("inf")
BAD = {"nan": NAN, "+inf": INF, "-inf": -INF}
PREF_FLOATS = ("chosen_logp", "rejected_logp", "weight", "consistency", "kendall_tau", "rewards", "prev_rewards")
NO_BARS = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}  # datasets' map bars write \r-lines to stderr


def put(table: pa.Table, column: str, rows, value) -> pa.Table:
    """``table`` with ``value`` at ``rows`` of ``column`` (inside the list for a list column)."""
    vals = table[column].to_pylist()
    for r in rows:
        vals[r] = [vals[r][0], value] if isinstance(vals[r], list) else value
    return table.set_column(table.column_names.index(column), column, pa.array(vals, table.schema.field(column).type))


def write_raw(table: pa.Table, path):
    """Write bypassing cream's checked writer, as another tool would (schema metadata kept)."""
    pq.write_table(table, path)
    return path


# ---------------------------------------------------------------------------- the rule
def test_writers_refuse_non_finite_and_keep_null(tmp_path):
    bad = put(prefs_table(), "chosen_logp", [3], NAN)
    with pytest.raises(CreamError, match=r"column 'chosen_logp' has 1 non-finite value \(NaN/inf\), first at row 3 "
                                         r"\(prompt_id 'p3'\); expected finite numbers"):
        io.write_table(bad, tmp_path / "prefs", "preferences")
    assert not (tmp_path / "prefs").exists() and list(tmp_path.iterdir()) == []
    # The rule is stated once: an inf weight is one violation (not also "out of range").
    found = violations(put(prefs_table(), "weight", [1, 2], INF), schemas.get("preferences"))
    assert found == ["column 'weight' has 2 non-finite values (NaN/inf), first at row 1 (prompt_id 'p1'); "
                     "expected finite numbers"]
    # Null stays allowed where the schema allows it (e.g. an unparseable judge reward, missing log-probs).
    io.write_table(put(prefs_table(), "chosen_logp", [0], None), tmp_path / "ok.parquet", "preferences")
    _, scores = make_tables([[1.0, None], [2.0, 3.0]])
    io.write_table(scores, tmp_path / "scores", "scores")
    rows = scores.to_pylist()
    rows[1]["logp"] = -INF
    with pytest.raises(CreamError, match="column 'logp' has 1 non-finite value"):
        io.write_table(pa.Table.from_pylist(rows, schema=scores.schema), tmp_path / "scores2", "scores")


def test_every_float_column_must_be_finite():
    """The rule is driven by the schema: every float column, list items included; the tests below cover every
    float column of the preferences."""
    cols = [(k, c) for k in schemas.TABLE_KINDS for c in schemas.get(k).columns]
    assert {(k, c.name) for k, c in cols if c.finite} == {(k, c.name) for k, c in cols if "float" in c.type}
    assert {c.name for k, c in cols if k == "preferences" and c.finite} == set(PREF_FLOATS)


# ---------------------------------------------------------------------------- cream train
@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("column", PREF_FLOATS)
def test_train_refuses_non_finite_preferences_before_loading_a_model(cli, tmp_path, column, kind):
    path = write_raw(put(prefs_table(), column, [2, 4, 5], BAD[kind]), tmp_path / "prefs.parquet")
    before = snapshot(tmp_path)
    # No model exists at --model: the table must be refused before any model is looked for.
    r = cli("train", path, "--model", tmp_path / "no-model", "--out", tmp_path / "out")
    assert_user_error(r, f"{path}: column '{column}' has 3 non-finite values (NaN/inf), first at row 2 "
                         "(prompt_id 'p2'); expected finite numbers")
    assert snapshot(tmp_path) == before


def test_installed_cream_train_refuses_nan_log_probs(cream_exe, tiny_model, tmp_path):
    path = write_raw(put(prefs_table(), "rejected_logp", [0], NAN), tmp_path / "prefs.parquet")
    before = snapshot(tmp_path)
    r = cream_exe("train", path, "--model", tiny_model, "--out", tmp_path / "out")
    assert_user_error(r, str(path), "column 'rejected_logp'", "1 non-finite value", "row 0 (prompt_id 'p0')")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- cream label --scores
def scores_dir(tmp_path, column, value, row):
    """A labeled folder whose scores part holds ``value`` at ``row`` of ``column``; the responses beside it."""
    responses, scores = make_tables([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3], [3.0, 1.0, 2.0]],
                                    [[1.0, 0.0, 2.0], [0.3, 0.2, 0.1], [1.0, 3.0, 2.0]])
    resp = io.write_table(responses, tmp_path / "responses", "responses")
    folder = io.write_table(scores, tmp_path / "lab" / "scores", "scores")
    rows = scores.to_pylist()
    rows[row][column] = value
    write_raw(pa.Table.from_pylist(rows, schema=scores.schema), folder / "part-00000.parquet")
    return resp, folder, rows[row]["prompt_id"]


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("column", ["reward", "logp", "ref_logp"])
def test_label_scores_refuses_non_finite(cli, tmp_path, column, kind):
    resp, folder, pid = scores_dir(tmp_path, column, BAD[kind], 4)
    before = snapshot(tmp_path)
    r = cli("label", resp, "--scores", folder.parent, "--out", tmp_path / "rebuilt")
    assert_user_error(r, f"{folder}: column '{column}' has 1 non-finite value (NaN/inf), first at row 4 "
                         f"(prompt_id '{pid}'); expected finite numbers")
    assert snapshot(tmp_path) == before


def test_installed_cream_label_scores_refuses_nan_reward(cream_exe, tmp_path):
    resp, folder, pid = scores_dir(tmp_path, "reward", NAN, 7)
    before = snapshot(tmp_path)
    r = cream_exe("label", resp, "--scores", folder.parent, "--out", tmp_path / "rebuilt")
    assert_user_error(r, str(folder), "column 'reward'", "first at row 7", f"prompt_id '{pid}'")
    assert snapshot(tmp_path) == before
    # A null reward (an unparseable judge output) is still fine: that prompt is skipped, the rest paired.
    resp, folder, _ = scores_dir(tmp_path / "null", "reward", None, 7)
    assert cream_exe("label", resp, "--scores", folder.parent, "--out", tmp_path / "null" / "rebuilt").code == 0


# ---------------------------------------------------------------------------- the training guard
def broken_model(tmp_path):
    """The tiny model with one final-norm weight set to inf: every forward gives a non-finite loss."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = make_tiny_model(tmp_path / "broken", seed=0)
    (weights,) = folder.glob("*.safetensors")
    sd = load_file(weights)
    sd["model.norm.weight"][0] = torch.inf
    save_file(sd, weights, metadata={"format": "pt"})
    return folder


def named_rows(line: str) -> list[str]:
    return re.findall(r"'(p\d|s\d)'", line)


def assert_stopped(r, tmp_path, before, step: int, what: str, batch: int):
    """Exit 2, no traceback, one error line and it comes last: the training's own log lines (its precision, a
    step finished before the failure) may precede it."""
    assert r.code == 2 and "Traceback" not in r.err, r
    lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert errors == [lines[-1]], lines
    for needle in (f"training stopped at step {step}", what, "nothing was published"):
        assert needle in lines[-1], lines[-1]
    ids = named_rows(lines[-1])
    assert len(ids) == batch and len(set(ids)) == batch, r.err
    assert snapshot(tmp_path) == before  # no output folder, no staging folder left


def test_training_that_diverges_stops_at_the_step_and_names_its_rows(cream_exe, tiny_model, tmp_path):
    """A learning rate of 1e30: step 1 is finite, its update makes step 2's gradients NaN."""
    from tests.support.training import make_preferences

    prefs = make_preferences(tmp_path / "prefs", tiny_model)
    before = snapshot(tmp_path)
    r = cream_exe("train", prefs, "--model", tiny_model, "--out", tmp_path / "out", "--lr", "1e30",
                  "--max-steps", "3", "--batch-size", "4", "--warmup-ratio", "0", env=NO_BARS)
    assert_stopped(r, tmp_path, before, 2, "non-finite gradient norm", 4)


@pytest.mark.parametrize("stage", ["dpo", "sft"])
def test_non_finite_loss_stops_training(cream_exe, tiny_model, tmp_path, stage):
    from cream_data.engines.models import resolve
    from tests.support.training import make_preferences, make_sft

    model = broken_model(tmp_path)
    if stage == "sft":
        data = make_sft(tmp_path / "sft")
    else:  # finite stored reference log-probs (of the intact model, recorded as the broken one's): used as they are
        data = make_preferences(tmp_path / "prefs", tiny_model, model_name=resolve(str(model)).name)
    before = snapshot(tmp_path)
    r = cream_exe("train", data, "--stage", stage, "--model", model, "--out", tmp_path / "out", "--max-steps", "2",
                  "--batch-size", "2", "--warmup-ratio", "0", env=NO_BARS)
    assert_stopped(r, tmp_path, before, 1, "non-finite loss", 2)
    assert not math.isfinite(float(re.search(r"non-finite loss \((\S+)\)", r.err).group(1)))
