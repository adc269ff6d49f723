"""Bad input to `cream prompts`, through the installed console script: each case is one stderr line naming file/row/field and what was expected,
exit code 2, no traceback, and nothing left behind (no output folder, no hidden temporary folder)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from cream_data.tables import io
from tests.support.cli import assert_user_error, snapshot

GSM = {"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}
ARC = {"id": "q1", "question": {"stem": "Pick", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]},
       "answerKey": "A"}
SIQA = {"context": "C.", "question": "Q?", "answerA": "a", "answerB": "b", "answerC": "c"}


def lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _prompts_parquet(path, version: str):
    t = pa.table({"prompt_id": ["a"], "prompt": [[{"role": "user", "content": "hi"}]], "source": ["s"],
                  "reference_answer": [None]}, schema=schemas.get("prompts", 1).arrow)  # a v1 table
    t = t.replace_schema_metadata({schemas.META_SCHEMA: b"prompts", schemas.META_VERSION: version.encode()})
    pq.write_table(t, path)


def _eval_table(path):
    t = pa.table({"model": ["m"], "task": ["gsm8k"], "example_id": ["1"], "response": ["r"], "prediction": ["4"],
                  "answer": ["4"], "correct": [True]})
    io.write_table(t, path, "eval")


# name: (file name, content: str | bytes | callable(path), extra args, needles)
CASES = {
    "truncated JSON line": ("d.jsonl", lines(GSM, '{"question": "What is 3+3?", "ans'), [],
                            ["d.jsonl line 2", "not valid JSON"]),
    "missing field": ("d.jsonl", lines(GSM, {"question": "Q?"}), [], ["line 2", "missing field 'answer'"]),
    "question is a number": ("d.jsonl", lines(GSM, {"question": 7, "answer": "#### 7"}), [],
                             ["line 2", "'question'", "a number", "expected a string"]),
    "question is a list": ("d.jsonl", lines(GSM, {"question": ["Q?"], "answer": "#### 1"}), [],
                           ["line 2", "'question'", "a list", "expected a string"]),
    "prompt turns malformed": ("d.jsonl", lines({"prompt": ["a", "b"]}), [], ["line 1", "'prompt[0]'", "role"]),
    "MC stem is a list": ("d.jsonl", lines({**ARC, "question": {"stem": ["x"], "choices": ARC["question"]["choices"]}}),
                          [], ["line 1", "question.stem", "a list"]),
    "empty file": ("d.jsonl", "", [], ["d.jsonl", "empty"]),
    "whitespace-only file": ("d.csv", "\n \n", [], ["d.csv", "empty"]),
    "empty prompt text": ("d.jsonl", lines(GSM, {"question": "   ", "answer": "#### 1"}), [],
                          ["line 2", "'question'", "empty"]),
    "duplicate source id": ("d.jsonl", lines(ARC, {**ARC, "id": "q2"}, ARC), [],
                            ["line 3", "duplicate prompt_id 'q1'", "line 1"]),
    "duplicate prompt text": ("d.jsonl", lines({"prompt": "hi"}, {"prompt": "yo"}, {"prompt": "hi"}), [],
                              ["line 3", "duplicate prompt_id", "line 1", "--dedupe"]),
    "non-UTF-8 bytes": ("d.jsonl", lines(GSM).encode() + b'{"question": "caf\xe9?", "answer": "#### 1"}\n', [],
                        ["d.jsonl line 2", "UTF-8"]),
    "unknown layout": ("d.jsonl", lines(GSM), ["--layout", "mmlu"],
                       ["--layout: unknown layout 'mmlu'", "gsm8k", "siqa"]),
    "undetectable layout": ("d.jsonl", lines({"foo": 1, "bar": 2}), [],
                            ["line 1", "cannot tell the layout", "['bar', 'foo']", "--layout", "alpaca_eval"]),
    "unknown extension": ("d.txt", "hello\n", [], ["d.txt", "extension '.txt'", ".jsonl"]),
    "wrong schema version": ("p.parquet", lambda p: _prompts_parquet(p, "9"), [], ["p.parquet", "schema version 9"]),
    "Parquet of another table": ("ev.parquet", _eval_table, [], ["ev.parquet", "'eval' table", "'prompts'"]),
    "MC answerKey not among labels": ("d.jsonl", lines(ARC, {**ARC, "id": "q2", "answerKey": "E"}), [],
                                      ["line 2", "answerKey", "'E'", "['A', 'B']"]),
    "MC choices wrong type": ("d.jsonl", lines({**ARC, "question": {"stem": "P", "choices": "A or B"}}), [],
                              ["line 1", "question.choices", "expected a list"]),
    "GSM8K answer without ####": ("d.jsonl", lines(GSM, {"question": "Q?", "answer": "it is 5"}), [],
                                  ["line 2", "'answer'", "####"]),
    "GSM8K final answer not a number": ("d.jsonl", lines(GSM, {"question": "Q?", "answer": "#### five"}), [],
                                        ["line 2", "not a number"]),
    "siqa labels with a different line count": ("dev.jsonl", lines(SIQA, SIQA, SIQA), [],
                                                ["dev-labels.lst", "2 label lines", "3 records"]),
    "siqa label out of range": ("dev.jsonl", lines(SIQA, SIQA), [], ["dev-labels.lst line 2", "expected 1, 2 or 3"]),
    "split-into larger than rows": ("d.jsonl", lines(GSM), ["--split-into", "5"], ["--split-into 5", "(1)"]),
    "split-into zero": ("d.jsonl", lines(GSM), ["--split-into", "0"], ["--split-into 0"]),
    "limit below one": ("d.jsonl", lines(GSM), ["--limit", "0"], ["--limit 0", "positive"]),
    "nonexistent path": (None, None, [], ["no-such-file.jsonl", "no such file"]),
    "Hub id unreachable (offline)": ("HUB", None, [], ["nobody/no-such-dataset", "Hugging Face Hub"]),
    "CSV row with extra values": ("d.csv", "prompt,answer\nhi,1\nyo,2,3\n", [], ["d.csv line 3", "3 values",
                                                                              "2 columns"]),
    "JSON array item not an object": ("d.json", json.dumps([GSM, "oops"]), [], ["d.json item 2", "a string", "expected a JSON object"]),
    "JSON line not an object": ("d.jsonl", lines(GSM, "[1, 2]"), [], ["line 2", "a list", "expected a JSON object"]),
    "prompt field not present": ("d.jsonl", lines({"q": "hi"}), ["--prompt-field", "text"],
                                 ["line 1", "missing prompt field 'text'", "q"]),
    "field flags with a benchmark layout": ("d.jsonl", lines(GSM), ["--layout", "gsm8k", "--prompt-field", "q"],
                                            ["--layout gsm8k", "generic layout only"]),
    "oasst rank not a number": ("d.jsonl", lines({"question": "Q?", "answer": "A", "rank": "best"}), ["--sft"],
                                ["line 1", "'rank'", "a string", "expected a number"]),
    "SFT from a source without answers": ("d.jsonl", lines(ARC), ["--sft"], ["d.jsonl", "none of its 1 records has an answer for SFT"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(cream_exe, tmp_path, name):
    fname, content, extra, needles = CASES[name]
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / (fname or "no-such-file.jsonl") if fname != "HUB" else "nobody/no-such-dataset"
    if callable(content):
        content(src)
    elif isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        src.write_text(content, encoding="utf-8")
    if name == "siqa labels with a different line count":
        (src_dir / "dev-labels.lst").write_text("1\n2\n")
    if name == "siqa label out of range":
        (src_dir / "dev-labels.lst").write_text("1\n4\n")
    out_root = tmp_path / "out"
    out_root.mkdir()
    before = snapshot(tmp_path)
    res = cream_exe("prompts", src, "--out", out_root / "table", *extra)  # the installed console script
    assert_user_error(res, *needles)
    assert list(out_root.iterdir()) == [], "output or temporary files left behind"
    assert snapshot(tmp_path) == before


def test_failing_split_leaves_an_existing_output_untouched(cli, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(lines(GSM, {**GSM, "question": "What is 5+5?"}))
    assert cli("prompts", src, "--out", tmp_path / "o", "--split-into", "2").code == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "o").rglob("*"))
    assert_user_error(cli("prompts", src, "--out", tmp_path / "o", "--split-into", "3", "--overwrite"),
                      "--split-into 3")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "o").rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
