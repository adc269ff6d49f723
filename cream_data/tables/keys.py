"""Where one labeling's tables meet, a key means one thing (issue #26): its preferences, scores, human scores and the
responses it labeled agree row for row. A folder in which one of them was replaced — by the same-named table of
another labeling, or by responses rewritten after labeling — is refused in one line naming the tables and the first
key that does not match, before anything reads them as one dataset (`cream publish`, `cream inspect`).

What :func:`check_labeling` checks, each in one vectorised pass, in this order:

- preferences → responses: each pair's prompt_id is a prompt of the responses, with the same prompt; its
  ``n_responses`` is that prompt's number of responses; ``chosen_idx`` and ``rejected_idx`` resolve to responses
  whose texts are the pair's chosen and rejected;
- preferences → scores: the scorer that picked the pairs scored each pair's prompt, ``n_responses`` responses of it,
  and the pair's ``rewards`` list is those rewards, response by response;
- scores → responses: every scored (prompt_id, response_idx) is a response, and every prompt of the responses is
  scored;
- human scores → scores: each (prompt_id, scorer) of the human answers' scores also scored that prompt's responses;
- the manifests: the preferences, scores and human scores were labeled from one responses table (the fingerprints
  they record agree with one another, and with the responses' own).

``whole``: the responses are every row the labeling paired. A labeling with pools (``--chosen-from``,
``--rejected-from``) paired more rows than its input; where the pools cannot be read back, the input's rows are
checked (they come first in the pooled table, so they keep their response_idx) and a side beyond them is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.errors import CreamError
from cream_data.tables.fingerprint import responses_fingerprint
from cream_data.tables.validate import check_pair_sides, conversation_keys

AGAIN = "a table of another labeling?"


@dataclass(frozen=True)
class Found:
    """A table as found beside the others: its rows, where it is (for messages) and its manifest (None: none)."""

    table: pa.Table
    where: str
    manifest: dict | None = None

    def recorded(self, key: str):
        """What the manifest's ``inputs`` record under ``key`` (None: nothing)."""
        return ((self.manifest or {}).get("inputs") or {}).get(key)


def check_labeling(preferences: Found | None = None, scores: Found | None = None, responses: Found | None = None,
                   human: Found | None = None, *, reward_scorer: str | None = None, whole: bool = True) -> None:
    """Refuse (one line, :class:`CreamError`) tables of one labeled folder that do not describe one labeling; see the
    module doc. ``reward_scorer`` is the scorer role whose rewards picked the pairs; None where the labeling did not
    record it: then ``current``'s rewards are compared where the scores have that scorer."""
    if preferences is not None and preferences.table.num_rows:
        check_pair_sides(preferences.table, preferences.where)
        if responses is not None:
            _prefs_responses(preferences, responses, whole)
        if scores is not None:
            _prefs_scores(preferences, scores, reward_scorer or "current", required=reward_scorer is not None)
    if scores is not None and responses is not None:
        _scores_responses(scores, responses, whole)
    if human is not None and scores is not None:
        _human_scores(human, scores)
    _fingerprints([t for t in (preferences, scores, human) if t is not None], responses if whole else None)


def _keys(prompt_ids, idx) -> pa.Array:
    """(prompt_id, index) as one string per row, to look rows up by their key."""
    pids = prompt_ids.cast(pa.string())
    return pc.binary_join_element_wise(pids, pc.cast(idx, pa.string()), "\x1f")


def _short(text) -> str:
    text = str(text).replace("\x1e", " | ").replace("\x1f", ": ")
    return repr(text if len(text) <= 48 else text[:45] + "...")


def _row(found: Found, i: int) -> str:
    """``PATH: row i (prompt_id 'x')``, the start of a message about one row."""
    return f"{found.where}: row {i} (prompt_id {found.table['prompt_id'][i].as_py()!r})"


def _first(mask) -> int | None:
    """The first row where ``mask`` (a boolean array, nulls false) holds, or None."""
    rows = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(rows[0]) if rows.size else None


def _prefs_responses(p: Found, r: Found, whole: bool) -> None:
    """Each pair's prompt, count and two sides against the responses it was labeled from."""
    prefs, resp = p.table, r.table
    pids, rpids = prefs["prompt_id"].cast(pa.string()), resp["prompt_id"].cast(pa.string())
    at = pc.index_in(pids, value_set=rpids)  # the first response to each pair's prompt
    i = _first(pc.is_null(at).to_numpy(zero_copy_only=False))
    if i is not None:
        raise CreamError(f"{_row(p, i)}: no such prompt in {r.where}; {AGAIN}")
    mine, theirs = conversation_keys(prefs["prompt"]), conversation_keys(resp["prompt"]).take(at)
    i = _first(pc.not_equal(mine, theirs).to_numpy(zero_copy_only=False))
    if i is not None:
        raise CreamError(f"{_row(p, i)}: another prompt than in {r.where} ({_short(mine[i].as_py())} vs "
                         f"{_short(theirs[i].as_py())}); {AGAIN}")
    counts = resp.group_by("prompt_id").aggregate([("response_idx", "count")])
    held = pc.take(counts["response_idx_count"], pc.index_in(pids, value_set=counts["prompt_id"].cast(pa.string())))
    held, n = held.to_numpy().astype(np.int64), prefs["n_responses"].to_numpy().astype(np.int64)
    i = _first(n != held if whole else n < held)
    if i is not None:
        raise CreamError(f"{_row(p, i)}: n_responses is {n[i]} but {r.where} holds {held[i]} responses to it; "
                         f"{AGAIN}")
    rkeys = _keys(resp["prompt_id"], resp["response_idx"])
    for side in ("chosen", "rejected"):
        _side_text(p, r, side, pc.index_in(_keys(prefs["prompt_id"], prefs[f"{side}_idx"]), value_set=rkeys),
                   held, whole)


def _side_text(p: Found, r: Found, side: str, at: pa.Array, held: np.ndarray, whole: bool) -> None:
    """One side of every pair: its index names a response of ``r`` (beyond them only where ``r`` is not whole), and
    that response's text is the side's."""
    idx = p.table[f"{side}_idx"].to_numpy().astype(np.int64)
    missing = pc.is_null(at).to_numpy(zero_copy_only=False)
    i = _first(missing & ((idx < held) | whole))
    if i is not None:
        raise CreamError(f"{_row(p, i)}: {side}_idx {idx[i]} names no response of {r.where} (it holds "
                         f"{held[i]} responses to that prompt); {AGAIN}")
    texts = r.table["response"].take(at).cast(pa.string())
    found = pc.binary_join_element_wise(pa.scalar("assistant"), texts, "\x1f")
    i = _first(pc.fill_null(pc.not_equal(conversation_keys(p.table[side]), found), False)
               .to_numpy(zero_copy_only=False))
    if i is not None:
        mine = " ".join(str(turn["content"]) for turn in p.table[side][i].as_py())
        raise CreamError(f"{_row(p, i)}: its {side} is {_short(mine)} but response {idx[i]} of that prompt in "
                         f"{r.where} is {_short(texts[i].as_py())}; the responses were replaced after labeling, or "
                         "the tables are of two labelings")


def _prefs_scores(p: Found, s: Found, scorer: str, required: bool) -> None:
    """Each pair's ``rewards`` list is the pair-picking scorer's rewards of its prompt, response by response (a
    scorer that is not ``required`` and has no rows: nothing to compare)."""
    mine = s.table.filter(pc.equal(s.table["scorer"], scorer))
    if mine.num_rows == 0 and not required and s.table.num_rows:
        return
    if mine.num_rows == 0:
        raise CreamError(f"{s.where}: no rows of scorer {scorer!r}, whose rewards picked the pairs of {p.where}; "
                         f"{AGAIN}")
    rewards = p.table["rewards"].combine_chunks()
    parent = pc.list_parent_indices(rewards).to_numpy().astype(np.int64)
    offsets = rewards.offsets.to_numpy().astype(np.int64)
    j = np.arange(len(parent)) - (offsets[parent] - offsets[0])
    pids = p.table["prompt_id"].cast(pa.string()).combine_chunks().take(pa.array(parent))
    at = pc.index_in(_keys(pids, pa.array(j)), value_set=_keys(mine["prompt_id"], mine["response_idx"]))
    k = _first(pc.is_null(at).to_numpy(zero_copy_only=False))
    if k is not None:
        raise CreamError(f"{_row(p, int(parent[k]))}: {s.where} has no {scorer} score of its response {j[k]}; "
                         f"{AGAIN}")
    counts = mine.group_by("prompt_id").aggregate([("response_idx", "count")])
    held = pc.take(counts["response_idx_count"], pc.index_in(p.table["prompt_id"].cast(pa.string()),
                                                             value_set=counts["prompt_id"].cast(pa.string())))
    i = _first(p.table["n_responses"].to_numpy().astype(np.int64) != held.to_numpy().astype(np.int64))
    if i is not None:
        raise CreamError(f"{_row(p, i)}: n_responses is {p.table['n_responses'][i].as_py()} but {s.where} holds "
                         f"{held[i].as_py()} {scorer} scores of that prompt; {AGAIN}")
    want = pc.fill_null(pc.list_flatten(rewards).cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    got = pc.fill_null(mine["reward"].cast(pa.float64()).take(at), np.nan).to_numpy(zero_copy_only=False)
    k = _first(~((want == got) | (np.isnan(want) & np.isnan(got))))
    if k is not None:
        raise CreamError(f"{_row(p, int(parent[k]))}: rewards[{j[k]}] is {want[k]} but the {scorer} reward of "
                         f"response {j[k]} in {s.where} is {got[k]}; {AGAIN}")


def _first_missing(keys, value_set) -> int | None:
    """The first row of ``keys`` that ``value_set`` does not hold, or None."""
    return _first(pc.is_null(pc.index_in(keys, value_set=value_set)).to_numpy(zero_copy_only=False))


def _scores_responses(s: Found, r: Found, whole: bool) -> None:
    """Every scored key is a response (where the responses are whole), and every prompt of the responses is scored."""
    if whole:
        i = _first_missing(_keys(s.table["prompt_id"], s.table["response_idx"]),
                           _keys(r.table["prompt_id"], r.table["response_idx"]))
        if i is not None:
            raise CreamError(f"{s.where}: row {i} scores (prompt_id {s.table['prompt_id'][i].as_py()!r}, "
                             f"response_idx {s.table['response_idx'][i].as_py()}), no response of {r.where}; {AGAIN}")
    i = _first_missing(r.table["prompt_id"].cast(pa.string()), s.table["prompt_id"].cast(pa.string()))
    if i is not None:
        raise CreamError(f"{_row(r, i)}: no scores of that prompt in {s.where}; {AGAIN}")


def _human_scores(h: Found, s: Found) -> None:
    """Each scorer that scored a human answer scored the samples of its prompt too."""
    i = _first_missing(_keys(h.table["prompt_id"], h.table["scorer"]), _keys(s.table["prompt_id"], s.table["scorer"]))
    if i is not None:
        raise CreamError(f"{_row(h, i)}: scorer {h.table['scorer'][i].as_py()!r} scored no response of that prompt "
                         f"in {s.where}; {AGAIN}")


def _fingerprints(labeled: list[Found], responses: Found | None) -> None:
    """The labeled tables record one responses fingerprint, and (``responses`` given) it is the responses' own."""
    recorded = [(t, t.recorded("responses")) for t in labeled if t.recorded("responses")]
    for t, fp in recorded[1:]:
        if fp != recorded[0][1]:
            raise CreamError(f"{t.where}: labeled from another responses table than {recorded[0][0].where} "
                             f"(fingerprint {fp} vs {recorded[0][1]}); {AGAIN}")
    if recorded and responses is not None:
        own = responses_fingerprint(responses.table)
        if own != recorded[0][1]:
            raise CreamError(f"{responses.where}: not the responses {recorded[0][0].where} was labeled from "
                             f"(fingerprint {own} vs {recorded[0][1]}): replaced after labeling?")
