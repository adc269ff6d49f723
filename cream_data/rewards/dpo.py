"""The DPO side of the rewards: the implicit reward a policy gives a response, and the consistency C each training
method weighs a pair by (docs/algorithm.md, sections 2.2 and 5).

The implicit reward of response ``y`` to prompt ``x`` under policy ``pi`` and reference ``pi_ref`` is

    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))

The label stage ranks with beta = 1 (beta > 0 only scales: ranks, pairs and C do not move); the trainer logs its
rewards with its own beta (``cream_train/loss.py``). Pure arithmetic: numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cream_data.vocab import TRAIN_METHODS


def implicit_reward(logp, ref_logp, beta: float = 1.0):
    """``beta * (logp - ref_logp)``, elementwise (multiplying by beta = 1 is exact: the plain log-ratio)."""
    return beta * (logp - ref_logp)


def dpo_or_likelihood(logp: np.ndarray, ref_logp: np.ndarray | None, n_tokens: np.ndarray) -> tuple[np.ndarray, str]:
    """A policy's reward of each response and its kind: the DPO implicit reward ``logp - ref_logp`` (``dpo``), or
    without a reference the length-normalised log-likelihood ``logp / max(n_tokens, 1)`` (``likelihood_norm``).

    >>> dpo_or_likelihood(np.array([-4.0, -9.0]), np.array([-5.0, -6.0]), np.array([2, 3]))
    (array([ 1., -3.]), 'dpo')
    >>> dpo_or_likelihood(np.array([-4.0, -9.0]), None, np.array([2, 0]))
    (array([-2., -9.]), 'likelihood_norm')
    """
    if ref_logp is None:
        return logp / np.maximum(n_tokens, 1), "likelihood_norm"
    return implicit_reward(logp, ref_logp), "dpo"


def pair_weights(method: str, weights: Sequence[float] | None, n_rows: int) -> list[float]:
    """The C each pair trains with under a training ``method``: its own ``weight`` column (``cream``: the C after
    the labeler's scope), the table's mean weight (``cream-avg``) or 1 (``dpo``: plain DPO).

    >>> pair_weights("cream-avg", [0.2, 0.6, 1.0], 3), pair_weights("dpo", None, 2)
    ([0.6, 0.6, 0.6], [1.0, 1.0])
    """
    if method not in TRAIN_METHODS:
        raise ValueError(f"method: got {method!r}, expected one of {', '.join(TRAIN_METHODS)}")
    if method == "dpo":
        return [1.0] * n_rows
    if weights is None:
        raise ValueError(f"method {method!r} needs per-pair weights")
    weights = [float(w) for w in weights]
    if method == "cream-avg":
        mean = sum(weights) / len(weights) if weights else 1.0
        return [mean] * len(weights)
    return weights
