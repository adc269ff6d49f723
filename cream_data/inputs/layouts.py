"""Source layouts: how the records of one benchmark or dataset turn into prompts (and SFT answers).

A *record* is one raw row (a dict) with its location (``"line 7"``, ``"item 3"``, ``"row 12"``).
A *layout* turns the records of one source into :class:`Item` s: the prompt turns, the source's own id
(or ``None``, then the caller hashes the content), a reference answer, and an answer for SFT.

Known layouts and the fields that identify them::

    gsm8k          question, answer ("… #### 72")             reference = number after ####, commas dropped
    arc/openbookqa question.stem, question.choices, answerKey  reference = option letter (labels "1".."4" → A..D)
                   (the Hub forms: question|question_stem + choices{text,label} too)
    siqa           context, question, answerA/B/C (+ sibling <stem>-labels.lst or a `label` field 1/2/3)
    oasst          prompt/response pairs, question/answer/rank pairs (SFT: rank 0) or raw message trees
    alpaca_eval    instruction, dataset (+ output)
    self_instruct  id, instruction, instances[{input, output}]
    generic        any fields, named by a :class:`FieldMap` (or guessed: prompt/instruction/question/…)

Multiple-choice prompts list the options one per line as ``A. text``; the answer is always a letter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from cream_data.errors import CreamError
from cream_data.settings import shown

Record = tuple[str, dict]  # (location such as "line 7", fields)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class FieldMap:
    """Which source fields hold what, for layouts the loader does not know (all optional)."""

    prompt: str | None = None  # a string, or a list of {role, content} turns
    answer: str | None = None  # reference answer (prompts) — for SFT, the completion when `completion` is unset
    id: str | None = None
    system: str | None = None
    completion: str | None = None  # SFT answer

    def __bool__(self) -> bool:
        return any((self.prompt, self.answer, self.id, self.system, self.completion))


@dataclass
class Item:
    """One prompt from a source, before ids are settled."""

    where: str
    turns: list[dict]
    id: str | None = None
    reference: str | None = None
    completion: str | None = None
    completion_is_human: bool = True  # the completion was written by a person (not a model's output)

    @property
    def human_answer(self) -> str | None:
        """The completion where a person wrote it: the prompts table's ``human_answer``."""
        c = self.completion
        return c if self.completion_is_human and c is not None and c.strip() else None


@dataclass
class Context:
    """What a layout may need beyond the records: the source's label and path (siqa's labels file)."""

    label: str  # the source as the user named it; used in messages
    path: Path | None = None  # a local file, when the source is one
    split: str | None = None
    fields: FieldMap = field(default_factory=FieldMap)

    def error(self, where: str, what: str) -> CreamError:
        return CreamError(f"{self.label} {where}: {what}")


# ---------------------------------------------------------------------------- field access
def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number",
            str: "a string"}.get(type(v), type(v).__name__)


def text(ctx: Context, where: str, obj: dict, key: str, *, name: str | None = None, required: bool = True,
         allow_empty: bool = False) -> str | None:
    """The string in ``obj[key]``; a one-line error naming the field when missing, mistyped or empty."""
    name = name or key
    if key not in obj or obj[key] is None:
        if not required:
            return None
        if key in obj:
            raise ctx.error(where, f"field '{name}' is null; expected a string")
        present = shown(", ".join(sorted(map(str, obj))), quote=False) or "none"
        raise ctx.error(where, f"missing field '{name}' (expected a string; fields present: {present})")
    v = obj[key]
    if not isinstance(v, str):
        raise ctx.error(where, f"field '{name}' is {_kind(v)}, expected a string")
    if not allow_empty and not v.strip():
        raise ctx.error(where, f"field '{name}' is empty, expected non-empty text")
    return v


def ident(ctx: Context, where: str, obj: dict, key: str) -> str:
    """An id field: a non-empty string or an integer."""
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
        got = "missing" if v is None else f"{_kind(v)}" if not isinstance(v, str) else "empty"
        raise ctx.error(where, f"id field '{key}' is {got}, expected a non-empty string or integer")
    return str(v)


def user(content: str, system: str | None = None) -> list[dict]:
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": content}]


# ---------------------------------------------------------------------------- reusable answer logic
def format_mc(question: str, choices: list[str]) -> tuple[str, list[str]]:
    """The question followed by one ``A. text`` line per option; returns (text, letters)."""
    letters = list(LETTERS[: len(choices)])
    lines = [question.strip()] + [f"{ltr}. {c.strip()}" for ltr, c in zip(letters, choices)]
    return "\n".join(lines), letters


def mc_letter(answer_key: str, labels: list[str]) -> str:
    """The letter of ``answer_key`` among the option ``labels`` (by position: labels "1".."4" → A..D).

    Raises ``ValueError`` when the key is not one of the labels.
    """
    key = str(answer_key).strip()
    if key not in labels:
        raise ValueError(key)
    return LETTERS[labels.index(key)]


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def gsm8k_reference(answer: str) -> str:
    """The final number of a GSM8K solution: the text after the last ``####``, commas and ``$`` removed.

    Raises ``ValueError`` when there is no ``####`` or what follows it is not a number.
    """
    if "####" not in answer:
        raise ValueError("no '####'")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    if not _NUMBER.fullmatch(final):
        raise ValueError(f"'{final[:30]}' after ####, not a number")
    return final


# ---------------------------------------------------------------------------- layouts
def _gsm8k(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    for where, r in records:
        q = text(ctx, where, r, "question")
        a = text(ctx, where, r, "answer")
        try:
            ref = gsm8k_reference(a)
        except ValueError as e:
            raise ctx.error(where, f"field 'answer' has {e}; expected a GSM8K solution ending '#### <number>'") from None
        yield Item(where, user(q), reference=ref, completion=a)


def _mc_options(ctx: Context, where: str, r: dict) -> tuple[str, list[str], list[str]]:
    """(stem, option texts, option labels) from the ARC/OBQA file form or the Hub forms."""
    q = r.get("question")
    if isinstance(q, dict):  # file form: question{stem, choices[{text, label}]}
        stem = text(ctx, where, q, "stem", name="question.stem")
        choices, cname = q.get("choices"), "question.choices"
    else:
        key = "question_stem" if "question_stem" in r else "question"
        stem = text(ctx, where, r, key)
        choices, cname = r.get("choices"), "choices"
    if isinstance(choices, dict):  # Hub form: {text: [...], label: [...]}
        texts, labels = choices.get("text"), choices.get("label")
        if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels):
            raise ctx.error(where, f"field '{cname}' needs equal-length lists 'text' and 'label'")
        choices = [{"text": t, "label": lb} for t, lb in zip(texts, labels)]
    if not isinstance(choices, list) or len(choices) < 2:
        got = "missing" if choices is None else f"{_kind(choices)}" if not isinstance(choices, list) else \
            f"a list of {len(choices)}"
        raise ctx.error(where, f"field '{cname}' is {got}, expected a list of at least 2 {{text, label}} options")
    if len(choices) > len(LETTERS):
        raise ctx.error(where, f"field '{cname}' has {len(choices)} options, at most {len(LETTERS)} supported")
    texts, labels = [], []
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            raise ctx.error(where, f"field '{cname}[{i}]' is {_kind(c)}, expected an object {{text, label}}")
        texts.append(text(ctx, where, c, "text", name=f"{cname}[{i}].text"))
        labels.append(str(c.get("label", LETTERS[i])).strip())
    return stem, texts, labels


def _mc(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    for where, r in records:
        stem, texts, labels = _mc_options(ctx, where, r)
        prompt, _ = format_mc(stem, texts)
        ref = None
        if r.get("answerKey") is not None:
            try:
                ref = mc_letter(r["answerKey"], labels)
            except ValueError:
                raise ctx.error(where, f"field 'answerKey' is '{shown(r['answerKey'], quote=False)}', expected one of the "
                                       f"choice labels "
                                       f"{shown(labels)}") from None
        rid = ident(ctx, where, r, "id") if "id" in r else None
        yield Item(where, user(prompt), id=rid, reference=ref)


def _siqa_labels(ctx: Context) -> list[str] | None:
    """The line-aligned labels of ``<stem>-labels.lst`` beside the file, if there is one."""
    if ctx.path is None:
        return None
    lst = ctx.path.with_name(f"{ctx.path.stem}-labels.lst")
    if not lst.is_file():
        return None
    labels = []
    for n, line in enumerate(lst.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        v = line.strip()
        if v not in ("1", "2", "3"):
            raise CreamError(f"{lst} line {n}: label '{v[:20]}', expected 1, 2 or 3 (for answerA/B/C)")
        labels.append(v)
    return labels


def _siqa(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    labels = _siqa_labels(ctx)
    records = list(records)  # the labels file must match the whole file, whatever --limit says
    if labels is not None and len(labels) != len(records):
        raise CreamError(f"{ctx.path.with_name(ctx.path.stem + '-labels.lst')} has {len(labels)} label lines but "
                         f"{ctx.label} has {len(records)} records: expected one label per record")
    stem = ctx.path.stem if ctx.path else (ctx.split or "siqa")
    for i, (where, r) in enumerate(records):
        context = text(ctx, where, r, "context")
        q = text(ctx, where, r, "question")
        opts = [text(ctx, where, r, f"answer{x}") for x in "ABC"]
        prompt, _ = format_mc(f"{context.strip()} {q.strip()}", opts)
        lab = labels[i] if labels is not None else r.get("label")
        ref = None
        if lab is not None and str(lab).strip() != "":
            if str(lab).strip() not in ("1", "2", "3"):
                raise ctx.error(where, f"field 'label' is '{shown(lab, quote=False)}', expected 1, 2 or 3")
            ref = LETTERS[int(str(lab).strip()) - 1]
        # SIQA has no ids and repeats some items verbatim (with different labels): the position is the id.
        yield Item(where, user(prompt), id=f"{stem}-{i + 1:05d}", reference=ref)


def _oasst(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    records = iter(records)
    first = next(records, None)
    if first is None:
        return
    keys = set(first[1])
    records = _chain(first, records)
    if {"message_id", "parent_id", "role", "text"} <= keys:
        yield from _oasst_tree(records, ctx)
        return
    ranked = "rank" in keys
    pkey, akey = ("question", "answer") if "question" in keys else ("prompt", "response")
    for where, r in records:
        p = text(ctx, where, r, pkey)
        a = text(ctx, where, r, akey)
        rank = r.get("rank") if ranked else 0
        if ranked and (isinstance(rank, bool) or not isinstance(rank, (int, float))):
            raise ctx.error(where, f"field 'rank' is {_kind(rank)}, expected a number (0 = best)")
        rid = ident(ctx, where, r, "prompt_id") if "prompt_id" in r else None
        # Ranked pairs repeat each question once per answer: only the best answer is an SFT target.
        yield Item(where, user(p), id=rid, completion=a if rank == 0 else None)


def _oasst_tree(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    """OpenAssistant message trees: each root prompt, with its rank-0 assistant reply for SFT."""
    roots, best = [], {}
    for where, r in records:
        mid = ident(ctx, where, r, "message_id")
        if r.get("parent_id") is None:
            if r.get("role") == "prompter":
                roots.append((where, mid, text(ctx, where, r, "text")))
        elif r.get("role") == "assistant" and r.get("rank") == 0:
            best[str(r["parent_id"])] = text(ctx, where, r, "text")
    for where, mid, t in roots:
        yield Item(where, user(t), id=mid, completion=best.get(mid))


def _alpaca_eval(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    # No id on purpose: the content hash makes the instructions file and the model-output files agree.
    for where, r in records:
        yield Item(where, user(text(ctx, where, r, "instruction")),
                   completion=text(ctx, where, r, "output", required=False), completion_is_human=False)


def _self_instruct(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    for where, r in records:
        instr = text(ctx, where, r, "instruction")
        inst = r.get("instances") or [{}]
        if not isinstance(inst, list) or not isinstance(inst[0], dict):
            raise ctx.error(where, f"field 'instances' is {_kind(inst)}, expected a list of {{input, output}}")
        inp = text(ctx, where, inst[0], "input", name="instances[0].input", required=False, allow_empty=True)
        out = text(ctx, where, inst[0], "output", name="instances[0].output", required=False)
        prompt = f"{instr.strip()}\n\n{inp.strip()}" if inp and inp.strip() else instr
        rid = ident(ctx, where, r, "id") if "id" in r else None
        yield Item(where, user(prompt), id=rid, completion=out)


PROMPT_FIELDS = ("prompt", "instruction", "question", "input", "query", "messages", "conversations", "conversation")
ANSWER_FIELDS = ("reference_answer", "answer", "reference", "target", "solution")
COMPLETION_FIELDS = ("completion", "response", "output", "chosen", "answer")


def _conversation(ctx: Context, where: str, name: str, v: Any) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise ctx.error(where, f"field '{name}' is {_kind(v) if v else 'empty'}, expected a non-empty list of "
                               "{role, content} turns")
    turns = []
    for i, t in enumerate(v):
        if not isinstance(t, dict) or t.get("role") not in ("system", "user", "assistant", "tool"):
            raise ctx.error(where, f"field '{name}[{i}]' must be an object with role system/user/assistant/tool")
        turns.append({"role": t["role"], "content": text(ctx, where, t, "content", name=f"{name}[{i}].content")})
    return turns


def _generic(records: Iterable[Record], ctx: Context) -> Iterator[Item]:
    fm = ctx.fields
    for where, r in records:
        pkey = fm.prompt or next((k for k in PROMPT_FIELDS if k in r), None)
        if pkey is None or pkey not in r:
            raise ctx.error(where, f"missing prompt field '{pkey or '/'.join(PROMPT_FIELDS[:5])}' "
                                   f"(fields present: {', '.join(sorted(map(str, r)))}); name it with --prompt-field")
        v = r[pkey]
        completion = None
        if isinstance(v, list):
            turns = _conversation(ctx, where, pkey, v)
            if turns[-1]["role"] == "assistant":  # a whole conversation: the last answer is the SFT target
                completion = turns.pop()["content"]
                if not turns:
                    raise ctx.error(where, f"field '{pkey}' has only an assistant turn, expected a prompt before it")
        else:
            turns = user(text(ctx, where, r, pkey))
        if fm.system:
            system = text(ctx, where, r, fm.system, required=False)
            if system and turns[0]["role"] != "system":
                turns.insert(0, {"role": "system", "content": system})
        akey = fm.answer or next((k for k in ANSWER_FIELDS if k in r and k != pkey), None)
        ref = r.get(akey) if akey else None
        if akey and fm.answer and akey not in r:
            raise ctx.error(where, f"missing answer field '{akey}'")
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (str, int, float))):
            raise ctx.error(where, f"field '{akey}' is {_kind(ref)}, expected a string or number")
        ckey = fm.completion or fm.answer or next((k for k in COMPLETION_FIELDS if k in r and k != pkey), None)
        if ckey and completion is None:
            if fm.completion and ckey not in r:
                raise ctx.error(where, f"missing completion field '{ckey}'")
            completion = text(ctx, where, r, ckey, required=False)
        rid = ident(ctx, where, r, fm.id) if fm.id else None
        # the reference answer's own field (e.g. "answer": "24") is a target, not a person's written answer
        yield Item(where, turns, id=rid, reference=None if ref is None else str(ref).strip(), completion=completion,
                   completion_is_human=not (ckey is not None and ckey == akey and not isinstance(v, list)))


LAYOUTS: dict[str, Callable[[Iterable[Record], Context], Iterator[Item]]] = {
    "gsm8k": _gsm8k,
    "arc": _mc,
    "openbookqa": _mc,
    "siqa": _siqa,
    "oasst": _oasst,
    "alpaca_eval": _alpaca_eval,
    "self_instruct": _self_instruct,
    "generic": _generic,
}


def detect(first: dict, label: str) -> str | None:
    """The layout whose identifying fields the first record has; ``None`` when none fits."""
    keys = set(first)
    if {"context", "answerA", "answerB", "answerC"} <= keys:
        return "siqa"
    if "answerKey" in keys and (isinstance(first.get("question"), dict) or "choices" in keys):
        return "openbookqa" if "openbookqa" in label.lower() else "arc"
    if {"question", "answer", "rank"} <= keys or {"prompt_id", "response_id", "prompt", "response"} <= keys \
            or {"message_id", "parent_id", "role", "text"} <= keys:
        return "oasst"
    if {"question", "answer"} <= keys and "####" in str(first.get("answer")):
        return "gsm8k"
    if {"instruction", "instances"} <= keys:
        return "self_instruct"
    if {"instruction", "dataset"} <= keys:
        return "alpaca_eval"
    if keys & set(PROMPT_FIELDS):
        return "generic"
    return None


def _chain(first: Record, rest: Iterator[Record]) -> Iterator[Record]:
    yield first
    yield from rest
