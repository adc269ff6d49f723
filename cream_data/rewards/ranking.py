"""Ordinal ranks and rank-consistency measures, vectorised over a ``[P, N]`` matrix (P prompts, N responses).

CREAM ranks the N responses of every prompt under two reward vectors (current model ``M_t`` and previous
model ``M_{t-1}``) and measures how much the two rankings agree (docs/algorithm.md, section 3). Every function
here works on all P prompts at once with numpy; there is no per-prompt Python loop.

Conventions
-----------
* **Ranks are ordinal, 1 = best, with scipy's tie order** — exactly the CREAM reference's ranks, flipped so that
  1 is the best: ``ranks[p] = N + 1 - scipy.stats.rankdata(rewards[p], method="ordinal")``. scipy ranks
  ascending and breaks a tie by order of appearance, so among equal rewards the *lower* index gets the *worse*
  (larger) rank here. Flipping both rankings leaves Kendall's tau and Spearman's rho unchanged, so C is the
  reference's C to the last bit, ties included.
* Because ordinal ranks have no ties, Kendall's tau-a equals tau-b, and Spearman's rho has its closed form.
  For a pair of rankings ``a, b`` of N items with ``n0 = N (N - 1) / 2`` item pairs:

      tau = (concordant - discordant) / n0 = 1 - 2 * discordant / n0
      rho = 1 - 6 * sum_i (a_i - b_i)^2 / (N (N^2 - 1))

* N < 2 has no pairs: tau and rho are NaN there (as in scipy).

:func:`select_pairs` puts them together on dense reward matrices: both rankings, C, and the chosen/rejected pick
(the core that :mod:`cream_data.rewards.pairing` runs on each group of prompts with the same number of usable
responses).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cream_data.vocab import CONSISTENCY_MEASURES

CONSISTENCY_METHODS: tuple[str, ...] = CONSISTENCY_MEASURES  # the names; vocab.py defines them

# Rows per chunk in the pairwise Kendall computation: bounds the [rows, N(N-1)/2] temporaries
# (1M prompts x N=8 would otherwise allocate ~28M-entry arrays several times over).
_CHUNK_ROWS = 1 << 16


def ordinal_ranks(rewards: np.ndarray) -> np.ndarray:
    """Ordinal ranks of each row of ``rewards`` ``[P, N]``: 1 = highest reward; among equals the lower index gets
    the worse rank (scipy's ascending order of appearance, flipped).

    Equal to ``N + 1 - scipy.stats.rankdata(rewards[p], method="ordinal")`` for every row ``p``. NaN rewards are
    not meaningful to rank (callers skip those prompts); they are ranked last here.

    Hand-worked example: rewards ``[0.5, 2.0, 0.5, -1.0]``. scipy, ascending: -1.0 (response 3) → 1, the tie 0.5
    in order of appearance: response 0 → 2, response 2 → 3, then 2.0 (response 1) → 4. Flipped (5 - r):
    response 0 → 3, 1 → 1, 2 → 2, 3 → 4.

    >>> ordinal_ranks(np.array([[0.5, 2.0, 0.5, -1.0]])).tolist()
    [[3, 1, 2, 4]]
    >>> ordinal_ranks(np.array([[3.0, 3.0], [1.0, 7.0]])).tolist()   # all equal: the later index ranks better
    [[2, 1], [2, 1]]
    """
    r = _as_matrix(rewards, np.float64, "rewards")
    # A stable ascending sort keeps equal rewards in index order; NaN is moved to the bottom first.
    order = np.argsort(np.where(np.isnan(r), -np.inf, r), axis=1, kind="stable")
    ranks = np.empty(r.shape, dtype=np.int16)
    positions = np.broadcast_to(np.arange(r.shape[1], 0, -1, dtype=np.int16), r.shape)
    np.put_along_axis(ranks, order, positions, axis=1)
    return ranks


def kendall_tau(ranks_a: np.ndarray, ranks_b: np.ndarray) -> np.ndarray:
    """Kendall's tau ``[P]`` between two ordinal rankings ``[P, N]`` (no ties, so tau-a = tau-b).

    Counts, for each of the ``N (N - 1) / 2`` response pairs ``i < j``, whether the two rankings order
    them the same way: ``tau = 1 - 2 * discordant / n0``. Equals ``scipy.stats.kendalltau(a, b)``. Cost is
    O(P * N^2) time, computed in row chunks so memory stays O(chunk * N^2): fine for the N <= 16 that
    sampling produces (N = 5 in the paper).

    Hand-worked example: a = [1, 2, 3, 4] and b = [2, 1, 3, 4] disagree on one pair (responses 0, 1) of
    six, so tau = 1 - 2 * 1/6 = 2/3; a reversed ranking disagrees on all six pairs, tau = -1.

    >>> a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    >>> kendall_tau(a, np.array([[2, 1, 3, 4], [4, 3, 2, 1]])).round(6).tolist()
    [0.666667, -1.0]
    """
    a, b = _check_pair(ranks_a, ranks_b)
    p, n = a.shape
    if n < 2:
        return np.full(p, np.nan)
    i, j = np.triu_indices(n, k=1)
    n0 = i.size
    discordant = np.empty(p, dtype=np.int64)
    for lo in range(0, p, _CHUNK_ROWS):
        ca, cb = a[lo : lo + _CHUNK_ROWS], b[lo : lo + _CHUNK_ROWS]
        # Ranks are distinct, so each pair is either concordant or discordant (never tied).
        a_first = ca[:, i] < ca[:, j]
        b_first = cb[:, i] < cb[:, j]
        discordant[lo : lo + _CHUNK_ROWS] = np.count_nonzero(a_first != b_first, axis=1)
    return 1.0 - 2.0 * discordant / n0


def kendall_tau_b(values_a: np.ndarray, values_b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b ``[P]`` on raw values ``[P, N]`` (ties kept, not broken by index): ``(nc - nd) /
    sqrt((n0 - t_a) (n0 - t_b))`` with ``t_a``, ``t_b`` the pairs tied within each row. Equals
    ``scipy.stats.kendalltau(a, b)`` (its default variant). A response that is NaN (or ±inf) on either side drops
    out of its row; NaN where fewer than 2 responses remain or one side is all-equal on them. For integer-valued
    scorers (a 0–5 judge, a 0/1 oracle) it shows what ordinal ranks hide: ties count as neither agreement nor
    disagreement.

    Hand-worked: a = [1, 1, 0], b = [2, 1, 0]: pairs (0,1) tied in a; (0,2), (1,2) concordant: nc = 2, nd = 0,
    t_a = 1, t_b = 0, n0 = 3: tau_b = 2 / sqrt(2 * 3) = 0.816497. With a NaN: a = [1, 1, 0, NaN], b = [2, 1, 0, 7]
    gives the same (response 3 drops out); a = [3, 3, NaN] is all-equal on what remains: NaN.

    >>> kendall_tau_b(np.array([[1.0, 1.0, 0.0]]), np.array([[2.0, 1.0, 0.0]])).round(6).tolist()
    [0.816497]
    >>> kendall_tau_b(np.array([[1.0, 1, 0, np.nan], [3, 3, np.nan, 0]]),
    ...               np.array([[2.0, 1, 0, 7], [1, 2, 0, np.nan]])).round(6).tolist()
    [0.816497, nan]
    """
    a = _as_matrix(values_a, np.float64, "values_a")
    b = _as_matrix(values_b, np.float64, "values_b")
    if a.shape != b.shape:
        raise ValueError(f"value matrices have different shapes {a.shape} and {b.shape}")
    p, n = a.shape
    if n < 2:
        return np.full(p, np.nan)
    i, j = np.triu_indices(n, k=1)
    out = np.empty(p)
    for lo in range(0, p, _CHUNK_ROWS):
        ca, cb = a[lo:lo + _CHUNK_ROWS], b[lo:lo + _CHUNK_ROWS]
        ok = np.isfinite(ca) & np.isfinite(cb)
        both = ok[:, i] & ok[:, j]  # a response pair counts where both responses are finite on both sides
        with np.errstate(invalid="ignore"):
            sa = np.where(both, np.sign(ca[:, i] - ca[:, j]), 0.0)
            sb = np.where(both, np.sign(cb[:, i] - cb[:, j]), 0.0)
        num = (sa * sb).sum(axis=1)
        den = np.sqrt(np.count_nonzero(sa, axis=1) * np.count_nonzero(sb, axis=1).astype(np.float64))
        out[lo:lo + _CHUNK_ROWS] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def spearman_rho(ranks_a: np.ndarray, ranks_b: np.ndarray) -> np.ndarray:
    """Spearman's rho ``[P]`` between two ordinal rankings ``[P, N]``: ``1 - 6 Σ d² / (N (N² - 1))``.

    Equals ``scipy.stats.spearmanr(a, b)`` (the Pearson correlation of the ranks) without ties.

    Hand-worked example: a = [1, 2, 3], b = [2, 1, 3]: Σ d² = 1 + 1 + 0 = 2, rho = 1 - 12/24 = 0.5.

    >>> spearman_rho(np.array([[1, 2, 3]]), np.array([[2, 1, 3]])).tolist()
    [0.5]
    """
    a, b = _check_pair(ranks_a, ranks_b)
    p, n = a.shape
    if n < 2:
        return np.full(p, np.nan)
    d = a.astype(np.int64) - b.astype(np.int64)
    return 1.0 - 6.0 * np.einsum("pn,pn->p", d, d) / (n * (n * n - 1))


def top_order(ranks_a: np.ndarray, ranks_b: np.ndarray) -> np.ndarray:
    """TopOrder ``[P]``: 1.0 where both rankings pick the same best (rank 1) *and* the same worst (rank N).

    This is the definition in the CREAM paper. The reference code instead compares the ranks of response 0
    and response N-1; we implement the definition (see docs/algorithm.md, section 6).

    >>> a = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    >>> top_order(a, np.array([[1, 3, 2], [2, 1, 3], [1, 2, 3]])).tolist()
    [0.0, 0.0, 1.0]
    """
    a, b = _check_pair(ranks_a, ranks_b)
    if a.shape[1] == 0:
        return np.zeros(a.shape[0])
    same_best = np.argmin(a, axis=1) == np.argmin(b, axis=1)
    same_worst = np.argmax(a, axis=1) == np.argmax(b, axis=1)
    return (same_best & same_worst).astype(np.float64)


def consistency(
    ranks_a: np.ndarray, ranks_b: np.ndarray, method: str = "kendall"
) -> tuple[np.ndarray, np.ndarray]:
    """Consistency ``C`` in [0, 1] and Kendall's tau, both ``[P]``, between two rankings ``[P, N]``.

    * ``kendall``:  C = (tau + 1) / 2       (the CREAM default)
    * ``spearman``: C = (rho + 1) / 2
    * ``toporder``: C = TopOrder in {0, 1}

    The second array is always Kendall's tau, whatever the method, because the preferences table stores it.
    With N = 2 the rankings either agree (tau = rho = 1, TopOrder = 1, C = 1) or are reversed (C = 0).

    >>> c, tau = consistency(np.array([[1, 2, 3, 4]]), np.array([[2, 1, 3, 4]]))
    >>> round(float(c[0]), 6), round(float(tau[0]), 6)
    (0.833333, 0.666667)
    """
    if method not in CONSISTENCY_METHODS:
        raise ValueError(f"unknown consistency method {method!r}; expected one of {', '.join(CONSISTENCY_METHODS)}")
    tau = kendall_tau(ranks_a, ranks_b)
    if method == "kendall":
        c = (tau + 1.0) / 2.0
    elif method == "spearman":
        c = (spearman_rho(ranks_a, ranks_b) + 1.0) / 2.0
    else:
        c = top_order(ranks_a, ranks_b)
    # Guard the [0, 1] contract against the last ulp of floating-point rounding.
    return np.clip(c, 0.0, 1.0), tau


class PairArrays(NamedTuple):
    """Ranks, consistency and the chosen/rejected pick for P prompts with N responses each."""

    ranks: np.ndarray  # [P, N] int16, 1 = best pair-picking reward
    partner_ranks: np.ndarray | None  # [P, N] int16, or None without a partner
    chosen: np.ndarray  # [P] int64, first index of the highest reward
    rejected: np.ndarray  # [P] int64, first index of the lowest reward
    consistency: np.ndarray  # [P] float64 in [0, 1]; 1.0 without a partner
    kendall_tau: np.ndarray | None  # [P] float64, or None without a partner


def select_pairs(rewards: np.ndarray, partner_rewards: np.ndarray | None = None,
                 method: str = "kendall") -> PairArrays:
    """The vectorised core of pairing on ``[P, N]`` reward matrices (finite, N >= 2; no skipping here).

    Hand-worked: rewards [0.1, 0.9, 0.1] rank [3, 1, 2] (the tied 0.1s: response 0 appears first, so it ranks
    worse); chosen 1, rejected 0 (the first of the tied minima). Partner [0.0, 0.5, 0.2] ranks [3, 1, 2] too:
    the rankings agree, tau = 1.

    >>> pa_ = select_pairs(np.array([[0.1, 0.9, 0.1]]), np.array([[0.0, 0.5, 0.2]]))
    >>> pa_.ranks.tolist(), pa_.partner_ranks.tolist(), pa_.chosen.tolist(), pa_.rejected.tolist()
    ([[3, 1, 2]], [[3, 1, 2]], [1], [0])
    >>> float(pa_.consistency[0]), float(pa_.kendall_tau[0])
    (1.0, 1.0)
    """
    ranks = ordinal_ranks(rewards)
    r = np.asarray(rewards, dtype=np.float64)
    chosen = np.argmax(r, axis=1).astype(np.int64)
    rejected = np.argmin(r, axis=1).astype(np.int64)
    if partner_rewards is None:
        return PairArrays(ranks, None, chosen, rejected, np.ones(len(ranks)), None)
    partner_ranks = ordinal_ranks(partner_rewards)
    c, tau = consistency(ranks, partner_ranks, method)
    return PairArrays(ranks, partner_ranks, chosen, rejected, c, tau)


def _as_matrix(x: np.ndarray, dtype, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a [P, N] matrix, got shape {arr.shape}")
    return arr


def _integer_ranks(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind in "iu":
        return _as_matrix(arr, None, name)  # int16 from ordinal_ranks is used as is: no widening copy
    if arr.size and not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{name} must hold integer ranks (ordinal, 1..N); use ordinal_ranks()")
    return _as_matrix(arr, np.int64, name)


def _check_pair(ranks_a: np.ndarray, ranks_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _integer_ranks(ranks_a, "ranks_a"), _integer_ranks(ranks_b, "ranks_b")
    if a.shape != b.shape:
        raise ValueError(f"rankings have different shapes {a.shape} and {b.shape}")
    n = a.shape[1]
    expected = np.arange(1, n + 1)
    for name, r in (("ranks_a", a), ("ranks_b", b)):
        # Each row must be a permutation of 1..N: the tie-free formulas above rely on it.
        if r.size and not (np.sort(r, axis=1) == expected).all():
            raise ValueError(f"{name} rows must be permutations of 1..{n} (ordinal ranks); use ordinal_ranks()")
    return a, b
