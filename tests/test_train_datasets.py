"""`cream train` (DPO) on standard preference datasets (TRL's layout), not cream's own tables: text and message-list
variants, the implicit prompt, a Parquet folder, a `save_to_disk` folder and a Hub dataset laid out as `datasets`
writes it (served offline). Each trains a tiny real model one step; the pairs it trained on are compared with a
conversion written here from the rows, C is 1 and the reference is computed. Bad inputs are one line through the
installed console script."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.cli import assert_user_error, refused
from tests.support.training import PAIRS

FAST = ["--max-steps", "1", "--batch-size", "4", "--warmup-ratio", "0"]
SYSTEM = "You are terse."
ROWS = PAIRS[:6]


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def expected_pairs(rows=ROWS, system=False):
    """What the trainer must see: each row's prompt as the user's message (after the system one), answers as the
    assistant's; in the input's order."""
    head = [{"role": "system", "content": SYSTEM}] if system else []
    return [{"prompt": head + user(q), "chosen": assistant(c), "rejected": assistant(r)} for q, c, r in rows]


def text_rows(rows=ROWS):
    return [{"prompt": q, "chosen": c, "rejected": r, "score_chosen": 8.0, "score_rejected": 2.5} for q, c, r in rows]


def message_rows(rows=ROWS):
    return [{"prompt": user(q), "chosen": assistant(c), "rejected": assistant(r), "source": "test"} for q, c, r in rows]


def implicit_rows(rows=ROWS):
    """The *_binarized form: whole conversations (here with a system message, so the shared prompt is two messages),
    a text prompt beside them and the SFT messages, both ignored."""
    sys = [{"role": "system", "content": SYSTEM}]
    return [{"prompt": q, "prompt_id": f"id{i}", "chosen": sys + user(q) + assistant(c),
             "rejected": sys + user(q) + assistant(r), "messages": sys + user(q) + assistant(c)}
            for i, (q, c, r) in enumerate(rows)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def hub_repo(folder, splits: dict[str, list[dict]]):
    """A dataset repository as `Dataset.push_to_hub` / `DatasetDict.push_to_hub` writes it: one Parquet shard per
    split under data/, and a README.md whose YAML configs block lists each split's files."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for name, rows in splits.items():
        write_parquet(folder / "data" / f"{name}-00000-of-00001.parquet", rows)
        lines += [f"  - split: {name}", f"    path: data/{name}-*"]
    (folder / "README.md").write_text("\n".join(lines + ["---", "", "# a preference dataset", ""]))
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Every accepted source, written once."""
    import datasets

    d = tmp_path_factory.mktemp("datasets")
    folder = d / "parquet-folder"
    write_parquet(folder / "a.parquet", message_rows(ROWS[:3]))
    write_parquet(folder / "b.parquet", message_rows(ROWS[3:]))
    saved = d / "saved"
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(implicit_rows(ROWS[:2])),
                          "test_prefs": datasets.Dataset.from_list(text_rows(ROWS[2:]))}).save_to_disk(str(saved))
    return {
        "text": write_jsonl(d / "text.jsonl", text_rows()),
        "messages": write_parquet(d / "messages.parquet", message_rows()),
        "implicit": write_parquet(d / "implicit.parquet", implicit_rows()),
        "folder": folder,
        "saved": saved,
        "hub": hub_repo(d / "remote" / "ufb", {"train_prefs": implicit_rows(ROWS[:3]),
                                               "test_prefs": text_rows(ROWS[3:])}),
    }


@pytest.fixture
def trained(cli, tiny_model, tmp_path, monkeypatch):
    """``trained(source, *args)``: `cream train SOURCE --model TINY` one step; returns (result, lineage, the pairs
    table the trainer was given, its weights, whether the stored reference was used)."""
    import cream_train.prefs as prefs

    seen = []

    def spy(table, weights, stored_reference, _real=prefs.to_dataset):
        seen.append((table, weights, stored_reference))
        return _real(table, weights, stored_reference)

    monkeypatch.setattr(prefs, "to_dataset", spy)

    def run(source, *args):
        out = tmp_path / f"M{len(seen)}"
        r = cli("train", source, "--model", tiny_model, "--out", out, *FAST, *args)
        assert r.code == 0, r
        lineage = json.loads((out / "cream_lineage.json").read_text())
        table, weights, stored = seen[-1]
        return r, lineage, table, weights, stored

    return run


def pairs_of(table: pa.Table) -> list[dict]:
    return table.select(["prompt", "chosen", "rejected"]).to_pylist()


def check_plain_dpo(lineage, weights, stored, n):
    """C = 1 for every pair (method cream trains it as plain DPO), the reference computed by the starting model."""
    assert weights == [1.0] * n and stored is False
    assert lineage["pairs"] == n and lineage["reference"] == "computed" and lineage["mean_C"] == 1.0
    assert lineage["method"] == "cream" and lineage["metrics"]["global_step"] == 1


@pytest.mark.parametrize("variant, layout", [
    ("text", "explicit prompt, text"),
    ("messages", "explicit prompt, message lists"),
    ("implicit", "implicit prompt"),
])
def test_trl_file_variants_train(trained, sources, variant, layout):
    r, lineage, table, weights, stored = trained(sources[variant])
    assert pairs_of(table) == expected_pairs(system=variant == "implicit")
    check_plain_dpo(lineage, weights, stored, len(ROWS))
    note = [ln for ln in r.err.splitlines() if "standard preference dataset" in ln]
    assert len(note) == 1 and layout in note[0] and f"{len(ROWS)} pairs" in note[0], r.err
    from cream_train.lineage import data_fingerprint

    assert lineage["data"]["fingerprint"] == data_fingerprint(sources[variant])  # the file's own bytes


def test_parquet_folder_trains_on_every_file_in_order(trained, sources):
    r, lineage, table, weights, stored = trained(sources["folder"])
    assert pairs_of(table) == expected_pairs()
    check_plain_dpo(lineage, weights, stored, len(ROWS))
    assert "split train" in r.err


def test_a_tie_is_left_out_and_said(trained, tmp_path):
    """A row whose chosen and rejected are one answer (real datasets have a few) is not a pair: left out, counted."""
    rows = text_rows()
    rows[2]["rejected"] = rows[2]["chosen"]
    r, lineage, table, weights, stored = trained(write_jsonl(tmp_path / "ties.jsonl", rows))
    kept = [p for i, p in enumerate(expected_pairs()) if i != 2]
    assert pairs_of(table) == kept
    check_plain_dpo(lineage, weights, stored, len(ROWS) - 1)
    assert "1 pair(s) left out whose chosen and rejected are the same answer (line 3)" in r.err, r.err


def test_save_to_disk_folder_with_a_named_split(trained, sources):
    r, lineage, table, weights, stored = trained(sources["saved"], "--split", "test_prefs")
    assert pairs_of(table) == expected_pairs(ROWS[2:])
    check_plain_dpo(lineage, weights, stored, len(ROWS) - 2)
    assert "split test_prefs" in r.err and "explicit prompt, text" in r.err


def test_hub_dataset_id_downloads_only_the_split_it_trains_on(trained, sources, tmp_path, monkeypatch):
    """`cream train owner/name --split S` on a repository laid out as `datasets` pushes it: the download (served
    offline from that layout by a stand-in for huggingface_hub's snapshot_download that honours allow_patterns)
    fetches the card, then the card's files for S only."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    remote = sources["hub"]
    files = [p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()]
    asked, fetched = [], []

    def snapshot_download(repo_id, repo_type, allow_patterns, **_):
        assert (repo_id, repo_type) == ("someone/ufb-binarized", "dataset")
        asked.append(list(allow_patterns))
        local = tmp_path / "snapshot"
        for f in filter_repo_objects(files, allow_patterns=allow_patterns):
            (local / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(remote / f, local / f)
            fetched.append(f)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    r, lineage, table, weights, stored = trained("someone/ufb-binarized", "--split", "train_prefs")
    assert pairs_of(table) == expected_pairs(ROWS[:3], system=True)
    check_plain_dpo(lineage, weights, stored, 3)
    assert asked[0] == ["README.md", "data/preferences/*"]  # cream's own layout first: the card tells them apart
    assert asked[1] == ["README.md", "data/train_prefs-*"]
    assert sorted(set(fetched)) == ["README.md", "data/train_prefs-00000-of-00001.parquet"]
    assert lineage["data"]["source"] == "someone/ufb-binarized"
    assert "Hub dataset, a standard preference dataset" in r.err and "split train_prefs" in r.err


# ------------------------------------------------------------------------------------------ one-line errors
def hf_cache(root, repo_id, folder):
    """An offline Hugging Face cache (HF_HUB_CACHE) holding ``folder`` as the snapshot of dataset ``repo_id``."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(folder, repo / "snapshots" / sha)
    return root


def test_errors_are_one_line_through_the_console_script(cream_exe, sources, tiny_model, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    no_rejected = write_jsonl(bad / "no-rejected.jsonl", [{"prompt": q, "chosen": c} for q, c, _ in ROWS])
    (bad / "labels.csv").write_text("text,label\nnice film,1\nbad film,0\n")
    shape = message_rows(ROWS[:2])
    shape[1]["chosen"] = [{"role": "assistant", "text": "no content key"}]
    write_jsonl(bad / "shape.jsonl", shape)
    pq.write_table(pa.Table.from_pylist(message_rows()).slice(0, 0), bad / "empty.parquet")
    cache = hf_cache(tmp_path / "hf-cache", "someone/ufb-binarized", sources["hub"])
    out = ["--model", tiny_model, "--out", bad / "out"]
    cases = [
        ([no_rejected], [str(no_rejected), "no 'rejected' column", "prompt, chosen"]),
        ([bad / "labels.csv"], ["labels.csv", "unknown layout", "columns: text, label", "prompt, chosen and rejected"]),
        ([bad / "shape.jsonl"], ["shape.jsonl line 2", "chosen[0].content", "expected"]),
        ([bad / "empty.parquet"], ["empty.parquet", "no rows"]),
        ([sources["saved"], "--split", "train"], ["no split 'train'", "train_prefs, test_prefs"]),
        ([sources["saved"]], ["2 splits", "train_prefs, test_prefs", "--split"]),
        ([sources["text"], "--split", "train"], ["--split train", "single data file"]),
        (["someone/ufb-binarized", "--split", "test"], ["someone/ufb-binarized", "no split 'test'",
                                                        "train_prefs, test_prefs"]),
    ]
    for args, needles in cases:
        refused(cream_exe, bad, "train", *args, *out, needles=needles, env={"HF_HUB_CACHE": str(cache)})
    assert not (bad / "out").exists()


def test_implicit_prompt_that_is_not_shared_names_the_row(cli, tiny_model, tmp_path):
    rows = implicit_rows(ROWS[:3])
    rows[2]["rejected"] = rows[2]["rejected"][:1] + user("another question") + assistant("an answer")
    path = write_parquet(tmp_path / "diverging.parquet", rows)
    r = cli("train", path, "--model", tiny_model, "--out", tmp_path / "o", *FAST)
    assert_user_error(r, "diverging.parquet row 3", "differ at message 1", "user message")
    same = implicit_rows(ROWS[:2])
    same[0]["rejected"] = same[0]["chosen"]
    same[1]["rejected"] = same[1]["chosen"]  # every pair a tie: nothing left to train on
    r = cli("train", write_parquet(tmp_path / "same.parquet", same), "--model", tiny_model, "--out", tmp_path / "o")
    assert_user_error(r, "same.parquet", "every pair's chosen and rejected are the same answer (2 rows)")
    rows[2]["rejected"] = user("no system message") + assistant("an answer")
    r = cli("train", write_parquet(tmp_path / "apart.parquet", rows), "--model", tiny_model, "--out", tmp_path / "o")
    assert_user_error(r, "apart.parquet row 3", "share no leading message")
