"""Self-preference: where each prompt's human-written answer ranks among its sampled responses, per scorer role,
beside what chance would give, raw and (for rewards summed over tokens) per token.

Pure functions of Arrow tables (numpy, pyarrow, scipy; no torch, no files), returning plain JSON-ready dicts; the run
report and ``cream inspect`` render them (:mod:`cream_data.reports.agreement_report`); docs/REWARDS.md states every
definition for users.

Input: a ``scores`` table (``prompt_id``, ``response_idx``, ``scorer``, ``reward``: one row per response per
scorer role, ``reward`` null where the scorer gave none) and a ``human_scores`` table (``prompt_id``, ``scorer``,
``reward``: the reward each scorer gave the prompt's human-written answer). A null, NaN or infinite reward is *not
finite* and never counts. Where both tables also carry ``n_tokens`` and ``reward_kind`` (the label stage writes
them), each role whose rewards are DPO implicit rewards (``reward_kind`` ``dpo`` in every row of both) is measured a
second time per token.

**Chance.** If the human answer were *exchangeable* with the k samples of its prompt (one more draw from the same
distribution of rewards), each of the k + 1 answers would be equally likely to take any place: the expected
mid-rank is (k + 2) / 2 (ties included: mid-ranks always sum to (k + 1)(k + 2) / 2), the expected normalised rank
½, and P(strictly below all k) = 1 / (k + 1) without ties — with ties it can only be lower (at most one answer is
strictly below all the others, and each is so with the same probability), so 1 / (k + 1) is then an upper bound and
the test below is conservative.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import stats

from cream_data.rewards.agreement import index_in, reward_cube, role_order

SUMMED_KIND = "dpo"     # the reward_kind whose rewards are sums over the response's tokens
LENGTH_COLUMNS = ("n_tokens", "reward_kind")


def below_all_p_value(observed: int, k: np.ndarray) -> float | None:
    """One-sided exact p-value of ``observed`` below-all prompts under chance: P(X ≥ observed) for X = Σ_p B_p, the
    B_p independent Bernoulli(1 / (k_p + 1)) (a Poisson-binomial distribution). Exact: X's distribution is the
    convolution of one binomial per distinct k (the prompts that share a k). None for no prompt.

    Prompt a (k = 3) and b (k = 1), one below all: P(X ≥ 1) = 1 − (3/4)(1/2) = 5/8.

    >>> below_all_p_value(1, np.array([3, 1]))
    0.625
    >>> below_all_p_value(0, np.array([3, 1])), below_all_p_value(1, np.array([], dtype=int))
    (1.0, None)
    """
    if k.size == 0:
        return None
    pmf = np.ones(1)
    for kv, count in zip(*np.unique(k, return_counts=True)):
        pmf = np.convolve(pmf, stats.binom.pmf(np.arange(count + 1), count, 1.0 / (kv + 1)))
    return float(min(1.0, pmf[observed:].sum()))


def rank_measures(samples: np.ndarray, human: np.ndarray) -> dict:
    """The measures of one role (see :func:`human_ranks`): ``samples[p, i]`` the reward of sample i of prompt p and
    ``human[p]`` the human answer's (NaN: not finite)."""
    ok = np.isfinite(samples)
    k = ok.sum(axis=1)
    counts = np.isfinite(human) & (k >= 1)
    s, ok, k, h = samples[counts], ok[counts], k[counts], human[counts][:, None]
    higher = (ok & (s > h)).sum(axis=1)
    tied = (ok & (s == h)).sum(axis=1)
    rank = 1.0 + higher + 0.5 * tied
    below = higher == k
    n = int(rank.size)

    def mean(x):
        return float(x.mean()) if n else None

    return {"n": n, "k_min": int(k.min()) if n else None, "k_max": int(k.max()) if n else None,
            "mean_rank": mean(rank), "mean_normalised_rank": mean((rank - 1) / k),
            "below_all": int(below.sum()), "below_all_share": mean(below),
            "chance_mean_rank": mean((k + 2) / 2), "chance_mean_normalised_rank": 0.5 if n else None,
            "chance_below_all_share": mean(1.0 / (k + 1)),
            "below_all_p_value": below_all_p_value(int(below.sum()), k)}


def _by_role(scores: pa.Table, human_scores: pa.Table) -> dict[str, dict]:
    """:func:`rank_measures` per role present in both tables, in :func:`role_order`."""
    roles, prompt_ids, cube = reward_cube(scores)
    if human_scores.num_rows == 0 or not roles:
        return {}
    h_roles = np.asarray(human_scores.column("scorer").to_pylist(), dtype=object)
    h_prompt = index_in(human_scores.column("prompt_id"), prompt_ids)  # -1: a prompt without samples
    h_reward = human_scores.column("reward").to_numpy().astype(np.float64)  # nulls → NaN
    out = {}
    for role in role_order(set(h_roles) & set(roles)):
        human = np.full(cube.shape[1], np.nan)
        sel = (h_roles == role) & (h_prompt >= 0)
        human[h_prompt[sel]] = h_reward[sel]
        out[role] = rank_measures(cube[roles.index(role)], human)
    return out


def summed_roles(scores: pa.Table, human_scores: pa.Table) -> set[str]:
    """The roles whose rewards are sums over tokens in both tables (``reward_kind`` ``dpo`` in every row of the role
    in each); empty where a table lacks ``n_tokens`` or ``reward_kind``."""
    if not all(c in t.column_names for c in LENGTH_COLUMNS for t in (scores, human_scores)):
        return set()
    kinds = [{}, {}]
    for side, t in zip(kinds, (scores, human_scores)):
        for role, kind in zip(t.column("scorer").to_pylist(), t.column("reward_kind").to_pylist()):
            side.setdefault(role, set()).add(kind)
    return {r for r in kinds[0].keys() & kinds[1].keys() if kinds[0][r] == kinds[1][r] == {SUMMED_KIND}}


def per_token(table: pa.Table) -> pa.Table:
    """``table`` with each reward divided by its response's token count, ``max(n_tokens, 1)`` (as the
    ``likelihood_norm`` reward divides a log-likelihood)."""
    reward = table.column("reward").to_numpy().astype(np.float64)  # nulls → NaN
    ntok = np.maximum(table.column("n_tokens").to_numpy().astype(np.float64), 1.0)
    return table.set_column(table.column_names.index("reward"), "reward",
                            pa.array(reward / ntok, pa.float64(), from_pandas=True))


def human_ranks(scores: pa.Table, human_scores: pa.Table) -> list[dict]:
    """Where each prompt's human-written answer ranks among its sampled responses, per scorer role present in
    both tables (in :func:`~cream_data.rewards.agreement.role_order`); ``[]`` when none is.

    A prompt **counts** for a role when the human answer's reward is finite and at least one sample's (k ≥ 1)
    is. Among the k + 1 answers:

    * **rank** = 1 + (samples with a strictly higher reward) + ½ (samples with exactly the same reward): 1 =
      best, k + 1 = worst, a tie shares the places it spans (the mid-rank);
    * **normalised rank** = (rank − 1) / k: 0 = above every sample, 1 = below every sample;
    * **below all**: the human answer's reward is strictly below every sample's (rank = k + 1 without a tie).

    Per role: ``n`` prompts, ``k_min``/``k_max`` (samples per prompt), ``mean_rank``, ``mean_normalised_rank``,
    ``below_all`` (count) and ``below_all_share`` (of n); beside them what an answer exchangeable with the
    samples would get on the same prompts (module doc): ``chance_mean_rank`` = mean of (k + 2) / 2,
    ``chance_mean_normalised_rank`` = ½, ``chance_below_all_share`` = mean of 1 / (k + 1); and
    ``below_all_p_value``, the exact one-sided probability of at least ``below_all`` below-all prompts by chance
    (:func:`below_all_p_value`). None for the means, chance values and p-value where n = 0.

    ``per_token``: for a role whose rewards are summed over tokens (:func:`summed_roles`: DPO implicit rewards,
    whose magnitude grows with the response's length, while human answers and samples differ in length), the
    same measures with each reward divided by its response's ``n_tokens`` (:func:`per_token`); else None.

    Hand-worked (judge): prompt a, samples [4, 2, 3], human 3: one higher, one tie → rank 1 + 1 + ½ = 2.5 of 4,
    normalised 0.5; prompt b, samples [5, NaN], human 1: k = 1, one higher → rank 2 of 2, normalised 1, below
    all. Mean rank 2.25, mean normalised 0.75, below all 1/2. Chance: mean rank ((3 + 2)/2 + (1 + 2)/2) / 2 = 2,
    below all (1/4 + 1/2) / 2 = 0.375; p = P(at least 1 of B(1/4), B(1/2)) = 1 − (3/4)(1/2) = 0.625.

    >>> s = pa.table({"prompt_id": ["a"] * 3 + ["b"] * 2, "response_idx": [0, 1, 2, 0, 1],
    ...               "scorer": ["judge"] * 5, "reward": [4.0, 2, 3, 5, None]})
    >>> h = pa.table({"prompt_id": ["a", "b"], "scorer": ["judge", "judge"], "reward": [3.0, 1.0]})
    >>> (r,) = human_ranks(s, h)
    >>> r["n"], r["mean_rank"], r["mean_normalised_rank"], r["below_all_share"]
    (2, 2.25, 0.75, 0.5)
    >>> r["chance_mean_rank"], r["chance_below_all_share"], r["below_all_p_value"], r["per_token"]
    (2.0, 0.375, 0.625, None)
    >>> human_ranks(s, h.slice(0, 0))
    []
    """
    raw = _by_role(scores, human_scores)
    summed = summed_roles(scores, human_scores) & raw.keys()
    scaled = _by_role(per_token(scores), per_token(human_scores)) if summed else {}
    return [{"scorer": role, **m, "per_token": scaled.get(role) if role in summed else None}
            for role, m in raw.items()]
