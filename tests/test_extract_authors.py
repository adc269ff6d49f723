"""`cream eval --extract cream|authors`: the two answer extractors on hand-made generations (where they agree and
where they part), every benchmark's gold answers under both, and the extractor recorded with the eval table."""

from __future__ import annotations

import json

import pytest

from cream_data.tables import io
from cream_data.rewards.answers import authors_choice, authors_correct, authors_number, extract_choice, extract_number
from cream_data.stages.evaluate import EvalConfig, load_examples, score
from tests.support.cli import assert_user_error

# (generation, what `cream` extracts (item letters A–E), what `authors` extracts); worked out by hand from the rules
CHOICE = [
    ("Answer: C", "C", "C"),
    ("answer: b", "B", "B"),
    ("**Answer:** C", "C", "C"),
    ("Answer:C", "C", "C"),
    ("The answer is (B).", "B", "B"),                          # authors: no "answer:", last standalone letter
    ("Answer: (C)", "C", "C"),                                 # authors: only through the last-letter fallback
    ("The correct option is D", "D", "D"),
    ("Answer: A cat sleeps all day.", "A", "A"),
    # where they part
    ("I pick C, since it is a dog.", None, "A"),               # the article "a" read as option A
    ("B. It is a fruit.", "B", "A"),                           # cream: a leading label; authors: the article again
    ("Answer: E", "E", None),                                  # authors allow A–D only
    ("Answer: b. Then again, answer: c", "C", "B"),            # cream: the last marker; authors: the first
    ("Answer: Because plants need light, D.", None, "D"),      # cream wants the label right after the marker
    ("Let me think. Answer: 2", "B", None),                    # cream maps a number to the 2nd option
    ("Answer: (B), or maybe d", "B", "D"),                     # authors: "(" breaks the marker; last letter wins
    ("A. red\nB. blue\nC. green\nAnswer: C", "C", "C"),        # an echoed option list; both read the marker
    ("A. red\nB. blue\nC. green", None, "C"),                  # echo only: cream ignores it, authors take the last
    ("", None, None),
    ("None of these fit.", None, None),
]

# (generation, cream, authors) for GSM8K
NUMBER = [
    ("9 * 2 = 18\n#### 18", "18", "18"),
    ("She has 3 apples and buys 4 more. Answer: 7", "7", "7"),
    ("The answer is $1,200.00", "1200", "1200"),
    ("First 12, then 15 and finally 20.", "20", "20"),
    ("answer is 0.50 dollars", "0.5", "0.5"),
    ("It is cold: -3 degrees. Answer: -3", "-3", "-3"),
    ("5 - 3 = 2", "2", "2"),
    ("x2 plus 4. #### 6", "6", "6"),
    ("Answer: twelve", None, None),
    ("Answer: none of these. The total is 5, not 4", "5", "5"),      # both: the first number after the marker
    # where they part
    ("### Step 1\nShe earns 18 dollars.\nAnswer: 18", "18", "1"),   # "###" outranks "answer:"
    ("Answer: 12. Wait, no: answer: 14", "14", "12"),                # first vs last marker
    ("The answer is 7, then +1.\nAnswer: 8", "8", "8"),
    ("Total: 7 #### 7. Answer: 8", "8", "7"),                        # "####" outranks "answer:" for authors
    ("The result is 3.5e2", "3.5", "2"),
    ("So it is 10\nAnswer 4", "4", "4"),                             # "\nAnswer" never matches lower-cased text
]


@pytest.mark.parametrize("text,cream,authors", CHOICE)
def test_choice_extractors(text, cream, authors):
    assert extract_choice(text, "ABCDE") == cream
    assert authors_choice(text) == authors


@pytest.mark.parametrize("text,cream,authors", NUMBER)
def test_number_extractors(text, cream, authors):
    assert extract_number(text) == cream
    assert authors_number(text) == authors


def test_enough_cases_and_both_kinds():
    cases = CHOICE + NUMBER
    disagree = [c for c in cases if c[1] != c[2]]
    assert len(cases) >= 30 and len(disagree) >= 12 and len(cases) - len(disagree) >= 12


def test_score_under_each_extractor():
    assert score("gsm8k", "Answer: 1,000.0", "1000", None, "cream") == ("1000", True)
    assert score("gsm8k", "Answer: 1,000.0", "1000", None, "authors") == ("1000", True)
    assert score("gsm8k", "Answer: 0.5", "1/2", None, "cream") == ("0.5", True)      # numbers compared as numbers
    assert score("gsm8k", "Answer: 0.5", "1/2", None, "authors") == ("0.5", False)   # strings compared
    assert score("arc_easy", "I pick C, it is a dog", "C", "ABCD", "authors") == ("A", False)
    assert score("arc_easy", "I pick C, it is a dog", "C", "ABCD", "cream") == (None, False)
    assert authors_correct("b", "B") and not authors_correct(None, "B")


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge", "openbookqa", "siqa", "gsm8k"])
def test_every_gold_answer_parses_under_both(task, shared_data):
    ex = load_examples(task, EvalConfig(tasks=(task,), data_dir=str(shared_data)))
    beyond_d = 0
    for gold, letters in zip(ex.answers, ex.letters):
        text = f"Let me work it out.\nAnswer: {gold}"
        assert score(task, text, gold, letters, "cream") == (gold, True)
        if gold in "EFGHIJ" and task != "gsm8k":  # the authors' extractor knows A–D only
            beyond_d += 1
            assert score(task, text, gold, letters, "authors")[1] is False
            continue
        assert score(task, text, gold, letters, "authors") == (gold, True), gold
    assert beyond_d < 0.01 * len(ex.answers)  # a handful of 5-option ARC items


def test_eval_records_the_extractor(cli, tiny_model, shared_data, tmp_path):
    out = tmp_path / "ev"
    args = ("eval", "--model", tiny_model, "--tasks", "arc_easy,gsm8k", "--limit", "2", "--data-dir", shared_data,
            "--max-new-tokens", "4", "--out", out)
    assert cli(*args, "--extract", "authors").code == 0
    manifest = io.read_manifest(out)
    assert manifest["summary"]["extractor"] == "authors"
    import pyarrow.parquet as pq

    metas = [json.loads(pq.read_schema(p).metadata[b"cream.eval_task"]) for p in sorted(out.glob("part-*.parquet"))]
    assert {m["extractor"] for m in metas} == {"authors"} and len(metas) == 2
    table = io.read_table(out, "eval")
    for r in table.to_pylist():  # the stored prediction is the authors' one
        want = authors_number(r["response"]) if r["task"] == "gsm8k" else authors_choice(r["response"])
        assert r["prediction"] == want
    # resuming into the folder with the other extractor would mix two scorings: refused
    assert_user_error(cli(*args, "--extract", "cream"), "other settings", "extract 'authors' -> 'cream'")
    assert_user_error(cli(*args, "--extract", "mine"), "extract", "cream, authors")
