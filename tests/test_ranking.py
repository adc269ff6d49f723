"""Ranks and consistency against scipy (property-based, random and heavily tied) and hand-worked numbers."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from cream_data.rewards import ranking
from cream_data.rewards.ranking import consistency, kendall_tau, ordinal_ranks, spearman_rho, top_order


def test_docstring_examples_are_correct():
    result = doctest.testmod(ranking, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 7 and result.failed == 0


def _scipy_ranks(r: np.ndarray) -> np.ndarray:
    """The CREAM reference's ranks (scipy ordinal, ascending, ties by order of appearance), flipped to 1 = best."""
    return np.stack([len(row) + 1 - stats.rankdata(row, method="ordinal") for row in r])


def _scipy_measures(a: np.ndarray, b: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant/short inputs we do not produce
        tau = np.array([stats.kendalltau(x, y).statistic for x, y in zip(a, b)])
        rho = np.array([stats.spearmanr(x, y).statistic for x, y in zip(a, b)])
    top = np.array([float(np.argmin(x) == np.argmin(y) and np.argmax(x) == np.argmax(y)) for x, y in zip(a, b)])
    return tau, rho, top


# Rewards drawn from a handful of values produce heavy ties; the float strategy produces few.
tied_values = st.sampled_from([-1.5, 0.0, 0.25, 1.0, 3.0])
any_floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
shapes = st.tuples(st.integers(1, 40), st.integers(2, 12))


@st.composite
def reward_pairs(draw):
    p, n = draw(shapes)
    elements = draw(st.sampled_from([tied_values, any_floats, st.integers(0, 2).map(float)]))
    a = draw(hnp.arrays(np.float64, (p, n), elements=elements))
    b = draw(hnp.arrays(np.float64, (p, n), elements=elements))
    return a, b


@settings(max_examples=300, deadline=None)
@given(reward_pairs())
def test_ranks_and_measures_match_scipy(pair):
    ra, rb = pair
    a, b = ordinal_ranks(ra), ordinal_ranks(rb)
    assert a.dtype == np.int16
    np.testing.assert_array_equal(a, _scipy_ranks(ra))
    np.testing.assert_array_equal(b, _scipy_ranks(rb))
    tau, rho, top = _scipy_measures(a, b)
    np.testing.assert_allclose(kendall_tau(a, b), tau, rtol=0, atol=1e-12)
    np.testing.assert_allclose(spearman_rho(a, b), rho, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(top_order(a, b), top)
    for method, expected in (("kendall", (tau + 1) / 2), ("spearman", (rho + 1) / 2), ("toporder", top)):
        c, t = consistency(a, b, method)
        np.testing.assert_allclose(c, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(t, tau, rtol=0, atol=1e-12)  # always Kendall's tau
        assert ((c >= 0) & (c <= 1)).all()


def test_thousands_of_random_and_tied_prompts_match_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8, 16):
        cont = rng.normal(size=(400, n))
        tied = rng.integers(0, 3, size=(400, n)).astype(float)  # mostly ties
        for ra, rb in ((cont, rng.normal(size=cont.shape)), (tied, rng.integers(0, 3, size=tied.shape) * 1.0)):
            a, b = ordinal_ranks(ra), ordinal_ranks(rb)
            np.testing.assert_array_equal(a, _scipy_ranks(ra))
            tau, rho, top = _scipy_measures(a, b)
            np.testing.assert_allclose(kendall_tau(a, b), tau, atol=1e-12)
            np.testing.assert_allclose(spearman_rho(a, b), rho, atol=1e-12)
            np.testing.assert_array_equal(top_order(a, b), top)


def test_chunked_kendall_equals_single_chunk(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = ordinal_ranks(rng.normal(size=(1000, 6))), ordinal_ranks(rng.normal(size=(1000, 6)))
    whole = kendall_tau(a, b)
    monkeypatch.setattr(ranking, "_CHUNK_ROWS", 7)
    np.testing.assert_array_equal(kendall_tau(a, b), whole)


def test_hand_worked_ranks_with_ties_and_infinities():
    r = np.array([[0.5, 2.0, 0.5, -1.0], [np.inf, -np.inf, 0.0, np.inf], [-0.0, 0.0, 0.0, -0.0]])
    # ascending, ties by appearance, then flipped: among equals the earlier response ranks worse
    assert ordinal_ranks(r).tolist() == [[3, 1, 2, 4], [2, 4, 3, 1], [4, 3, 2, 1]]


def test_hand_worked_measures():
    a = np.array([[1, 2, 3, 4, 5]])
    b = np.array([[2, 1, 3, 5, 4]])  # two adjacent swaps: 2 discordant of 10 pairs
    assert kendall_tau(a, b).tolist() == [0.6]  # 1 - 2*2/10
    assert spearman_rho(a, b).tolist() == [0.8]  # 1 - 6*4/(5*24)
    assert top_order(a, b).tolist() == [0.0]  # worst differs (response 4 vs 3)
    assert consistency(a, b, "kendall")[0].tolist() == [0.8]
    assert consistency(a, b, "spearman")[0].tolist() == [0.9]
    assert consistency(a, b, "toporder")[0].tolist() == [0.0]


def test_n_equals_two_is_agree_or_reverse():
    a = np.array([[1, 2], [1, 2]])
    b = np.array([[1, 2], [2, 1]])
    for method in ("kendall", "spearman", "toporder"):
        c, tau = consistency(a, b, method)
        assert c.tolist() == [1.0, 0.0]
        assert tau.tolist() == [1.0, -1.0]


def test_n_below_two_gives_nan_like_scipy():
    one = np.array([[1], [1]])
    assert np.isnan(kendall_tau(one, one)).all() and np.isnan(spearman_rho(one, one)).all()


def test_empty_batch():
    empty = np.zeros((0, 5), dtype=np.int16)
    assert kendall_tau(empty, empty).shape == (0,)
    assert consistency(empty, empty, "spearman")[0].shape == (0,)


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="permutations"):
        kendall_tau(np.array([[1, 1, 2]]), np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="shapes"):
        kendall_tau(np.array([[1, 2]]), np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="consistency method"):
        consistency(np.array([[1, 2]]), np.array([[1, 2]]), "pearson")
    with pytest.raises(ValueError, match=r"\[P, N\]"):
        ordinal_ranks(np.array([1.0, 2.0]))


def test_fractional_ranks_are_refused():
    with pytest.raises(ValueError, match="integer ranks"):
        kendall_tau(np.array([[1.5, 2.0]]), np.array([[1, 2]]))
    assert kendall_tau(np.array([[1.0, 2.0]]), np.array([[2, 1]])).tolist() == [-1.0]


@settings(max_examples=200, deadline=None)
@given(reward_pairs())
def test_tau_b_on_raw_values_matches_scipy(pair):
    ra, rb = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.array([stats.kendalltau(x, y).statistic for x, y in zip(ra, rb)])
    np.testing.assert_allclose(ranking.kendall_tau_b(ra, rb), want, rtol=1e-12, atol=1e-12, equal_nan=True)
