"""The SRLM LLM-as-a-judge reward: a 5-point additive rubric prompt and a robust "Score: k" parser.

Self-Rewarding Language Models (Yuan et al., 2024) let the model grade its own responses with an additive
rubric: five criteria, one point each, the judge justifies briefly and ends with ``Score: <total points>``.
The text below follows that structure in our own words. The reward is the parsed total in [0, 5]; an
output with no parseable score gives ``None`` (a null reward, counted and reported by the labeling stage).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

JUDGE_PROMPT = """\
Evaluate how well the response below answers the user's request, using an additive 5-point scale. \
Start from 0 points and add one point for each criterion the response meets:

- Add 1 point if the response is relevant to the request and gives some useful information about it, \
even if it is incomplete or includes unrelated material.
- Add a 2nd point if the response covers a substantial part of the request, even though it does not \
fully resolve it or give a direct answer.
- Add a 3rd point if the response answers the essential parts of the request in a useful way, whether or \
not it reads as if written by an AI assistant and even if some details are missing.
- Add a 4th point if the response is written from an AI assistant's point of view, answers the request \
directly and completely, and is well organised and helpful, even if it could be a little clearer, \
more concise or more focused.
- Add a 5th point if the response is tailored to the request without flaws: no unnecessary content, \
expert knowledge shown, and a high-quality, engaging and insightful answer.

<request>
{request}
</request>

<response>
{response}
</response>

After reading the request and the response:
- Justify your total in at most 100 words.
- End with the total on its own line in the format "Score: <total points>".\
"""

MAX_SCORE = 5.0

_WORDS = {"zero": 0.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0}

# A "score" (or "total points") label, optional markdown emphasis and a separator, then the value,
# optionally wrapped in brackets/emphasis, optionally followed by "/ 5" or "out of 5". The strict form
# needs ":" or "=" (the format the prompt asks for); the loose form also takes "score is 4", "score of 4",
# "score - 4" and is used only when no strict label has a value.
_LABEL = r"(?<![a-z0-9])(?:score|total\s+points)(?![a-z])[\s*_]*"  # "_" may wrap it: __Score:__
_VALUE = r"""[\s*_]*[\[(<"'`]*\s*
    (?P<value>[-+]?\d+(?:\.\d+)?|zero|one|two|three|four|five)\b
    (?:\s*[\])>"'`*]*\s*(?:/|\bout\s+of\b)\s*(?P<denom>\d+(?:\.\d+)?))?"""
_STRICT = re.compile(_LABEL + r"[:=]" + _VALUE, re.IGNORECASE | re.VERBOSE)
_LOOSE = re.compile(_LABEL + r"(?:\bis\b|\bof\b|-(?=\s))?" + _VALUE, re.IGNORECASE | re.VERBOSE)


def render_request(prompt_conv: str | Sequence[dict]) -> str:
    """The user's request as text: a string as-is; a one-turn conversation as its content; longer
    conversations as ``Role: content`` blocks, so the judge sees the whole context."""
    if isinstance(prompt_conv, str):
        return prompt_conv
    turns = list(prompt_conv)
    if len(turns) == 1:
        return str(turns[0]["content"])
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)


def judge_messages(prompt_conv: str | Sequence[dict], response: str) -> list[dict[str, str]]:
    """The judge conversation (one user turn) asking the model to grade ``response`` to ``prompt_conv``.

    >>> msgs = judge_messages([{"role": "user", "content": "What is 2+2?"}], "4")
    >>> msgs[0]["role"], "<request>\\nWhat is 2+2?\\n</request>" in msgs[0]["content"]
    ('user', True)
    """
    return [{"role": "user", "content": JUDGE_PROMPT.format(request=render_request(prompt_conv), response=response)}]


def parse_judge_score(text: str | None) -> float | None:
    """The judge's total score in [0, 5], or ``None`` when the output has no usable score.

    The *last* "Score:" label followed by a value wins (judges often restate the rubric or correct
    themselves); looser phrasings ("my score is 4", "a score of 4") count only when there is none.
    Accepts markdown (``**Score:** 3``), fractions of 5 (``4/5``, ``4 out of 5``), halves (``4.5``) and
    number words (``four``). A value outside [0, 5], or a fraction of anything other
    than 5 (another scale), gives ``None`` rather than a guess.

    >>> parse_judge_score("Relevant and complete.\\nScore: 4")
    4.0
    >>> parse_judge_score("**Score:** 3/5"), parse_judge_score("Score: 7"), parse_judge_score("no idea")
    (3.0, None, None)
    """
    if not text:
        return None
    last = None
    for pattern in (_STRICT, _LOOSE):
        for last in pattern.finditer(text):
            pass
        if last is not None:
            break
    else:
        return None
    raw = last.group("value").lower()
    value = _WORDS[raw] if raw in _WORDS else float(raw)
    denom = last.group("denom")
    if denom is not None and float(denom) != MAX_SCORE:
        return None
    return value if 0.0 <= value <= MAX_SCORE else None
