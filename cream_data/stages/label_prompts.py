"""What the ``--prompts`` table gives the label stage: each prompt's reference answer (the oracle scorer) and its
human-written answer (``--human-answers``: scored like a response, never paired).

Both are looked up by prompt_id, after checking that a prompt_id the prompts table shares with the responses names
the same prompt in both (another prompt's answer would reward the wrong question).
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError
from cream_data.stages.label_pools import prompt_per_id, same_prompts
from cream_data.tables import io


def reference_answers(prompts_path, responses: pa.Table, *, every_prompt: bool = True, log=None) -> dict:
    """prompt_id → reference answer from the prompts table; every labeled prompt must have a row, and a reference
    answer the oracle can check (a number, a GSM8K solution ending '#### n', an option letter): a prompt without
    one would have no oracle reward on any of its responses, and no pair.

    ``every_prompt`` False: the oracle is a diagnostic only (``--oracle-scores``, neither picking the pairs nor C's
    partner), so a prompt without a reference answer it can check is no error: its responses get a null oracle
    reward (unknown in the premise table), and ``log`` says how many prompts that is."""
    from cream_data.rewards.answers import oracle_reward

    prompts = _prompts_of(prompts_path, responses, "reference_answer")
    ref = dict(zip(prompts["prompt_id"].to_pylist(), prompts["reference_answer"].to_pylist()))
    labeled = sorted(set(responses["prompt_id"].to_pylist()))
    missing = [p for p in labeled if p not in ref]
    if missing:
        raise CreamError(f"{prompts_path}: has no row for prompt_id {missing[0]!r} ({len(missing)} missing); "
                         "pass the prompts table these responses were sampled from")
    unusable = [p for p in labeled if oracle_reward(None, ref[p]) is None]  # None exactly when it cannot check
    if unusable and not every_prompt:
        if log is not None:
            log(f"--oracle-scores: {len(unusable)} of the {len(labeled)} labeled prompts have no reference answer the "
                "oracle can check; their responses get a null oracle reward (unknown in the premise table)")
    elif unusable:
        shown = ", ".join(repr(p) for p in unusable[:3]) + (", …" if len(unusable) > 3 else "")
        what = "no reference_answer" if all(ref[p] is None or not str(ref[p]).strip() for p in unusable) else \
            "no reference_answer the oracle can check (a number, a '#### n' solution or an option letter)"
        raise CreamError(f"{prompts_path}: {len(unusable)} of the {len(labeled)} labeled prompts have {what}: "
                         f"prompt_id {shown}; the oracle scorer needs one for every prompt (another --reward, or "
                         "a prompts table with answers)")
    return ref


def human_responses(prompts_path, responses: pa.Table) -> pa.Table:
    """One pseudo-response per labeled prompt that has a human-written answer in the ``--prompts`` table:
    (prompt_id, prompt, response_idx 0, response = the human answer), scored like a sample but never paired."""
    prompts = _prompts_of(prompts_path, responses, "human_answer")
    answer = {p: a for p, a in zip(prompts["prompt_id"].to_pylist(), prompts["human_answer"].to_pylist())
              if a is not None and a.strip()}
    if not answer:
        raise CreamError(f"--human-answers: {prompts_path} has no human_answer in any row (a prompts table written "
                         "by `cream prompts` from a source with human answers: GSM8K solutions, oasst rank-0 "
                         "replies, a response/completion field)")
    first = pc.index_in(pa.array(sorted(answer)), value_set=responses["prompt_id"].cast(pa.string()))
    rows = [i for i in first.to_pylist() if i is not None]
    sub = responses.take(pa.array(rows, pa.int64())) if rows else responses.slice(0, 0)
    pids = sub["prompt_id"].to_pylist()
    return pa.table({"prompt_id": sub["prompt_id"], "prompt": sub["prompt"],
                     "response_idx": pa.array([0] * len(pids), pa.int16()),
                     "response": pa.array([answer[p] for p in pids], pa.string())})


def as_human_scores(scores: pa.Table, human: pa.Table) -> pa.Table:
    """Scores rows of the pseudo-responses as a ``human_scores`` table (no response_idx, the answer kept)."""
    text = dict(zip(human["prompt_id"].to_pylist(), human["response"].to_pylist()))
    t = scores.drop_columns(["response_idx"])
    return t.append_column("human_answer", pa.array([text[p] for p in t["prompt_id"].to_pylist()], pa.string()))


def _prompts_of(prompts_path, responses: pa.Table, column: str) -> pa.Table:
    """``prompt_id`` and ``column`` of the ``--prompts`` table, after checking that each prompt_id it shares with
    the responses names the same prompt in both (another prompt's answer would reward the wrong question)."""
    prompts = io.read_table(prompts_path, "prompts", columns=["prompt_id", "prompt", column])
    missing = [c for c in ("prompt_id", "prompt", column) if c not in prompts.column_names]
    if missing:
        raise CreamError(f"{prompts_path}: no column {missing[0]!r}; expected a prompts table (`cream prompts`) "
                         f"with prompt_id, prompt and {column}")
    ids = prompts["prompt_id"].to_pylist()
    if len(set(ids)) != len(ids):  # two rows of one prompt could give two different answers: which is the one?
        twice = next(p for p, n in Counter(ids).items() if n > 1)
        raise CreamError(f"{prompts_path}: prompt_id {twice!r} is given {Counter(ids)[twice]} times; a prompts table "
                         "has one row per prompt_id")
    same_prompts(prompt_per_id(prompts, str(prompts_path)), prompt_per_id(responses, "the responses"),
                 str(prompts_path), "the responses")
    return prompts.drop_columns(["prompt"])
