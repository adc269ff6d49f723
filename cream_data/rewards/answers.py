"""Final-answer extraction for oracle rewards and evaluation: GSM8K numbers and multiple-choice letters.

The evaluation prompt asks the model to end with "Answer: …" (docs/algorithm.md, section 7), so an explicit
answer marker is always preferred; looser fallbacks (the last number, a parenthesised option, a leading
option letter) cover models that do not follow the format.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# A number: optional sign and "$", thousands groups with commas or plain digits, optional decimals.
# The look-behind keeps "x2" from reading as a number and the "3" of "5-3" from reading as -3.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>-)?\$?\s?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?(?![\d])"
)
# Where a final answer is announced: GSM8K's "####", "Answer:", "the answer is", LaTeX \boxed{…}.
_NUMBER_MARKERS = re.compile(r"####|\banswer\s*[*_]*\s*[:：]|\banswer\s+is\b|\\boxed\{", re.IGNORECASE)
_CHOICE_MARKERS = re.compile(
    r"\banswer\s*[*_]*\s*[:：]|\banswer\s+(?:is|would\s+be|will\s+be)\b|\bcorrect\s+(?:option|choice)\s+is\b",
    re.IGNORECASE,
)
# What follows a choice marker: markdown, "option"/"choice", then the label (maybe in brackets).
_AFTER_MARKER = re.compile(
    r"[\s*_:]*(?:(?:option|choice|letter)\s+)?[*_]*(?P<open>[(\[])?\s*(?P<label>[A-Za-z0-9])\s*(?P<close>[)\]])?"
    r"(?P<after>[^A-Za-z0-9]|$)"
)
_PAREN_LABEL = re.compile(r"\((?P<label>[A-Z0-9])\)")
_LEADING_LABEL = re.compile(r"^[\s*_#>-]*(?P<label>[A-Z0-9])[.):](?:\s|$)")


def normalize_number(raw: str) -> str | None:
    """Canonical text of a number: commas, "$" and spaces dropped, ``42.0`` → ``42``, ``3.50`` → ``3.5``.

    >>> normalize_number("$1,234.50"), normalize_number("42.0"), normalize_number("-0"), normalize_number("x")
    ('1234.5', '42', '0', None)
    """
    text = raw.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_number(text: str | None) -> str | None:
    """The final numeric answer in ``text``, normalised (see :func:`normalize_number`), or ``None``.

    The first number after the last answer marker ("####", "Answer:", "the answer is", ``\\boxed{``) wins;
    with no marker followed by a number, the last number in the text.

    >>> extract_number("She makes 9 * 2 = $<<9*2=18>>18 every day.\\n#### 18")
    '18'
    >>> extract_number("So the total is 3 + 4 = 7 apples.\\nAnswer: $1,200.00.")
    '1200'
    >>> extract_number("First 12, then 15 and finally 20.")
    '20'
    """
    if not text:
        return None
    for marker in reversed(list(_NUMBER_MARKERS.finditer(text))):
        m = _NUMBER.search(text, marker.end())
        if m:
            return _number_text(m)
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return _number_text(last) if last else None


def _number_text(m: re.Match) -> str | None:
    return normalize_number((m.group("sign") or "") + m.group("int") + (m.group("frac") or ""))


def numbers_equal(a: str | float | int | None, b: str | float | int | None) -> bool:
    """Whether two answers denote the same number (exactly, as fractions): ``"1,000" == "1000.0"``, ``"1/2" == "0.5"``.

    >>> numbers_equal("1,000", 1000), numbers_equal("0.5", "1/2"), numbers_equal("7", None)
    (True, True, False)
    """
    fa, fb = _fraction(a), _fraction(b)
    return fa is not None and fb is not None and fa == fb


def _fraction(x) -> Fraction | None:
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return Fraction(x) if x == x and abs(x) != float("inf") else None
    text = str(x).strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def extract_choice(text: str | None, letters: str = "ABCDE") -> str | None:
    """The option label chosen in ``text`` (one of ``letters``), or ``None``.

    Preference: the last answer marker followed by a label ("Answer: C", "the answer is (B)",
    "**Answer:** option D"); else the last parenthesised label "(C)"; else a label leading the text
    ("B. Because…", "C) …"). A numeric label is mapped by position when ``letters`` are letters
    ("Answer: 2" → "B"), and a letter by position when ``letters`` are digits (ARC's "1".."4" items).
    Lower-case letters count only right after an answer marker, and only when set off ("answer: c)"),
    so that "Answer: a cat" is not read as option A.

    >>> extract_choice("Rotation speeds up, so days get shorter. Answer: (C)")
    'C'
    >>> extract_choice("The answer is 2.", letters="ABCD"), extract_choice("Answer: B", letters="1234")
    ('B', '2')
    """
    if not text:
        return None
    text = _drop_option_list(text)
    for marker in reversed(list(_CHOICE_MARKERS.finditer(text))):
        m = _AFTER_MARKER.match(text, marker.end())
        if not m:
            continue
        label = m.group("label")
        if label.islower() and not (m.group("open") or m.group("close") or m.group("after") in (".", ":", "")):
            continue
        found = _to_label(label, letters)
        if found:
            return found
    for m in reversed(list(_PAREN_LABEL.finditer(text))):
        found = _to_label(m.group("label"), letters)
        if found:
            return found
    m = _LEADING_LABEL.match(text)
    return _to_label(m.group("label"), letters) if m else None


_OPTION_LINE = re.compile(r"^[\s*_#>-]*([A-J])[.)]\s", re.MULTILINE)


def _drop_option_list(text: str) -> str:
    """``text`` without its option lines when it restates two or more options ("A. …", "B) …").

    Small models often echo the option list; the leading-label fallback would then read the echo as a choice
    of "A". An answer stated elsewhere ("Answer: C") still counts.
    """
    if len({m.group(1) for m in _OPTION_LINE.finditer(text)}) < 2:
        return text
    return "\n".join(ln for ln in text.split("\n") if not _OPTION_LINE.match(ln))


def _to_label(raw: str, letters: str) -> str | None:
    labels = list(letters)
    cand = raw.upper()
    if cand in labels:
        return cand
    if cand.isdigit() and not any(lb.isdigit() for lb in labels):
        pos = int(cand) - 1
    elif cand.isalpha() and all(lb.isdigit() for lb in labels):
        pos = ord(cand) - ord("A")
    else:
        return None
    return labels[pos] if 0 <= pos < len(labels) else None


def oracle_reward(response: str | None, reference_answer: str | None) -> float | None:
    """1.0 if ``response`` reaches ``reference_answer``, 0.0 if not; ``None`` without a usable reference.

    The reference decides the kind of check: a single letter → multiple choice (options A… up to at least E,
    extended to the reference letter); a number (or a GSM8K solution ending "#### n") → numeric equality.
    A response with no extractable answer is wrong (0.0). Other references (free text) have no oracle: None.

    >>> oracle_reward("3 + 4 = 7. Answer: 7", "7"), oracle_reward("Answer: B", "C"), oracle_reward("x", None)
    (1.0, 0.0, None)
    """
    if reference_answer is None or not str(reference_answer).strip():
        return None
    ref = str(reference_answer).strip()
    if len(ref) == 1 and ref.isalpha():
        ref = ref.upper()
        letters = string.ascii_uppercase[: max(5, ord(ref) - ord("A") + 1)]
        return float(extract_choice(response, letters) == ref)
    ref_number = normalize_number(ref) or (extract_number(ref) if "####" in ref else None)
    if ref_number is None:
        return None
    return float(numbers_equal(extract_number(response), ref_number))


# ---------------------------------------------------------------------------- the authors' extraction rules
# `cream eval --extract authors` scores the way the CREAM authors' evaluation does, so numbers can be set beside
# the paper's. These functions are written here from the rules as stated in docs/EVALUATION.md, flaws included:
# they are a compatibility mode, not a better extractor.
AUTHORS_GSM8K_MARKERS = ("####", "###", "answer:", "\nAnswer", "answer is")  # tried in this order
_AUTHORS_CHOICE = re.compile(r"\banswer:\s*([a-d])\b")
_AUTHORS_LETTER = re.compile(r"\b([a-d])\b")
_AUTHORS_NUMBER = re.compile(r"-?\d+\.?\d*")


def authors_choice(text: str | None) -> str | None:
    """Option letter by the authors' rules: the lower-cased text's first "answer: X" with X in a–d (set off by a
    non-letter), else the *last* standalone a–d anywhere — so the article "a" reads as option A, and E never
    counts.

    >>> authors_choice("Answer: (C)"), authors_choice("I pick C, it is a dog"), authors_choice("Answer: E")
    ('C', 'A', None)
    """
    if not text:
        return None
    low = text.strip().lower()
    m = _AUTHORS_CHOICE.search(low)
    if m:
        return m.group(1).upper()
    last = None
    for last in _AUTHORS_LETTER.finditer(low):
        pass
    return last.group(1).upper() if last else None


def _authors_number_text(raw: str) -> str | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return str(int(value)) if value.is_integer() else str(value)


def authors_number(text: str | None) -> str | None:
    """GSM8K answer by the authors' rules: on the lower-cased text, the first marker of
    :data:`AUTHORS_GSM8K_MARKERS` (in list order) that occurs splits the text; the first piece after it holding a
    number gives its *first* number; a marker with no number after it gives None; with no marker, the last
    number of the text. Commas are dropped; a whole value prints as an integer ("18.00" → "18"). "###" comes
    before "answer:", so a Markdown heading wins over a stated answer, and "\\nAnswer" never matches (the text
    is lower-cased) — both as in the reference.

    >>> authors_number("So 3 + 4 = 7.\\nAnswer: $1,200.00"), authors_number("### Step 1\\nAnswer: 18")
    ('1200', '1')
    """
    if not text:
        return None
    low = text.lower()
    for marker in AUTHORS_GSM8K_MARKERS:
        if marker in low:
            for piece in low.split(marker)[1:]:
                found = _AUTHORS_NUMBER.findall(piece.replace(",", ""))
                if found:
                    return _authors_number_text(found[0])
            return None
    found = _AUTHORS_NUMBER.findall(low.replace(",", ""))
    return _authors_number_text(found[-1]) if found else None


def authors_correct(prediction: str | None, gold: str) -> bool:
    """The reference's comparison: string equality of the lower-cased prediction and gold answer."""
    return prediction is not None and prediction.lower() == str(gold).strip().lower()
