"""Reliability (issue #26, "every input is bounded"): config and data readers finish in bounded time and memory on
hostile input and answer in one line — a huge value is named by its first characters and its length, a named pipe,
a device or a folder given as a file is said to be one (never opened: a pipe would block), the integer settings
stop at what their table columns hold, deeply nested or huge records are refused naming the file and the line, and a
refused input gives one line, not a note about reading it first.

Each user-facing case runs the installed console script in a subprocess: one line on stderr, exit 2, nothing new on
disk — or the right result.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import schemas
from cream_data.errors import CreamError
from tests.support import DEMO_DATA, REPO
from tests.support.cli import CPU_ONLY, refused
from tests.support.models import make_tiny_model
from tests.support.runs import ALIAS, write_tiny_run_config

HUGE = "x" * 600_000  # a value in a file
LONG_ARG = "x" * 100_000  # a value on the command line (one argument may hold at most 128 KiB)


def one_short_line(r, limit: int = 600) -> None:
    """The error line is short, whatever the input held."""
    assert len(r.err) < limit, f"{len(r.err)} characters on stderr: {r.err[:300]}…"


# ---------------------------------------------------------------------------- 1. a huge value is shortened
def test_shown_names_a_long_value_by_its_start_and_length():
    from cream_data.settings import shown

    assert shown("fast") == "'fast'" and shown(5) == "5" and shown("a/b", quote=False) == "a/b"
    assert shown(HUGE) == "'" + "x" * 59 + "… (600,000 characters)"
    assert shown(HUGE, quote=False) == "x" * 60 + "… (600,000 characters)"


@pytest.mark.parametrize("extra, needles", [
    ({"sample": {"engine": HUGE}}, ["sample.engine: got 'xxx", "… (600,000 characters), expected one of hf"]),
    ({"iterations": HUGE}, ["iterations: got 'xxx", "(600,000 characters) (str), expected int"]),
    ({"method": HUGE}, ["method: got 'xxx", "(600,000 characters), expected one of"]),
    ({HUGE: 1}, ["xxx… (600,000 characters): unknown setting"]),  # (a long key is written `? key`)
    ({"eval": {"tasks": [HUGE]}}, ["eval.tasks: unknown 'xxx", "(600,002 characters)"]),
])
def test_a_huge_value_in_a_run_config_is_shortened(cream_exe, tmp_path, extra, needles):
    cfg = write_tiny_run_config(tmp_path, extra, name="c")
    one_short_line(refused(cream_exe, tmp_path, "run", cfg, "--check", needles=needles))


def test_a_huge_model_name_is_refused_by_its_key(cream_exe, tmp_path):
    """A path-valued key longer than any path: named by the key, not an OSError that quotes it whole."""
    cfg = write_tiny_run_config(tmp_path, name="c", model=HUGE)
    r = refused(cream_exe, tmp_path, "run", cfg, "--check",
                needles=["model: got 'xxx", "(600,000 characters), expected a local checkpoint folder",
                         "at most 4,096 characters"])
    one_short_line(r)


def test_a_huge_value_in_a_stage_config_file_and_on_the_command_line(cream_exe, tmp_path):
    conf = tmp_path / "sample.yaml"
    conf.write_text(f"n: {HUGE}\n")
    one_short_line(refused(cream_exe, tmp_path, "sample", "p.parquet", "--model", ALIAS, "--out", tmp_path / "o",
                           "--config", conf, needles=["n: got 'xxx", "(600,000 characters) (str), expected int"]))
    one_short_line(refused(cream_exe, tmp_path, "sample", "p.parquet", "--model", ALIAS, "--out", tmp_path / "o",
                           "--engine", LONG_ARG, needles=["--engine: got 'xxx", "(100,000 characters)"]))
    # an OSError's file name (a path longer than the system takes) and an unknown flag: the last bound, cli/main.py
    one_short_line(refused(cream_exe, tmp_path, "prompts", LONG_ARG, "--out", tmp_path / "o",
                           needles=["(100,000 characters): File name too long"]))
    one_short_line(refused(cream_exe, tmp_path, "sample", "p.parquet", "--model", ALIAS, "--out", tmp_path / "o",
                           f"--{LONG_ARG}", needles=["no such option --xxx", "(100,002 characters)"]))


def test_ten_thousand_problems_are_one_line_that_fits_a_screen(cream_exe, tmp_path):
    cfg = write_tiny_run_config(tmp_path, name="c", text="".join(f"key{i}: 1\n" for i in range(10_000)))
    r = refused(cream_exe, tmp_path, "run", cfg, "--check",
                needles=["10000 problem(s): key0: unknown setting", "… and 9,980 more"])
    one_short_line(r, 4000)


# ---------------------------------------------------------------------------- 2. not a regular file
@pytest.fixture
def specials(tmp_path) -> dict[str, tuple[Path, str]]:
    """A named pipe (opening it would block), a character device and a folder, each with what it is called."""
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "folder.yaml").mkdir()
    return {"pipe": (tmp_path / "pipe.yaml", "not a regular file (a named pipe)"),
            "device": (Path("/dev/zero"), "not a regular file (a character device)"),
            "folder": (tmp_path / "folder.yaml", "is a folder, expected")}


@pytest.mark.parametrize("kind", ["pipe", "device", "folder"])
def test_a_special_file_as_a_run_config_or_a_stage_config(cream_exe, tmp_path, specials, kind):
    path, said = specials[kind]
    refused(cream_exe, tmp_path, "run", path, "--check", needles=[f"{path}: {said}"], absent=["not found"])
    refused(cream_exe, tmp_path, "train", "data.parquet", "--model", ALIAS, "--out", tmp_path / "o", "--config", path,
            needles=[f"--config {path}: {said}"], absent=["no such file"])


@pytest.mark.parametrize("kind", ["pipe", "device"])
def test_a_special_file_as_prompts_or_data(cream_exe, tmp_path, specials, kind):
    path, said = specials[kind]
    prompts, sft = DEMO_DATA / "demo_prompts.jsonl", DEMO_DATA / "demo_sft.jsonl"
    for key, (src, data) in {"prompts.source": (path, sft), "sft.data": (prompts, path)}.items():
        cfg = write_tiny_run_config(tmp_path, name="c", sft={"data": data}, prompts={"source": src})
        for mode in ("--check", "--plan"):
            refused(cream_exe, tmp_path, "run", cfg, mode, needles=[f"{key}: {path}: {said}"])
    refused(cream_exe, tmp_path, "prompts", path, "--out", tmp_path / "o", needles=[f"{path}: {said}"])
    refused(cream_exe, tmp_path, "sample", path, "--model", ALIAS, "--out", tmp_path / "o", needles=[f"{path}: {said}"])
    refused(cream_exe, tmp_path, "train", path, "--model", ALIAS, "--out", tmp_path / "o", needles=[f"{path}: {said}"])


def test_a_json_object_file_that_is_a_pipe_is_not_opened(tmp_path):
    from cream_data.jsonfile import read_json_object

    os.mkfifo(tmp_path / "manifest.json")
    with pytest.raises(CreamError, match=r"manifest.json: corrupt manifest \(not a regular file \(a named pipe\)"):
        read_json_object(tmp_path / "manifest.json", what="manifest", fix="rerun")


# ---------------------------------------------------------------------------- 3. integer settings have bounds
def _column_max(kind: str, column: str) -> int:
    return 2 ** (schemas.get(kind).arrow.field(column).type.bit_width - 1) - 1


def test_the_sample_bounds_are_the_responses_table_columns():
    from cream_data.settings import INT64_MAX
    from cream_data.stages.sample_config import MAX_ITERATION, MAX_N

    assert MAX_N == _column_max("responses", "response_idx")  # response_idx 0 … n-1
    assert MAX_ITERATION == _column_max("responses", "iteration") == _column_max("preferences", "iteration")
    assert INT64_MAX == _column_max("responses", "seed")


@pytest.mark.parametrize("args, needles", [
    (["--n", "40000"], ["--n: got 40000, expected at least 1 and at most 32,767"]),
    (["--n", str(10**30)], ["--n: got 1000000000000000000000000000000, expected at least 1 and at most 32,767"]),
    (["--seed", str(2**64)], [f"--seed: got {2**64}, expected a 64-bit integer"]),
    (["--iteration", str(2**31)], [f"--iteration: got {2**31}, expected >= 0 and <= 2,147,483,647"]),
    (["--max-new-tokens", str(2**70)], [f"--max-new-tokens: got {2**70}, expected a 64-bit integer"]),
])
def test_sample_refuses_numbers_beyond_its_columns_before_any_work(cream_exe, tmp_path, args, needles):
    refused(cream_exe, tmp_path, "sample", DEMO_DATA / "demo_prompts.jsonl", "--model", ALIAS, "--out",
            tmp_path / "o", *args, needles=needles)


@pytest.mark.parametrize("extra, text, needle", [  # text: what a mapping cannot hold, typed into the file
    ({"sample": {"n": 40000}}, "", "sample.n: got 40000, expected at least 1 and at most 32,767"),
    ({"iterations": 2**31}, "", f"iterations: got {2**31}, expected >= 1 and <= 2,147,483,647"),
    ({"sample": {"limit": 2**64}}, "", f"sample.limit: got {2**64}, expected a 64-bit integer"),
    ({}, "seed: " + "9" * 5000 + "\n", "seed: an integer of 5,000 digits, expected at most 4,000"),
    ({}, "seed: 2024-13-45\n", "'2024-13-45' is not a valid timestamp (month must be in 1..12)"),
])
@pytest.mark.parametrize("mode", ["--check", "--plan"])
def test_a_run_config_refuses_numbers_beyond_the_columns(cream_exe, tmp_path, extra, text, needle, mode):
    cfg = write_tiny_run_config(tmp_path, extra, name="c", text=text)
    refused(cream_exe, tmp_path, "run", cfg, mode, needles=[needle])


# ---------------------------------------------------------------------------- 4. records within bounds
@pytest.mark.parametrize("name, text, needles", [
    ("deep.jsonl", '{"prompt": "hi"}\n' + "[" * 100_000 + "]" * 100_000 + "\n",
     ["deep.jsonl line 2: nested too deeply to read"]),
    ("deep-field.jsonl", '{"prompt": "x", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
     ["deep-field.jsonl line 1: nested too deeply to read"]),
    ("deep.json", "[" * 100_000 + "]" * 100_000, ["deep.json: nested too deeply to read"]),
    ("big-number.jsonl", '{"prompt": "hi", "id": ' + "9" * 5000 + "}\n",
     ["big-number.jsonl line 1: a number too long to read"]),
])
def test_hostile_records_are_refused_naming_file_and_line(cream_exe, tmp_path, name, text, needles):
    (tmp_path / name).write_text(text)
    refused(cream_exe, tmp_path, "prompts", tmp_path / name, "--out", tmp_path / "o", needles=needles,
            absent=["RecursionError"])


def test_a_long_csv_field_is_a_long_prompt(cream_exe, tmp_path):
    """Beyond the csv module's 131,072-character default: a prompt may be long."""
    (tmp_path / "long.csv").write_text('prompt,answer\n"' + "y" * 200_000 + '",1\n')
    r = cream_exe("prompts", tmp_path / "long.csv", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.code == 0 and "wrote 1 prompts" in r.out, r
    from cream_data.tables.io import read_table

    assert len(read_table(tmp_path / "o", "prompts").column("prompt")[0].as_py()[0]["content"]) == 200_000


def test_a_csv_field_beyond_the_bound_is_one_error(tmp_path, monkeypatch):
    from cream_data.inputs import records
    from cream_data.inputs.prompts import load_prompts

    monkeypatch.setattr(records, "MAX_CSV_FIELD", 1000)
    (tmp_path / "t.tsv").write_text("prompt\tanswer\nshort\t1\n" + "y" * 2000 + "\t2\n")
    before = csv.field_size_limit()
    with pytest.raises(CreamError, match=r"t\.tsv line 3: a field longer than 1,000 characters"):
        load_prompts(str(tmp_path / "t.tsv"))
    assert csv.field_size_limit() == before  # the csv module's limit is the process's: put back


# ---------------------------------------------------------------------------- 5. the bounded YAML reader in cream_data
def test_the_yaml_reader_lives_in_cream_data_without_cream_train():
    code = ("import sys, cream_data.config_yaml; "
            "print([m for m in sys.modules if m.startswith('cream_train')])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    assert not (REPO / "cream_train" / "config_yaml.py").exists()


def test_read_saved_config_for_publish(tmp_path):
    from cream_data.config_yaml import read_saved_config

    assert read_saved_config(tmp_path / "config.yaml") is None  # a run without one
    (tmp_path / "config.yaml").write_text("model: m\nsample: {n: 4}\n")
    assert read_saved_config(tmp_path / "config.yaml") == {"model": "m", "sample": {"n": 4}}
    for text, needle in [("model: m\nmodel: n\n", "duplicate key 'model'"), ("- 1\n", "got list, expected a mapping"),
                         ("a: &a [*a, *a]\n", "through its aliases")]:
        (tmp_path / "config.yaml").write_text(text)
        with pytest.raises(CreamError, match=needle):
            read_saved_config(tmp_path / "config.yaml")
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(CreamError, match="not a regular file"):
        read_saved_config(tmp_path / "pipe.yaml")


# ---------------------------------------------------------------------------- 6. validate first, then log
@pytest.fixture
def label_output(tmp_path) -> Path:
    """A `cream label --out` folder: `cream train` says it trains on its preferences/ (a note)."""
    from cream_data.tables.io import write_table
    from tests.support.tables import prefs_table

    write_table(prefs_table(), tmp_path / "lab" / "preferences", "preferences")
    return tmp_path / "lab"


def test_train_with_a_bad_model_gives_one_line_not_a_note_first(cream_exe, tmp_path, label_output):
    refused(cream_exe, tmp_path, "train", label_output, "--model", tmp_path / "no-model", "--out", tmp_path / "o",
            needles=["no-model", "does not exist"], absent=["a `cream label` output"])


@pytest.mark.parametrize("kind", ["no-weights", "reward-model"])
def test_harness_judges_its_model_before_lm_eval(cream_exe, tmp_path, tiny_model, kind):
    """A folder without weights, or a reward model, is refused as a policy before lm-eval loads anything."""
    pytest.importorskip("lm_eval")
    model = tmp_path / kind
    if kind == "no-weights":
        model.mkdir()
        for f in tiny_model.iterdir():
            if f.suffix != ".safetensors":
                (model / f.name).write_bytes(f.read_bytes())
    else:
        make_tiny_model(model, seed=3, num_labels=1)
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    for split in ("test", "train"):
        (data / f"{split}.jsonl").write_text('{"question": "1+1?", "answer": "2 #### 2"}\n')
    why = "the folder has no weights" if kind == "no-weights" else "not a causal language model"
    refused(cream_exe, tmp_path, "eval", "--harness", "gsm8k", "--model", model, "--out", tmp_path / "o",
            "--data-dir", tmp_path / "data", "--limit", "1", env={"HF_DATASETS_DISABLE_PROGRESS_BARS": "1"},
            needles=[f"--model {model}", why], absent=["harness: loading"])


def test_label_refuses_an_iteration_beyond_its_column(cream_exe, tmp_path):
    """preferences.iteration is an int32, as responses.iteration: refused by its flag before any model is read."""
    refused(cream_exe, tmp_path, "label", tmp_path / "responses", "--model", ALIAS, "--out", tmp_path / "o",
            "--iteration", str(2**40), needles=[f"--iteration: got {2**40}, expected >= 0 and <= 2,147,483,647"])


def test_check_shows_a_non_ascii_path_as_typed(cream_exe, tmp_path):
    folder = tmp_path / "données"
    cfg = write_tiny_run_config(folder, name="c", run_dir="sortie")
    r = cream_exe("run", cfg, "--check", cwd=tmp_path, env=CPU_ONLY)
    assert r.code == 0, r
    assert f"run_dir: {folder / 'sortie'}" in r.out, r.out[:400]


@pytest.mark.parametrize("args, needle", [
    (["label", "", "--out", "o", "--model", ALIAS], "RESPONSES: got an empty path"),
    (["label", "r", "--out", "", "--model", ALIAS], "--out: got an empty path"),
    (["train", "p", "--model", ALIAS, "--out", ""], "--out: got ''"),
])
def test_an_empty_path_is_named_not_read_as_the_current_folder(cream_exe, tmp_path, args, needle):
    """click turns "" into ".": the user gets the flag they left empty, not a complaint about the current folder."""
    refused(cream_exe, tmp_path, *args, needles=[needle])
