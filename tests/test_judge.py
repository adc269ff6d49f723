"""The SRLM judge prompt and the score parser, on a corpus of messy judge outputs."""

from __future__ import annotations

import doctest
import re

import pytest

from cream_data.rewards import judge
from cream_data.rewards.judge import JUDGE_PROMPT, judge_messages, parse_judge_score, render_request

# (judge output, expected score) — the shapes small instruction-tuned judges really produce.
CORPUS = [
    ("The response is relevant and answers the question.\nScore: 4", 4.0),
    ("score: 4/5", 4.0),
    ("**Score:** 3", 3.0),
    ("Score: 4.5", 4.5),
    ("Score: 2\n\nOn reflection the answer is complete.\nScore: 5", 5.0),  # last one wins
    ("Justification: partially relevant.\n\nScore: 1.", 1.0),
    ("**Score: 4/5**", 4.0),
    ("Score = 3", 3.0),
    ("SCORE: 2", 2.0),
    ("Final Score: **4**", 4.0),
    ("Score: [3]", 3.0),
    ("Score: (4)", 4.0),
    ("Score: <4>", 4.0),
    ("Score:5", 5.0),
    ("Score: 3 out of 5", 3.0),
    ("Score: 3.5 / 5", 3.5),
    ("Score: 0", 0.0),
    ("Score: five", 5.0),
    ("Score: 4 points", 4.0),
    ("The response earns 1 point for relevance and 1 for coverage.\nTotal points: 2", 2.0),
    ("Score: <total points>\nScore: 2", 2.0),  # the judge echoed the format first
    ("Score: 3\n\nRemember: Score: <total points>", 3.0),  # echoed after: no value, ignored
    ("Score: 4\nNote: a score of 5 would need more depth.", 4.0),  # loose mention after a strict label
    ("I would give this response a score of 2.", 2.0),  # loose form when no "Score:" label exists
    ("My score is 4.", 4.0),
    ("SCORE - 4", 4.0),
    ("`Score: 3`", 3.0),
    ("- Relevance: yes\n- Coverage: yes\n- Usefulness: no\n\n__Score:__ 2", 2.0),
    # No usable score → None
    ("Score: 7", None),  # out of range
    ("Score: -1", None),
    ("Score -1", None),
    ("Score: 8/10", None),  # another scale
    ("Score: 10/10", None),
    ("The response is great, I'd give it full marks.", None),
    ("Score: N/A", None),
    ("", None),
    (None, None),
    ("It scores 3 points overall.", None),  # "scores" is not the label
    ("Score: <total points>", None),
    ("underscore: 3", None),
]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 25 and sum(v is None for _, v in CORPUS) >= 8


@pytest.mark.parametrize(("text", "expected"), CORPUS)
def test_parse_judge_score(text, expected):
    assert parse_judge_score(text) == expected


def test_parsed_scores_are_within_the_scale():
    for text, _ in CORPUS:
        s = parse_judge_score(text)
        assert s is None or 0.0 <= s <= 5.0


def test_docstring_examples():
    assert doctest.testmod(judge).failed == 0


def test_prompt_has_the_srlm_structure():
    criteria = re.findall(r"^- Add (?:1 point|a \dnd point|a \d(?:rd|th) point)", JUDGE_PROMPT, flags=re.M)
    assert len(criteria) == 5  # five additive criteria, one point each
    assert "additive 5-point" in JUDGE_PROMPT
    assert JUDGE_PROMPT.rstrip().endswith('"Score: <total points>".')


def test_judge_messages_embed_request_and_response():
    msgs = judge_messages([{"role": "user", "content": "Name a prime."}], "Seven is prime.")
    assert [m["role"] for m in msgs] == ["user"]
    body = msgs[0]["content"]
    assert "<request>\nName a prime.\n</request>" in body and "<response>\nSeven is prime.\n</response>" in body
    assert "{request}" not in body and "{response}" not in body
    # Braces in user text must not break formatting.
    assert "{x}" in judge_messages("Explain {x} in Python f-strings", "ok")[0]["content"]


def test_multi_turn_prompts_keep_the_context():
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Capital of France?"}]
    text = render_request(conv)
    assert text == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Capital of France?"
    assert render_request("plain") == "plain"
