"""`cream train` reads what the docs promise: a preferences table, a `cream label` output folder, a folder written by
`cream publish`, and a Hub dataset id (offline here: the download is served from a published folder). The command
the published card gives is run as written, with only MODEL and OUT filled in."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from cream_data.publish import hub
from tests.support.cli import assert_user_error
from tests.support.training import PAIRS, WEIGHTS, make_preferences

FAST = ["--max-steps", "1", "--batch-size", "4", "--warmup-ratio", "0"]
REPO_ID = "me/cream-prefs"


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    """Two iterations laid out as `cream run` writes them (iter-<t>/preferences), stored log-probs of the tiny model."""
    import pyarrow as pa

    from cream_data.tables import io

    run = tmp_path_factory.mktemp("src") / "run"
    make_preferences(run / "iter-1" / "preferences", tiny_model, pairs=PAIRS[:4], weights=WEIGHTS[:4])
    second = io.read_table(make_preferences(run / "raw-2", tiny_model, pairs=PAIRS[4:], weights=WEIGHTS[4:]))
    n = second.num_rows  # iteration 2 labels other prompts
    second = second.set_column(0, "prompt_id", pa.array([f"q{i}" for i in range(n)]))
    second = second.set_column(second.column_names.index("iteration"), "iteration", pa.array([2] * n, pa.int32()))
    io.write_table(second, run / "iter-2" / "preferences", "preferences")
    import shutil

    shutil.rmtree(run / "raw-2")
    return run


@pytest.fixture(scope="module")
def published(run_dir, tmp_path_factory):
    """The folder `cream publish --dry-run --out` builds (what it would upload)."""
    return hub.build(run_dir, tmp_path_factory.mktemp("pub") / "repo", REPO_ID)


def lineage(out):
    return json.loads((out / "cream_lineage.json").read_text())


def card_command(folder) -> str:
    text = (folder / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    train = [b for b in blocks if b.startswith("cream train ")]
    assert len(train) == 1, blocks
    assert "`cream train` takes the dataset id directly" in text
    return train[0]


def run_card_command(cli, command: str, *, source: str, model, out):
    argv = shlex.split(command.replace(REPO_ID, source).replace("MODEL", str(model)).replace("OUT", str(out)))
    assert argv[:2] == ["cream", "train"]
    return cli(*argv[1:], *FAST)


def test_card_names_the_dataset_id_and_the_newest_split(published):
    assert card_command(published) == f"cream train {REPO_ID} --split iter_2 --model MODEL --out OUT"


def test_card_command_trains_on_the_published_folder(cli, published, tiny_model, tmp_path):
    out = tmp_path / "M3"
    r = run_card_command(cli, card_command(published), source=str(published), model=tiny_model, out=out)
    assert r.code == 0, r
    lin = lineage(out)
    assert lin["pairs"] == len(PAIRS) - 4 and lin["reference"] == "stored"  # the split's stored log-probs hold
    assert "written by `cream publish`" in r.err and "split iter_2" in r.err


def test_card_command_trains_on_the_dataset_id(cli, published, tiny_model, tmp_path, monkeypatch):
    """The id as the card writes it; the download is served from the published folder (nothing is fetched)."""
    asked = []
    monkeypatch.setattr(hub, "_download", lambda repo_id: asked.append(repo_id) or published)
    out = tmp_path / "M3"
    r = run_card_command(cli, card_command(published), source=REPO_ID, model=tiny_model, out=out)
    assert r.code == 0, r
    assert asked == [REPO_ID]
    lin = lineage(out)
    assert lin["pairs"] == len(PAIRS) - 4 and lin["data"]["source"] == REPO_ID


def test_published_dataset_without_split_reads_every_split_in_order(run_dir, published, tiny_model, tmp_path):
    from cream_train.config import DPOTrainConfig
    from cream_train.prefs import load_preferences
    from cream_train.train import prepare_dpo

    def prepared(data, split=None):
        return prepare_dpo(DPOTrainConfig(data=str(data), model=str(tiny_model), out=str(tmp_path / "o"), split=split))

    every = prepared(published)
    assert every.table.column("prompt_id").to_pylist() == \
        (load_preferences(run_dir / "iter-1" / "preferences").column("prompt_id").to_pylist()
         + load_preferences(run_dir / "iter-2" / "preferences").column("prompt_id").to_pylist())
    assert prepared(published, "iter_1").table.num_rows == 4 and every.path is None


def test_train_on_a_label_output_folder(cli, run_dir, tiny_model, tmp_path):
    """`cream label --out DIR` writes DIR/preferences (and scores/, logps/): DIR itself is accepted, and said so."""
    lab = run_dir / "iter-1"  # the label output of iteration 1
    out = tmp_path / "M2"
    r = cli("train", lab, "--model", tiny_model, "--out", out, *FAST)
    assert r.code == 0, r
    notes = [ln for ln in r.err.splitlines() if "cream label" in ln]
    assert len(notes) == 1 and str(lab / "preferences") in notes[0] and "warning" not in notes[0].lower()
    lin = lineage(out)
    assert lin["pairs"] == 4 and lin["reference"] == "stored"
    from cream_train.lineage import data_fingerprint

    assert lin["data"]["fingerprint"] == data_fingerprint(lab / "preferences")  # the table's own fingerprint


@pytest.mark.parametrize("args, needles", [
    (["nobody/no-such-prefs"], ["nobody/no-such-prefs", "HF_HUB_OFFLINE"]),
    (["SRC/iter-1", "--split", "iter_1"], ["--split iter_1", "published dataset"]),
    (["PUB", "--split", "iter_9"], ["no split 'iter_9'", "iter_1, iter_2"]),
    (["SRC/iter-3"], ["iter-3", "no such file or folder"]),
    (["SRC/nothing-here"], ["nothing-here", "no table here"]),
])
def test_bad_sources_are_one_line(cli, run_dir, published, tiny_model, tmp_path, args, needles):
    (run_dir.parent / "nothing-here").mkdir(exist_ok=True)
    args = [a.replace("SRC", str(run_dir)).replace("PUB", str(published)) for a in args]
    args = [str(run_dir.parent / "nothing-here") if a.endswith("nothing-here") else a for a in args]
    r = cli("train", *args, "--model", tiny_model, "--out", tmp_path / "o")
    assert_user_error(r, *needles)
    assert not (tmp_path / "o").exists()
