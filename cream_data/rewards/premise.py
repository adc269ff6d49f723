"""CREAM's premise, measured directly: does a prompt's consistency C predict that its pair is right?

CREAM weighs each preference pair by C, the agreement between the current model's and the previous model's rankings
of the prompt's responses, on the premise that a consistent ranking gives a pair that is more often correctly
ordered. Where a labeled iteration also has the ground truth (the ``oracle`` scorer role: reward 1 = the response's
answer is correct against the prompt's reference answer, 0 = wrong), :func:`premise` measures that directly.

Pure functions of Arrow tables (numpy, pyarrow; no torch, no files), returning a plain JSON-ready dict; the run
report and ``cream inspect`` render it (:mod:`cream_data.reports.premise_report`); docs/REWARDS.md states every
definition for users.

Definitions (one row of the preferences table = one prompt's pair; "chosen" and "rejected" are the pairing's):

* a pair is **right** when oracle(chosen) > oracle(rejected) (chosen correct, rejected wrong), **wrong** when
  oracle(chosen) < oracle(rejected), a **tie** when both are correct or both wrong (left out of every rate, counted),
  and **unknown** when either oracle verdict is missing (no oracle row, a null reward, a value other than 0 or 1);
* **C** is the pair's own stored ``consistency`` (per pair, whatever ``scope`` made the training weights; under
  ``kendall``, (τ + 1) / 2). Where every pair says ``consistency_method`` none (a method that pairs without C),
  C is recomputed as the labeler defines it for CREAM: (τ + 1) / 2 of the ``current`` and ``previous`` rewards'
  ordinal rankings (:mod:`cream_data.rewards.ranking`) over the prompt's responses finite under both (at least 2);
* **pair accuracy** = right / (right + wrong), over all pairs and split at C ≥ 1/2 vs C < 1/2;
* **AUC** of a score for right vs wrong pairs: P(a right pair's score > a wrong pair's, ties ½), the Mann–Whitney U
  over n_right · n_wrong, with the 2.5–97.5 percentiles over bootstrap resamples of the prompts
  (:func:`cream_data.rewards.agreement.auc_interval`); one row for C and one per scorer role (other than the
  oracle) for its **margin**, reward(chosen) − reward(rejected) under that role; a pair counts in a row where its
  score is finite. An AUC of 0.5 means the score says nothing about which pairs are right.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data.rewards import ranking
from cream_data.rewards.agreement import BOOT_SEED, N_BOOT, auc_interval, index_in, reward_cube

SPLIT = 0.5  # C at or above it: the "consistent" half of the pairs
PAIR_COLUMNS = ["prompt_id", "chosen_idx", "rejected_idx", "consistency", "consistency_method"]


def premise(scores: pa.Table, pairs: pa.Table, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
            between: list[str] | None = None) -> dict:
    """How well C (and each role's reward margin) separates the right pairs of ``pairs`` from the wrong ones, by
    the oracle role of ``scores`` (see the module doc for every definition).

    ``scores``: ``prompt_id``, ``response_idx``, ``scorer``, ``reward``; ``pairs``: :data:`PAIR_COLUMNS` (a
    preferences table); ``between``: the two scorer roles the stored C was measured between (the pairing summary's
    ``consistency_between``), when known. Returns ``{"absent": None, "pairs", "unknown", "right", "wrong", "ties",
    "ties_both_correct", "ties_both_wrong", "accuracy", "c_source", "consistency_method", "c_between", "no_c",
    "by_c": [...], "auc": [...]}``; ``by_c``: ``{"group", "right", "wrong", "ties", "accuracy"}`` for C ≥ 1/2 and
    C < 1/2; ``auc``: ``{"score", "role", "right", "wrong", "prompts", "auc", "auc_ci_low", "auc_ci_high",
    "auc_resamples", "reason"}`` (``reason``: why ``auc`` is None). Where the measure cannot be made at all (no
    oracle role, no pairs, no C, no pair with both verdicts): ``{"absent": <why, one line>, "pairs": n}``.

    Hand-worked: a oracle [1, 0], pair 0 > 1, C 0.9: right; b oracle [0, 1], 0 > 1, C 0.2: wrong; c oracle
    [1, 0], 0 > 1, C 0.2: right; d oracle [1, 1]: a tie. Accuracy 2/3; C ≥ ½: a right (d a tie): 1/1; C < ½: 1/2.
    AUC of C: right {0.9, 0.2} vs wrong {0.2}: 1 + ½ of 2 = 0.75. Margins of current (a [2, 1], b [3, 0],
    c [1, 0.5]): right {1, 0.5} vs wrong {3}: 0.

    >>> s = pa.table({"prompt_id": [p for p in "abcd" for _ in range(4)], "response_idx": [0, 1] * 8,
    ...               "scorer": ["oracle", "oracle", "current", "current"] * 4,
    ...               "reward": [1.0, 0, 2, 1, 0, 1, 3, 0, 1, 0, 1, 0.5, 1, 1, 2, 0]})
    >>> pairs = pa.table({"prompt_id": list("abcd"), "chosen_idx": [0] * 4, "rejected_idx": [1] * 4,
    ...                   "consistency": [0.9, 0.2, 0.2, 1.0], "consistency_method": ["kendall"] * 4})
    >>> r = premise(s, pairs, n_boot=0)
    >>> r["right"], r["wrong"], r["ties"], round(r["accuracy"], 4), [g["accuracy"] for g in r["by_c"]]
    (2, 1, 1, 0.6667, [1.0, 0.5])
    >>> [(a["score"], a["auc"]) for a in r["auc"]]
    [('C', 0.75), ('margin current', 0.0)]
    >>> premise(s.filter(pc.equal(s["scorer"], "current")), pairs)["absent"]
    'the scores have no oracle role (1 correct / 0 wrong against the reference answer): no pair is known right or wrong'
    """
    n = pairs.num_rows
    roles, ids, cube = reward_cube(scores)
    if "oracle" not in roles:
        return {"absent": "the scores have no oracle role (1 correct / 0 wrong against the reference answer): no "
                          "pair is known right or wrong", "pairs": n}
    if n == 0:
        return {"absent": "the preferences table has no pairs", "pairs": 0}
    p = index_in(pairs.column("prompt_id"), ids)
    chosen, rejected = (pc.fill_null(pairs.column(c), -1).to_numpy().astype(np.int64)
                        for c in ("chosen_idx", "rejected_idx"))
    c, source, method = _consistency(pairs, roles, cube, p)
    between = ["current", "previous"] if source == "recomputed" else list(between) if between else None
    if c is None:
        return {"absent": "the pairs carry no consistency C (consistency_method none) and the scores lack a current "
                          "or previous role to measure it from", "pairs": n}
    oracle = cube[roles.index("oracle")]
    o_ch, o_rj = _at(oracle, p, chosen), _at(oracle, p, rejected)
    known = np.isin(o_ch, (0.0, 1.0)) & np.isin(o_rj, (0.0, 1.0))
    if not known.any():
        return {"absent": f"none of the {n} pairs has an oracle verdict (0 or 1) on both its chosen and its "
                          "rejected response", "pairs": n}
    right, wrong = known & (o_ch > o_rj), known & (o_ch < o_rj)
    tie = known & (o_ch == o_rj)
    high, low = np.isfinite(c) & (c >= SPLIT), np.isfinite(c) & (c < SPLIT)
    scores_by_row = [("C", None, c)] + [(f"margin {role}", role, _at(cube[x], p, chosen) - _at(cube[x], p, rejected))
                                        for x, role in enumerate(roles) if role != "oracle"]
    return {"absent": None, "pairs": n, "unknown": int((~known).sum()), **_counts(right, wrong, tie),
            "ties_both_correct": int((tie & (o_ch == 1)).sum()), "ties_both_wrong": int((tie & (o_ch == 0)).sum()),
            "c_source": source, "consistency_method": method, "c_between": between,
            "no_c": int((known & ~np.isfinite(c)).sum()),
            "by_c": [{"group": f"C >= {SPLIT:g}", **_counts(right & high, wrong & high, tie & high)},
                     {"group": f"C < {SPLIT:g}", **_counts(right & low, wrong & low, tie & low)}],
            "auc": [{"score": name, "role": role, **_auc(score, right, wrong, p, n_boot, seed)}
                    for name, role, score in scores_by_row]}


def _counts(right: np.ndarray, wrong: np.ndarray, tie: np.ndarray) -> dict:
    k, m = int(right.sum()), int(wrong.sum())
    return {"right": k, "wrong": m, "ties": int(tie.sum()), "accuracy": k / (k + m) if k + m else None}


def _auc(score: np.ndarray, right: np.ndarray, wrong: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict:
    """The AUC of ``score`` for the right vs the wrong pairs where it is finite, resampling their prompts."""
    counted = (right | wrong) & np.isfinite(score)
    groups, group_of = np.unique(p[counted], return_inverse=True)
    k, m = int((right & counted).sum()), int((wrong & counted).sum())
    reason = None if k and m else ("no right or wrong pair with a finite score" if not k + m
                                   else "no wrong pair" if not m else "no right pair")
    out = auc_interval(score[counted], right[counted], group_of.astype(np.int64), int(groups.size), n_boot, seed)
    return {"right": k, "wrong": m, "prompts": int(groups.size), **out, "reason": reason}


def _consistency(pairs: pa.Table, roles: list[str], cube: np.ndarray,
                 p: np.ndarray) -> tuple[np.ndarray | None, str, str]:
    """(C per pair, where it comes from, its measure): the stored ``consistency``, or (all pairs without C) the
    current–previous C recomputed from the scores; C None where neither is there."""
    methods = sorted({m for m in pairs.column("consistency_method").to_pylist() if m is not None})
    if methods and methods != ["none"]:
        return pairs.column("consistency").to_numpy().astype(np.float64), "pairs", ", ".join(methods)
    if not {"current", "previous"} <= set(roles):
        return None, "", ""
    per_prompt = recomputed_consistency(cube[roles.index("current")], cube[roles.index("previous")])
    c = np.where(p >= 0, per_prompt[np.maximum(p, 0)], np.nan) if per_prompt.size else np.full(p.shape, np.nan)
    return c, "recomputed", "kendall"


def recomputed_consistency(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """C = (τ + 1) / 2 per prompt ``[P]`` of two reward matrices ``[P, N]``, as the labeler measures it for CREAM:
    over the responses finite under both (NaN: not scored), ranked by :func:`~cream_data.rewards.ranking.ordinal_ranks`
    (scipy's tie order), Kendall's τ of the two rankings; NaN where fewer than 2 responses count.

    >>> recomputed_consistency(np.array([[1.0, 2, 3, np.nan], [1, 2, np.nan, 0]]),
    ...                        np.array([[1.0, 3, 2, 0], [5, 4, 3, np.nan]])).round(4).tolist()
    [0.6667, 0.0]
    """
    usable = np.isfinite(current) & np.isfinite(previous)
    k = usable.sum(axis=1)
    order = np.argsort(~usable, axis=1, kind="stable")  # the usable responses first, in response order
    a, b = (np.take_along_axis(x, order, axis=1) for x in (current, previous))
    c = np.full(current.shape[0], np.nan)
    for n in np.unique(k[k >= 2]):
        sel = k == n
        c[sel] = ranking.consistency(ranking.ordinal_ranks(a[sel, :n]), ranking.ordinal_ranks(b[sel, :n]))[0]
    return c


def _at(mat: np.ndarray, p: np.ndarray, i: np.ndarray) -> np.ndarray:
    """``mat[p, i]`` per pair, NaN where the prompt (``p`` -1) or the response is not in ``mat``."""
    ok = (p >= 0) & (i >= 0) & (i < mat.shape[1])
    out = np.full(p.shape, np.nan)
    out[ok] = mat[p[ok], i[ok]]
    return out
