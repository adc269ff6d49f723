"""Answer extraction on real GSM8K / ARC / OpenBookQA answers and on messy model generations."""

from __future__ import annotations

import doctest
import json
import re

import pytest

from cream_data.rewards import answers
from cream_data.rewards.answers import extract_choice, extract_number, normalize_number, numbers_equal, oracle_reward


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_docstring_examples():
    assert doctest.testmod(answers).failed == 0


@pytest.mark.parametrize("split", ["train", "test"])
def test_gsm8k_reference_solutions(shared_data, split):
    rows = _jsonl(shared_data / "gsm8k" / f"{split}.jsonl")
    assert len(rows) > 1000
    for row in rows:
        final = row["answer"].split("####")[-1].strip()
        expected = final.replace(",", "")
        assert re.fullmatch(r"-?\d+", expected), final  # GSM8K finals are integers, some with commas
        assert extract_number(row["answer"]) == expected, row["answer"][-80:]
        assert oracle_reward(f"Step by step... so the result is {final}.\nAnswer: {final}", row["answer"]) == 1.0
        assert oracle_reward(f"Answer: {int(expected) + 1}", expected) == 0.0


def _mc_items(shared_data):
    files = ["arc/ARC-Easy-Test.jsonl", "arc/ARC-Challenge-Test.jsonl", "openbookqa/test.jsonl"]
    for f in files:
        yield from _jsonl(shared_data / f)


def test_arc_and_openbookqa_answer_keys(shared_data):
    n = numeric = 0
    for item in _mc_items(shared_data):
        choices = item["question"]["choices"]
        labels = "".join(c["label"] for c in choices)
        key = item["answerKey"]
        key_text = next(c["text"] for c in choices if c["label"] == key)
        listing = "\n".join(f"({c['label']}) {c['text']}" for c in choices)  # every label appears in brackets
        generations = [
            f"Let's look at the options:\n{listing}\nThe best fit is {key_text}.\nAnswer: {key}",
            f"{listing}\n\nSo the answer is ({key}).",
            f"**Answer:** {key}. {key_text}",
            f"{key}. {key_text} — this matches the question.",
        ]
        for g in generations:
            assert extract_choice(g, labels) == key, (item["id"], g)
        wrong = next(c["label"] for c in choices if c["label"] != key)
        assert extract_choice(f"{listing}\nAnswer: {wrong}", labels) == wrong
        if key.isalpha():
            assert oracle_reward(generations[0], key) == 1.0 and oracle_reward(f"Answer: {wrong}", key) == 0.0
        else:
            # ARC items labelled "1".."4": a letter answer maps by position, a digit answer is the label.
            numeric += 1
            assert extract_choice(f"Answer: {'ABCDE'[labels.index(key)]}", labels) == key
            assert oracle_reward(f"Answer: {key}", key) == 1.0
        n += 1
    assert n > 4000 and numeric > 100


# (generation, expected extract_number)
MESSY_NUMBERS = [
    ("Janet has 16 eggs. She uses 3 + 4 = 7. 16 - 7 = 9 eggs, sold at $2 each: 9 * 2 = 18.\nAnswer: 18", "18"),
    ("The answer is $1,250.", "1250"),
    ("**Answer:** 42.0", "42"),
    ("Answer: 3.50 dollars", "3.5"),
    ("So she pays 20 dollars in total.", "20"),
    ("First 12, then 15, then 20", "20"),
    ("Answer:\n\n 7", "7"),
    ("answer: -4", "-4"),
    ("The final answer is \\boxed{1,000,000}.", "1000000"),
    ("The temperature dropped to -5 degrees.", "-5"),
    ("We compute 5-3=2.", "2"),
    ("Answer: 18.\nThat was fun! I have 3 more questions.", "18"),
    ("#### 72", "72"),
    ("Total: 100%. Answer: 60%", "60"),
    ("The answer is 0.", "0"),
    ("Answer: 007", "7"),
    ("I don't know.", None),
    ("", None),
]

# (generation, letters, expected extract_choice)
MESSY_CHOICES = [
    ("Answer: C", "ABCD", "C"),
    ("answer: c)", "ABCD", "C"),
    ("Answer: a cat is a mammal", "ABCD", None),  # "a" is an article, not option A
    ("**Answer:** (B)", "ABCD", "B"),
    ("The answer is (D).", "ABCD", "D"),
    ("The correct option is 3", "ABCD", "C"),  # a numeric answer mapped by position
    ("Answer: 2", "ABCD", "B"),
    ("Answer: option D", "ABCD", "D"),
    ("(A) is wrong, (B) is wrong, so (C)", "ABCD", "C"),
    ("B. Because plants need light.", "ABCD", "B"),
    ("C) shorter days", "ABCD", "C"),
    ("Answer: E", "ABCD", None),  # not an option
    ("Answer: E", "ABCDE", "E"),
    ("Answer: B", "1234", "2"),  # ARC numeric labels
    ("Answer: 4", "1234", "4"),
    ("A) is tempting.\nAnswer: D", "ABCD", "D"),
    ("I am not sure which one.", "ABCD", None),
    ("Answer: I think it's B", "ABCD", None),  # marker not followed by a label, no brackets, no lead
    ("The answer would be B, since...", "ABCD", "B"),
]


def test_messy_corpus_is_large_enough():
    assert len(MESSY_NUMBERS) + len(MESSY_CHOICES) >= 30


@pytest.mark.parametrize(("text", "expected"), MESSY_NUMBERS)
def test_extract_number_on_messy_generations(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize(("text", "letters", "expected"), MESSY_CHOICES)
def test_extract_choice_on_messy_generations(text, letters, expected):
    assert extract_choice(text, letters) == expected


def test_numbers_equal():
    assert numbers_equal("1,000", "1000.00") and numbers_equal("$5", 5) and numbers_equal("-0", "0")
    assert numbers_equal("0.5", "1/2") and not numbers_equal("0.33", "1/3")
    assert not numbers_equal(None, "1") and not numbers_equal("abc", "abc") and not numbers_equal(float("nan"), 1)


def test_normalize_number():
    assert [normalize_number(x) for x in ["18", "18.", "1,234", "$3.50", "-2.000", "1e3", "inf"]] == [
        "18", "18", "1234", "3.5", "-2", "1000", None]


def test_oracle_reward_kinds():
    assert oracle_reward("Answer: 18", "18") == 1.0
    assert oracle_reward("Answer: 18", "#### 18") == 1.0  # a GSM8K solution as the reference
    assert oracle_reward("no answer here", "18") == 0.0  # no extractable answer is wrong
    assert oracle_reward("Answer: (b)", "B") == 1.0 and oracle_reward("Answer: G", "g") == 1.0
    assert oracle_reward("Answer: Paris", "Paris") is None  # free text has no oracle
    assert oracle_reward("Answer: 1", None) is None and oracle_reward("Answer: 1", "  ") is None


def test_an_echoed_option_list_is_not_a_choice():
    """Small models often restate the options; that must not read as choosing A (eval and oracle alike)."""
    from cream_data.rewards.answers import extract_choice, oracle_reward

    echo = "A. a rubber band\nB. a copper wire\nC. a wooden spoon"
    assert extract_choice(echo, "ABC") is None
    assert oracle_reward(echo, "A") == 0.0
    assert extract_choice(echo + "\nCopper conducts. Answer: B", "ABC") == "B"
    assert extract_choice("A. Because copper conducts electricity.", "ABCD") == "A"  # one leading label still counts
