"""The demo's evaluation slice (examples/data/eval): it loads through cream's own loaders, it is an unchanged line
prefix of the full benchmark files, examples/demo.yaml points at it inside the repository, and its README names a
licence for every file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cream_data.inputs.harness_tasks import local_files
from cream_data.inputs.prompts import BENCHMARKS
from cream_data.stages.eval_config import EvalConfig
from cream_data.stages.evaluate import NUMERIC_TASKS, load_examples, option_letters
from cream_train.run.config import load_run_config

from tests.support import REPO

DEMO = REPO / "examples" / "demo.yaml"
EVAL_DATA = REPO / "examples" / "data" / "eval"
README = EVAL_DATA / "README.md"
SLICE = 30  # lines (= items) kept of each file
DEMO_EVAL = yaml.safe_load(DEMO.read_text())["eval"]
DEMO_TASKS = tuple(DEMO_EVAL["tasks"])


def shipped_data() -> list[Path]:
    """The data files of the slice, relative to it (not the README or the licence texts)."""
    return sorted(p.relative_to(EVAL_DATA) for p in EVAL_DATA.rglob("*")
                  if p.is_file() and p.name != "README.md" and not p.name.startswith("LICENSE"))


def test_ships_exactly_the_files_the_loaders_read():
    expected = {Path(BENCHMARKS[t][0]) for t in DEMO_TASKS}
    if "siqa" in DEMO_TASKS:
        expected.add(Path("siqa/dev-labels.lst"))
    assert set(shipped_data()) == expected
    for rel in shipped_data():
        p = EVAL_DATA / rel
        assert not p.is_symlink(), rel
        data = p.read_bytes()
        assert data.endswith(b"\n"), rel
        assert data.count(b"\n") == SLICE, rel


# ---------------------------------------------------------------------------- (a) loads through cream's loaders
@pytest.mark.parametrize("task", DEMO_TASKS)
def test_each_demo_task_loads_from_the_slice_with_gold_answers(task):
    limit = DEMO_EVAL["limit"]
    assert limit <= SLICE
    ex = load_examples(task, EvalConfig(tasks=(task,), data_dir=str(EVAL_DATA), limit=limit))
    assert len(ex.ids) == len(ex.prompts) == len(ex.answers) == limit
    everything = load_examples(task, EvalConfig(tasks=(task,), data_dir=str(EVAL_DATA)))
    assert len(everything.ids) == SLICE
    assert everything.ids[:limit] == ex.ids and everything.answers[:limit] == ex.answers
    assert len(set(everything.ids)) == SLICE
    for conv, gold, letters in zip(everything.prompts, everything.answers, everything.letters):
        assert conv[-1]["role"] == "user" and conv[-1]["content"].strip()
        assert gold is not None and gold.strip()
        if task in NUMERIC_TASKS:
            assert re.fullmatch(r"-?\d+(\.\d+)?", gold), gold
        else:
            found = option_letters(conv[-1]["content"])
            assert found is not None and len(found) >= 3 and gold in found, (gold, found)
            assert letters == found


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_the_harness_route_finds_each_task_zero_shot(task):
    files = local_files(task, EVAL_DATA, shots=0)
    assert all(p.is_file() and p.resolve().is_relative_to(EVAL_DATA.resolve()) for p in files.values())


def test_siqa_gold_labels_come_from_the_line_aligned_labels_file():
    labels = (EVAL_DATA / "siqa" / "dev-labels.lst").read_text().split()
    ex = load_examples("siqa", EvalConfig(tasks=("siqa",), data_dir=str(EVAL_DATA)))
    assert ex.answers == ["ABC"[int(v) - 1] for v in labels]


# ---------------------------------------------------------------------------- (b) unchanged prefixes of the full files
@pytest.mark.parametrize("rel", shipped_data(), ids=str)
def test_each_file_is_a_line_prefix_of_the_full_file(rel, shared_data):
    full = shared_data / rel
    if not full.is_file():
        pytest.skip(f"no {rel} in {shared_data}")
    mine = (EVAL_DATA / rel).read_bytes()
    lines = mine.count(b"\n")
    with full.open("rb") as f:
        head = b"".join(f.readline() for _ in range(lines))
    assert mine == head, f"{rel} is not the first {lines} lines of {full}"


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_the_slice_gives_the_same_items_as_the_full_files(task, shared_data):
    mine = load_examples(task, EvalConfig(tasks=(task,), data_dir=str(EVAL_DATA)))
    full = load_examples(task, EvalConfig(tasks=(task,), data_dir=str(shared_data), limit=SLICE))
    assert (mine.ids, mine.prompts, mine.answers, mine.letters) == (full.ids, full.prompts, full.answers, full.letters)


# ---------------------------------------------------------------------------- (c) the demo points inside the repository
def test_demo_eval_data_dir_resolves_inside_the_repository():
    raw = DEMO_EVAL["data_dir"]
    assert raw and not Path(raw).is_absolute(), raw
    resolved = (DEMO.parent / raw).resolve()
    assert resolved.is_relative_to(REPO.resolve()), f"eval.data_dir {raw} leaves the repository: {resolved}"
    assert resolved == EVAL_DATA.resolve()
    cfg, _, _ = load_run_config(DEMO)  # cream's own resolution, relative to the config's folder
    assert Path(cfg.eval.data_dir) == EVAL_DATA.resolve()
    assert set(cfg.eval.tasks) == set(DEMO_TASKS)


def test_demo_inputs_all_live_in_the_repository():
    """Nothing the demo reads may sit outside a plain clone (e.g. ../shared)."""
    cfg = yaml.safe_load(DEMO.read_text())
    for section, key in (("sft", "data"), ("prompts", "source"), ("eval", "data_dir")):
        path = (DEMO.parent / cfg[section][key]).resolve()
        assert path.exists() and path.is_relative_to(REPO.resolve()), (section, key, path)


def test_the_slice_is_not_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [str((EVAL_DATA / rel).relative_to(REPO)) for rel in shipped_data()] + [str(README.relative_to(REPO))]
    out = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "", f"ignored by git, so a clone would lack them: {out.stdout}"


# ---------------------------------------------------------------------------- (d) a licence for every file
LICENCES = {  # name in the README -> a link the README must give
    "CC BY-SA 4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "Apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0",
    "MIT": "https://opensource.org/license/mit",
}
UNSTATED = "not stated"  # a source that publishes no licence must say so, not stay silent


def readme_files_table() -> dict[str, list[str]]:
    """The README's file table: path -> cells, from rows whose first cell is a back-quoted path."""
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


def test_readme_names_a_licence_for_every_shipped_file():
    rows = readme_files_table()
    text = README.read_text()
    for rel in shipped_data():
        assert str(rel) in rows, f"README.md has no row for {rel}"
        cells = rows[str(rel)]
        licence = cells[-1]
        named = [name for name in LICENCES if name in licence]
        assert named or licence.startswith(UNSTATED), f"{rel}: licence cell {licence!r} names no licence"
        for name in named:
            assert LICENCES[name] in text, f"README.md names {name} without a link to it"
        assert re.search(rf"\b{SLICE}\b", cells[1]), f"{rel}: item count missing from {cells[1]!r}"
    assert "ShareAlike" in text and "Attribution" in text  # CC BY-SA's conditions are spelled out


def test_licence_texts_named_in_the_readme_are_shipped():
    text = README.read_text()
    named = re.findall(r"`(\w+/LICENSE[\w.-]*)`", text)  # licence texts inside the slice's folders
    assert named
    for name in named:
        assert (EVAL_DATA / name).is_file(), name
    assert (EVAL_DATA / "gsm8k" / "LICENSE").read_text().startswith("MIT License")  # MIT: the notice travels along


def test_repository_licence_is_the_full_apache_text():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 11000


def test_eval_data_rows_are_valid_json():
    for rel in shipped_data():
        if rel.suffix == ".jsonl":
            for n, line in enumerate((EVAL_DATA / rel).read_text(encoding="utf-8").splitlines(), 1):
                assert isinstance(json.loads(line), dict), f"{rel} line {n}"
