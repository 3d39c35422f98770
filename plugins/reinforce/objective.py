"""REINFORCE++ (Hu 2025): no critic and no group baseline. Each token's reward is the
task's reward events at it minus a per-token KL penalty ``beta * (log pi_old - log
pi_ref)``; its return is the sum of rewards from it to the end (gamma 1); the baseline is
the batch: returns are normalized to zero mean and unit variance over every completion
token of the global batch. The update is the clipped surrogate
(``rlx.plugins.shared.policy_gradient``).

NaN rewards follow grpo: a NaN event is no event, and a row with no event left is not
applicable: its tokens are left out of the normalization and get advantage 0.
"""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.plugins.shared.policy_gradient import PolicyGradient
from rlx.reward import applicable_rows, reward_events


def batch_normalized_returns(token_rewards: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8,
                             applicable: torch.Tensor | None = None) -> torch.Tensor:
    """Reward-to-go of each completion token ``[B, T]``, normalized over the masked tokens
    of the ``applicable`` rows (``[B]`` bool; default all); other rows get 0."""
    if applicable is not None:
        mask = mask * applicable.to(mask.dtype)[:, None]
    on = mask.bool()
    # where, not a product: a left-out row's rewards may be NaN
    returns = torch.where(on, token_rewards, torch.zeros_like(token_rewards)).flip(-1).cumsum(-1).flip(-1)
    vals = returns[on]
    if vals.numel() == 0:
        return torch.zeros_like(returns)
    std = vals.std() if vals.numel() > 1 else torch.ones((), dtype=vals.dtype)
    return (returns - vals.mean()) / (std + eps) * mask


class Reinforce(PolicyGradient):
    kl_in_loss = False

    def advantages(self, rewards: torch.Tensor, placed: torch.Tensor, group: torch.Tensor,
                   batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["mask"]
        token_rewards = torch.where(reward_events(rewards, placed), rewards, 0.0).double()
        metrics: dict[str, float] = {}
        if "ref_logp" in batch:
            kl = (batch["old_logp"] - batch["ref_logp"]).double() * mask
            token_rewards = token_rewards - self.config.beta * kl
            metrics["kl/ref"] = float(kl.sum(-1).mean())
        adv = batch_normalized_returns(token_rewards, mask.double(), applicable=applicable_rows(rewards, placed))
        return adv.to(rewards.dtype), metrics
