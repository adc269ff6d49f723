"""The DPO side of the rewards: the implicit reward a policy gives a response, and the consistency C each training
method weighs a pair by (docs/algorithm.md, sections 2.2, 4.4 and 5).

The implicit reward of response ``y`` to prompt ``x`` under policy ``pi`` and reference ``pi_ref`` is

    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))

The label stage ranks with beta = 1 (beta > 0 only scales: ranks, pairs and C do not move); the trainer logs its
rewards with its own beta (``cream_train/loss.py``). Pure arithmetic: numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from cream_data.vocab import PER_PAIR_SCOPES, TRAIN_METHODS

if TYPE_CHECKING:
    from cream_data.rewards.spec import PairingSpec

# The lowest C the label setting ``clip_c`` lets a pair train with. CREAM's loss (paper Eq. 3.7) is
# C · DPO(y+ over y-) + (1 − C) · DPO(y- over y+): with C < 1/2 it leans toward the REJECTED answer (C = 0 is DPO on
# the swapped pair), and the paper's derivation takes C in [1/2, 1]. Neither the paper's algorithm nor the authors'
# code clips, so clipping is an option, off by default.
C_FLOOR = 0.5

# The consistency statistic each measure turns into C (docs/algorithm.md 3.2), as the plan writes it.
_C_OF = {"kendall": "(tau+1)/2", "spearman": "(rho+1)/2", "toporder": "TopOrder (1: same best and worst, else 0)"}


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


def scoped_weights(c: np.ndarray, *, scope: str, clip_c: bool = False) -> np.ndarray:
    """The ``weight`` column of the pairs whose consistencies are ``c`` (one per pair formed, skipped prompts not
    among them): ``dataset`` gives every pair the mean of ``c`` (the paper's one C of Eq. 3.7, averaged over the
    iteration's pairs as its algorithm and the authors' ``--method consistency_avg`` do), ``prompt`` each pair its
    own (the authors' ``consistency_dyn``). ``clip_c`` then raises a weight below 1/2 to 1/2 (:data:`C_FLOOR`): the
    dataset mean is clipped once, per-prompt weights one by one.

    >>> scoped_weights(np.array([0.0, 0.25, 0.5]), scope="dataset"), scoped_weights(np.array([0.25, 1]), scope="prompt")
    (array([0.25, 0.25, 0.25]), array([0.25, 1.  ]))
    >>> scoped_weights(np.array([0.0, 0.25, 0.5]), scope="dataset", clip_c=True)
    array([0.5, 0.5, 0.5])
    """
    c = np.asarray(c, dtype=np.float64)
    weight = c.copy() if scope in PER_PAIR_SCOPES else np.full(len(c), c.mean() if len(c) else 1.0)
    return np.maximum(weight, C_FLOOR) if clip_c else weight


def c_in_words(method: str, spec: "PairingSpec") -> str:
    """The C a training ``method`` weighs each pair by when the pairs come from ``spec``, in words (what `cream run
    --plan` and `--check` say about the training stages).

    >>> from cream_data.rewards.spec import PairingSpec
    >>> c_in_words("cream", PairingSpec())
    "C = dataset mean of (tau+1)/2 over the iteration's pairs (current vs previous rankings)"
    >>> c_in_words("cream", PairingSpec(scope="prompt", clip_c=True))
    "C = each prompt's own (tau+1)/2 raised to 1/2 where below (current vs previous rankings)"
    """
    if method == "dpo":
        return "C = 1 (plain DPO)"
    if spec.partner is None:
        return "C = 1 (no consistency partner)"
    if spec.pair_policy == "agree":
        return f"C = 1 (pairs kept where {spec.partner} agrees)"
    stat = _C_OF[spec.consistency]
    if spec.scope == "dataset":
        clip = ", raised to 1/2 if below" if spec.clip_c else ""
        what = f"dataset mean of {stat} over the iteration's pairs{clip}"
    else:
        clip = " raised to 1/2 where below" if spec.clip_c else ""
        each = f"each prompt's own {stat}{clip}"
        what = f"the trainer's mean over the table of {each}" if method == "cream-avg" else each
    kept = f", pairs kept where {spec.partner} agrees" if spec.pair_policy == "both" else ""
    return f"C = {what} ({spec.reward_scorer} vs {spec.partner} rankings{kept})"


def pair_weights(method: str, weights: Sequence[float] | None, n_rows: int) -> list[float]:
    """The C each pair trains with under a training ``method``: its own ``weight`` column (``cream``: the C after
    the labeler's scope and clip, by default the dataset mean), the table's mean weight (``cream-avg``) or 1
    (``dpo``: plain DPO).

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
