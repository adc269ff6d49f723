"""The consistency-regularized DPO loss (CREAM; docs/algorithm.md, section 5) as pure tensor maths.

For a pair ``(y+, y-)`` of prompt ``x`` with consistency weight ``C`` in [0, 1]::

    h      = [log pi_theta(y+|x) - log pi_ref(y+|x)] - [log pi_theta(y-|x) - log pi_ref(y-|x)]
    loss_i = C_i * -log sigmoid(beta * h_i) + (1 - C_i) * -log sigmoid(-beta * h_i)

DPO on the pair weighted by ``C`` plus "reversed" DPO weighted by ``1 - C``: conservative DPO (cDPO) with a
per-pair label smoothing ``eps_i = 1 - C_i``. ``C = 1`` is plain sigmoid DPO. The implicit rewards are
``beta * (log pi_theta - log pi_ref)`` of each response (:func:`cream_data.rewards.dpo.implicit_reward`).

How ``C`` is chosen per pair for each training method (cream: the pair's stored weight, which the label stage's
scope makes the dataset mean by default; cream-avg: the table's mean; dpo: 1) is
:func:`cream_data.rewards.dpo.pair_weights`, beside the labeler's rewards and pairs: this module is the torch loss
only. Nothing else is added to the loss: no SFT (negative log-likelihood) term, as in the authors' trainer.
"""

from __future__ import annotations

from typing import NamedTuple

from cream_data.rewards.dpo import implicit_reward


class CreamLossOutput(NamedTuple):
    """Per-pair tensors, each of shape ``[batch]``."""

    losses: "torch.Tensor"  # noqa: F821  loss_i above
    chosen_rewards: "torch.Tensor"  # noqa: F821  beta * (log pi_theta(y+|x) - log pi_ref(y+|x)), detached
    rejected_rewards: "torch.Tensor"  # noqa: F821  beta * (log pi_theta(y-|x) - log pi_ref(y-|x)), detached


def cream_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, weight,
               beta: float) -> CreamLossOutput:
    """Consistency-regularized DPO loss per pair; every argument but ``beta`` is a ``[batch]`` tensor.

    ``weight`` is ``C`` (a tensor or a float); log-probs are sums over the response tokens.
    Returns ``(losses, chosen_rewards, rejected_rewards)``; the caller takes the mean of ``losses``.
    """
    import torch
    import torch.nn.functional as F

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    c = torch.as_tensor(weight, dtype=h.dtype, device=h.device)
    # logsigmoid is the numerically stable form of log(sigmoid(.)) for large |beta*h|.
    losses = -c * F.logsigmoid(beta * h) - (1 - c) * F.logsigmoid(-beta * h)
    return CreamLossOutput(losses, implicit_reward(policy_chosen_logps.detach(), ref_chosen_logps, beta),
                           implicit_reward(policy_rejected_logps.detach(), ref_rejected_logps, beta))

