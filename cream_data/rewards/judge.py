"""The SRLM LLM-as-a-judge reward: a 5-point additive rubric prompt and a robust "Score: k" parser.

Self-Rewarding Language Models (Yuan et al., 2024) let the model grade its own responses with an additive
rubric: five criteria, one point each, the judge justifies briefly and ends with ``Score: <total points>``.
The text below follows that structure in our own words. Two ways to turn the judge's output into a reward
(``--judge-mode``, docs/REWARDS.md):

* ``parse``: the total parsed from the text, in [0, 5]; an output with no parseable score gives ``None`` (a null
  reward, counted and reported by the labeling stage).
* ``expected`` (the default): the expected score under the model's own next-token distribution over the
  values 0–5 right after the cue ``Score: `` — where the judge wrote the cue, or after the cue appended to its
  text when it wrote none. Never null; ``confidence`` is the probability mass that fell on the values.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from pathlib import Path

from cream_data.errors import CreamError
from cream_data.hashing import text_hash

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


def judge_messages(prompt_conv: str | Sequence[dict], response: str,
                   template: str = JUDGE_PROMPT) -> list[dict[str, str]]:
    """The judge conversation (one user turn) asking the model to grade ``response`` to ``prompt_conv``, from
    ``template`` (``{request}`` and ``{response}`` placeholders; see :func:`load_judge_template`).

    >>> msgs = judge_messages([{"role": "user", "content": "What is 2+2?"}], "4")
    >>> msgs[0]["role"], "<request>\\nWhat is 2+2?\\n</request>" in msgs[0]["content"]
    ('user', True)
    """
    return [{"role": "user", "content": template.format(request=render_request(prompt_conv), response=response)}]


def template_problem(text: str) -> str | None:
    """What is wrong with a judge template, or None: ``{request}`` and ``{response}`` exactly once each, no other
    ``{…}`` field (``{{`` and ``}}`` stand for literal braces).

    >>> template_problem("Q: {request} A: {response} {{json}}") is None
    True
    >>> template_problem("Q: {request} A: {answer}")
    'unknown placeholder {answer} (only {request} and {response} are filled in; write {{ and }} for literal braces)'
    """
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        return f"malformed braces ({e}; write {{{{ and }}}} for literal braces)"
    for name, spec, conv in fields:
        shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        if name not in ("request", "response") or spec or conv:
            return (f"unknown placeholder {shown} (only {{request}} and {{response}} are filled in; "
                    "write {{ and }} for literal braces)")
    for name in ("request", "response"):
        count = sum(f[0] == name for f in fields)
        if count == 0:
            return f"no {{{name}}} placeholder, expected exactly one"
        if count > 1:
            return f"placeholder {{{name}}} appears {count} times, expected exactly once"
    return None


def load_judge_template(path: str | Path) -> str:
    """A judge prompt template from a UTF-8 text file, checked (:func:`template_problem`); one-line errors."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CreamError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CreamError(f"{path}: is a folder, expected a text file") from None
    except UnicodeDecodeError as e:
        raise CreamError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise CreamError(f"{path}: cannot be read ({e.strerror})") from None
    problem = template_problem(text)
    if problem:
        raise CreamError(f"{path}: {problem}")
    return text


def judge_template_hash(text: str) -> str:
    """sha256 (16 hex) of a judge template's text: what the labels depend on, recorded in manifests."""
    return text_hash(text)


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


# ---------------------------------------------------------------------------- expected-score mode
SCORE_VALUES = (0, 1, 2, 3, 4, 5)
APPENDED_CUE = "\nScore:"  # what the model reads after its own text when it wrote no cue (+ cue_tail)
APPENDED_MARK = "\n[cue appended] Score:"  # how that appears in the stored judge text

# The cue the prompt asks for: "Score:", any case, optionally in markdown bold (**Score:**, **Score**:).
_CUE = re.compile(r"(?<![a-z0-9_])(?:\*\*)?score(?:\*\*)?:(?:\*\*)?", re.IGNORECASE)


def find_score_cue(text: str) -> int | None:
    """End offset of the judge's *last* score cue in ``text`` (the parser's rule: the last label wins), or None.

    >>> t = "Relevant.\\n**Score:** 4"
    >>> t[:find_score_cue(t)], find_score_cue("underscore: 3"), find_score_cue("no cue")
    ('Relevant.\\n**Score:**', None, None)
    """
    last = None
    for last in _CUE.finditer(text):
        pass
    return last.end() if last else None


def judge_prefix(text: str) -> tuple[str, str, bool]:
    """``(prefix, stored, appended)`` for one judge output: ``prefix`` is the generated text up to and including
    its last cue, or the whole text plus :data:`APPENDED_CUE` when it has none (``appended``); ``stored`` is the
    judge text to keep, with an appended cue marked by :data:`APPENDED_MARK`. The caller adds :func:`cue_tail`.

    >>> judge_prefix("Good.\\nScore: 3\\nDone.")
    ('Good.\\nScore:', 'Good.\\nScore: 3\\nDone.', False)
    >>> judge_prefix("Good but")
    ('Good but\\nScore:', 'Good but\\n[cue appended] Score:', True)
    """
    end = find_score_cue(text)
    if end is None:
        return text + APPENDED_CUE, text + APPENDED_MARK, True
    return text[:end], text, False


def cue_tail(tokenizer) -> str:
    """What follows the cue's colon so that the next token is the score digit: ``" "`` when the tokenizer writes
    ``"Score: 4"`` as ``… ":" " " "4"`` (SmolLM2, Llama: digits are single tokens, the space its own token),
    ``""`` when it merges the space into the digit (``… ":" " 4"``, GPT-2 style)."""
    full = tokenizer("Score: 4", add_special_tokens=False)["input_ids"]
    for tail in (" ", ""):
        head = tokenizer("Score:" + tail, add_special_tokens=False)["input_ids"]
        if len(full) == len(head) + 1 and full[:len(head)] == head:
            return tail
    return " "


def value_token_ids(tokenizer) -> list[list[int]]:
    """For each score value 0..5, every single token id that decodes to that digit with or without one leading
    space (``"4"``, ``" 4"``, ``"▁4"``): the ways a judge can write the value as its next token."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    wanted = {str(v): k for k, v in enumerate(SCORE_VALUES)}
    out: list[list[int]] = [[] for _ in SCORE_VALUES]
    for i, piece in enumerate(vocab):
        if piece is None or not any(ch in piece for ch in wanted):  # only a token holding a digit can decode to one
            continue
        text = tokenizer.decode([i])
        k = wanted.get(text[1:] if text.startswith(" ") else text)
        if k is not None:
            out[k].append(i)
    missing = [str(v) for v, ids in zip(SCORE_VALUES, out) if not ids]
    if missing:
        raise CreamError(f"--judge-mode expected: the tokenizer has no single token for the digit(s) "
                         f"{', '.join(missing)}; use --judge-mode parse")
    return out
