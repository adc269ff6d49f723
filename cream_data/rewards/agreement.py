"""How far the scorers of a labeled iteration agree: with each other and with the oracle.

Pure functions of Arrow tables (numpy, pyarrow, scipy; no torch, no files), returning plain JSON-ready dicts. The
run report and ``cream inspect`` render them (:mod:`cream_data.reports.agreement_report`); docs/REWARDS.md states every
definition for users.

Input: a ``scores`` table (columns ``prompt_id``, ``response_idx``, ``scorer``, ``reward``: one row per
response per scorer role, ``reward`` null where the scorer gave none). A null, NaN or infinite reward is *not
finite* and never counts.

* :func:`agreement_matrix` — for every two scorer roles, Kendall's tau-b on the raw rewards per prompt (ties
  kept, as ``scipy.stats.kendalltau``) and top-pair agreement (same chosen and same rejected response).
* :func:`oracle_agreement` — each role against the ``oracle`` role (1 correct / 0 wrong): pair win rate with a
  95 % Wilson interval, and the AUC of the reward for correct vs wrong responses with a bootstrap interval.
* where the human-written answer ranks among the samples under each role: :mod:`cream_data.rewards.selfpref`.
* :func:`auc_interval` — an AUC with its bootstrap interval over prompts (the oracle AUC's, and the premise's:
  :mod:`cream_data.rewards.premise`).

"Chosen" and "rejected" are the pairing's: the *first* response (lowest ``response_idx``) with the highest, and
the first with the lowest, reward among the responses that count (``np.argmax`` / ``np.argmin``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cream_data import stats
from cream_data.rewards import ranking
from cream_data.vocab import SCORER_ROLES

# The usual roles first, in this order; any other role follows alphabetically.
ROLE_ORDER = SCORER_ROLES
N_BOOT = 1000
BOOT_SEED = 0
_CHUNK_CELLS = 1 << 21     # bootstrap resamples × responses per chunk (a few arrays of 16 MiB)


# ---------------------------------------------------------------------------- the reward cube
def role_order(roles) -> list[str]:
    """Roles in the report's order: current, previous, judge, rm, oracle, then any other alphabetically.

    >>> role_order(["oracle", "zeta", "current", "judge"])
    ['current', 'judge', 'oracle', 'zeta']
    """
    roles = set(roles)
    return [r for r in ROLE_ORDER if r in roles] + sorted(roles - set(ROLE_ORDER))


def reward_cube(scores: pa.Table) -> tuple[list[str], pa.Array, np.ndarray]:
    """``(roles, prompt_ids, cube)``: ``cube[r, p, i]`` = the reward of role ``roles[r]`` for response ``i`` of
    prompt ``prompt_ids[p]`` (NaN: null, missing or not finite). Prompts in order of first appearance.

    >>> t = pa.table({"prompt_id": ["a", "a", "b", "a"], "response_idx": [0, 1, 0, 0],
    ...               "scorer": ["current", "current", "current", "judge"], "reward": [1.0, 2.0, None, 5.0]})
    >>> roles, ids, cube = reward_cube(t)
    >>> roles, ids.to_pylist(), cube.tolist()
    (['current', 'judge'], ['a', 'b'], [[[1.0, 2.0], [nan, nan]], [[5.0, nan], [nan, nan]]])
    """
    if scores.num_rows == 0:
        return [], pa.array([], pa.string()), np.zeros((0, 0, 0))
    enc = pc.dictionary_encode(scores.column("prompt_id")).combine_chunks()
    prompt_ids = enc.dictionary
    p = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    i = scores.column("response_idx").to_numpy().astype(np.int64)
    roles = role_order(v for v in pc.unique(scores.column("scorer")).to_pylist() if v is not None)
    r = index_in(scores.column("scorer"), pa.array(roles, pa.string()))
    keep = r >= 0
    p, i, r = p[keep], i[keep], r[keep]
    reward = scores.column("reward").to_numpy().astype(np.float64)[keep]  # nulls → NaN
    cube = np.full((len(roles), len(prompt_ids), int(i.max()) + 1 if i.size else 0), np.nan)
    cube[r, p, i] = np.where(np.isfinite(reward), reward, np.nan)
    return roles, prompt_ids, cube


def index_in(values, value_set: pa.Array) -> np.ndarray:
    """Position of each value in ``value_set``, -1 where absent or null."""
    return pc.fill_null(pc.index_in(values, value_set=value_set), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _first_argmax(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok, x, -np.inf).argmax(axis=1)


def _first_argmin(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok, x, np.inf).argmin(axis=1)


def _mean_std(x: np.ndarray) -> tuple[float | None, float | None]:
    return (float(x.mean()), float(x.std())) if x.size else (None, None)


# ---------------------------------------------------------------------------- scorer vs scorer
def masked_tau_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b ``[P]`` of two reward matrices ``[P, N]`` over, per row, only the responses finite in
    *both* (ties kept, as ``scipy.stats.kendalltau``): :func:`cream_data.rewards.ranking.kendall_tau_b`, which
    drops non-finite responses; NaN where fewer than 2 responses count or one side is all-equal on them.

    >>> masked_tau_b(np.array([[1.0, 1, 0, np.nan]]), np.array([[2.0, 1, 0, 7]])).round(6).tolist()
    [0.816497]
    """
    return ranking.kendall_tau_b(a, b)


def _pair_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    ok = np.isfinite(a) & np.isfinite(b)
    counted = ok.sum(axis=1) >= 2
    tau = masked_tau_b(a[counted], b[counted])
    defined = np.isfinite(tau)
    a, b, ok, tau = a[counted][defined], b[counted][defined], ok[counted][defined], tau[defined]
    same = ((_first_argmax(a, ok) == _first_argmax(b, ok)) & (_first_argmin(a, ok) == _first_argmin(b, ok)))
    mean, std = _mean_std(tau)
    return {"n": int(tau.size), "undefined": int(counted.sum() - tau.size), "tau_mean": mean, "tau_std": std,
            "top_pair": float(same.mean()) if same.size else None, "top_pair_n": int(same.sum())}


def agreement_matrix(scores: pa.Table) -> dict:
    """Agreement between every two scorer roles of a scores table.

    Returns ``{"roles": [...], "pairs": [{"a", "b", "n", "undefined", "tau_mean", "tau_std", "top_pair",
    "top_pair_n"}, ...]}``, one entry per unordered pair of roles present (in :func:`role_order`). For roles a, b:

    * a prompt **counts** when at least 2 of its responses have a finite reward under both; it is restricted to
      those responses;
    * **tau** = Kendall's tau-b of the two reward vectors on them (ties kept, as ``scipy.stats.kendalltau``);
      where one side is all-equal tau-b is undefined: the prompt is counted in ``undefined``, not in ``n``;
    * ``tau_mean``, ``tau_std`` (population, ddof = 0) over the ``n`` prompts with a defined tau;
    * **top-pair agreement** = the share of those ``n`` prompts where both roles pick the same chosen (first
      argmax) *and* the same rejected (first argmin) response; ``top_pair_n`` of them do.

    None for the statistics where ``n`` = 0; an empty table gives ``{"roles": [], "pairs": []}``.

    Hand-worked: prompt x has current [1, 2, 3], judge [0, 5, 5]: pairs (0,1), (0,2) concordant, (1,2) tied in
    the judge: tau-b = 2 / sqrt(3 · 2) = 0.816497; chosen 2 vs 1 (first of the judge's 5s): no top-pair
    agreement. Prompt y: current [2, 1], judge [4, 3]: tau-b = 1, same chosen 0 and rejected 1.

    >>> t = pa.table({"prompt_id": ["x"] * 6 + ["y"] * 4, "response_idx": [0, 1, 2] * 2 + [0, 1] * 2,
    ...               "scorer": ["current"] * 3 + ["judge"] * 3 + ["current"] * 2 + ["judge"] * 2,
    ...               "reward": [1.0, 2, 3, 0, 5, 5, 2, 1, 4, 3]})
    >>> m = agreement_matrix(t)
    >>> m["roles"], m["pairs"][0]["n"], round(m["pairs"][0]["tau_mean"], 6), m["pairs"][0]["top_pair"]
    (['current', 'judge'], 2, 0.908248, 0.5)
    >>> agreement_matrix(t.slice(0, 0))
    {'roles': [], 'pairs': []}
    """
    roles, _, cube = reward_cube(scores)
    pairs = []
    for x in range(len(roles)):
        for y in range(x + 1, len(roles)):
            pairs.append({"a": roles[x], "b": roles[y], **_pair_agreement(cube[x], cube[y])})
    return {"roles": roles, "pairs": pairs}


# ---------------------------------------------------------------------------- scorer vs oracle
def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``k / n`` (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``);
    ``(None, None)`` for n = 0.

    >>> [round(v, 6) for v in wilson_ci(3, 4)]
    [0.300642, 0.954413]
    """
    return (None, None) if n == 0 else stats.wilson(k, n, confidence)


class _AucData:
    """The pooled responses of one scorer sorted by reward, with what the (weighted) AUC needs: for each correct
    response, how many wrong responses sort strictly below its reward (``lo``) and up to the end of its ties
    (``hi``)."""

    def __init__(self, score: np.ndarray, correct: np.ndarray, prompt: np.ndarray):
        order = np.argsort(score, kind="stable")
        s, c = score[order], correct[order]
        self.correct, self.prompt = c, prompt[order]
        new_level = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, dtype=bool)
        starts = np.flatnonzero(new_level)
        level = np.cumsum(new_level) - 1
        ends = np.r_[starts[1:], s.size]
        # per correct response: how many wrong responses lie below its level, and below its level's end
        wrong_before = np.r_[0, np.cumsum(~c)]
        self.lo, self.hi = wrong_before[starts[level][c]], wrong_before[ends[level][c]]

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """AUC ``[B]`` with response i counted ``weights[i, b]`` times (sorted order; ``[n, B]``, so the running
        sums go down contiguous rows): Σ w_c w_w ([s_c > s_w] + ½ [s_c = s_w]) / (Σ w_c · Σ w_w). NaN where either
        class has no weight."""
        cum0 = np.concatenate([np.zeros((1, weights.shape[1])), np.cumsum(weights[~self.correct], axis=0)])
        below = cum0[self.lo]                               # wrong weight at strictly lower rewards
        tied = cum0[self.hi] - below                        # wrong weight at the same reward
        w1 = weights[self.correct]
        num = (w1 * (below + 0.5 * tied)).sum(axis=0)
        den = w1.sum(axis=0) * cum0[-1]
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _bootstrap_auc(data: _AucData, n_prompts: int, n_boot: int, seed: int) -> np.ndarray:
    """AUC over ``n_boot`` resamples of the prompts (with replacement; a prompt drawn m times counts m times)."""
    rng = np.random.default_rng(seed)
    out = []
    step = max(1, _CHUNK_CELLS // max(1, max(data.prompt.size, n_prompts)))
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        draws = rng.integers(0, n_prompts, size=(b, n_prompts))
        counts = np.bincount((draws + np.arange(b)[:, None] * n_prompts).ravel(),
                             minlength=b * n_prompts).reshape(b, n_prompts)
        out.append(data.auc(np.ascontiguousarray(counts.T, dtype=np.float64)[data.prompt]))
    return np.concatenate(out) if out else np.zeros(0)


def _vs_oracle(s: np.ndarray, o: np.ndarray, n_boot: int, seed: int) -> dict:
    known = np.isfinite(s) & ((o == 0) | (o == 1))
    correct = known & (o == 1)
    wrong = known & (o == 0)
    # pair win rate: prompts with a correct and a wrong response among those the scorer rewarded
    both = correct.any(axis=1) & wrong.any(axis=1)
    sp, kp, cp = s[both], known[both], correct[both]
    rows = np.arange(sp.shape[0])
    ch, rj = _first_argmax(sp, kp), _first_argmin(sp, kp)
    win = cp[rows, ch] & ~cp[rows, rj]
    n, k = int(win.size), int(win.sum())
    lo, hi = wilson_ci(k, n)
    # AUC over every counted response, pooled; bootstrap over the prompts that have one
    has = known.any(axis=1)
    prompt_of = np.broadcast_to(np.cumsum(has)[:, None] - 1, s.shape)[known]
    score, is_correct = s[known], correct[known]
    a = auc_interval(score, is_correct, prompt_of, int(has.sum()), n_boot, seed)
    return {"prompts": n, "wins": k, "win_rate": k / n if n else None, "win_ci_low": lo, "win_ci_high": hi,
            "ties_all_equal": int((sp.max(axis=1, where=kp, initial=-np.inf)
                                   == sp.min(axis=1, where=kp, initial=np.inf)).sum()) if n else 0,
            "responses": int(score.size), "correct": int(is_correct.sum()), "wrong": int((~is_correct).sum()),
            "auc": a["auc"], "auc_ci_low": a["auc_ci_low"], "auc_ci_high": a["auc_ci_high"],
            "auc_prompts": int(has.sum()), "auc_resamples": a["auc_resamples"]}


def auc_interval(score: np.ndarray, positive: np.ndarray, group: np.ndarray, n_groups: int, n_boot: int = N_BOOT,
                 seed: int = BOOT_SEED) -> dict:
    """The AUC of ``score`` for the ``positive`` items vs the others (P(a positive scores higher than a negative,
    ties ½): the Mann–Whitney U over n_pos · n_neg) and its bootstrap interval over the groups (``group[i]`` in
    ``0 … n_groups - 1``: the prompt of item i; resampled with replacement, a group drawn m times counts m times).

    Returns ``{"auc", "auc_ci_low", "auc_ci_high", "auc_resamples"}``: the AUC (None where a class is empty), the
    2.5 and 97.5 percentiles over the ``n_boot`` resamples (numpy generator seeded with ``seed``) where both classes
    occur (``auc_resamples`` of them; None for the interval where there are none, or ``n_boot`` = 0).

    >>> r = auc_interval(np.array([2.0, 5, 1, 3, 0]), np.array([True, True, False, False, False]),
    ...                  np.array([0, 1, 0, 0, 1]), 2, n_boot=0)
    >>> round(r["auc"], 6), r["auc_ci_low"], r["auc_resamples"]
    (0.833333, None, 0)
    """
    data = _AucData(score, positive, group)
    auc = float(data.auc(np.ones((score.size, 1)))[0]) if score.size else None
    auc = auc if auc is not None and np.isfinite(auc) else None
    lo = hi = None
    boot_n = 0
    if auc is not None and n_boot > 0:
        boots = _bootstrap_auc(data, n_groups, n_boot, seed)
        boots = boots[np.isfinite(boots)]
        boot_n = int(boots.size)
        if boots.size:
            lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    return {"auc": auc, "auc_ci_low": lo, "auc_ci_high": hi, "auc_resamples": boot_n}


def oracle_agreement(scores: pa.Table, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> list[dict] | None:
    """Each scorer role against the ``oracle`` role (reward 1 = correct, 0 = wrong; any other value or a null
    oracle reward: unknown, the response does not count). None when the table has no oracle role.

    One dict per other role (in :func:`role_order`). A response **counts** for a role when its oracle verdict is
    known and the role's reward is finite.

    * **Pair win rate** over the prompts with at least one correct and one wrong counted response (``prompts``):
      the share (``wins / prompts``) whose chosen (first argmax of the role's reward over the counted responses)
      is correct *and* rejected (first argmin) is wrong. A prompt whose counted rewards are all equal picks the
      same response twice and is a miss (``ties_all_equal`` of them). Interval: 95 % Wilson score interval
      (``win_ci_low``, ``win_ci_high``).
    * **AUC**: every counted response of every prompt pooled (``correct``, ``wrong``); the probability that a
      correct response has a higher reward than a wrong one, ties counting ½ (the Mann–Whitney U of correct vs
      wrong over ``correct · wrong``). Interval: the 2.5 and 97.5 percentiles of the AUC over ``n_boot``
      bootstrap resamples of the prompts that have a counted response (``auc_prompts``; resampled with
      replacement, numpy generator seeded with ``seed``; ``auc_resamples`` = resamples where both classes
      occur). None where one class is empty.

    Hand-worked: prompt x: oracle [1, 0, 0], rm [2, 1, 3]: chosen 2 is wrong: a miss. Prompt y: oracle [0, 1],
    rm [0, 5]: chosen 1 correct, rejected 0 wrong: a win. Win rate 1/2. AUC: correct rewards {2, 5}, wrong
    {1, 3, 0}: of the 6 (correct, wrong) pairs the correct is higher in 2>1, 2>0, 5>1, 5>3, 5>0: 5/6.

    >>> t = pa.table({"prompt_id": ["x"] * 6 + ["y"] * 4, "response_idx": [0, 1, 2] * 2 + [0, 1] * 2,
    ...               "scorer": ["oracle"] * 3 + ["rm"] * 3 + ["oracle"] * 2 + ["rm"] * 2,
    ...               "reward": [1.0, 0, 0, 2, 1, 3, 0, 1, 0, 5]})
    >>> (r,) = oracle_agreement(t, n_boot=0)
    >>> r["scorer"], r["wins"], r["prompts"], round(r["auc"], 6)
    ('rm', 1, 2, 0.833333)
    >>> oracle_agreement(t.filter(pc.equal(t["scorer"], "rm"))) is None
    True
    """
    roles, _, cube = reward_cube(scores)
    if "oracle" not in roles:
        return None
    o = cube[roles.index("oracle")]
    return [{"scorer": role, **_vs_oracle(cube[x], o, n_boot, seed)}
            for x, role in enumerate(roles) if role != "oracle"]
