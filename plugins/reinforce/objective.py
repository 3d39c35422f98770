"""REINFORCE++ (Hu 2025): no critic and no group baseline. Each token's reward is the
task's reward events at it minus a per-token KL penalty ``beta * (log pi_old - log
pi_ref)``; its return is the sum of rewards from it to the end (gamma 1); the baseline is
the batch: returns are normalized to zero mean and unit variance over every completion
token of the global batch. The update is the clipped surrogate (``rlx.pg_losses``).
"""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.pg_losses import PolicyGradient


def batch_normalized_returns(token_rewards: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Reward-to-go of each completion token ``[B, T]``, normalized over the masked tokens."""
    returns = (token_rewards * mask).flip(-1).cumsum(-1).flip(-1)
    on = mask.bool()
    vals = returns[on]
    std = vals.std() if vals.numel() > 1 else torch.ones((), dtype=vals.dtype)
    return (returns - vals.mean()) / (std + eps) * mask


class Reinforce(PolicyGradient):
    kl_in_loss = False

    def advantages(self, rewards: torch.Tensor, placed: torch.Tensor, group: torch.Tensor,
                   batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["mask"]
        token_rewards = torch.where(placed, rewards, 0.0).double()
        metrics: dict[str, float] = {}
        if "ref_logp" in batch:
            kl = (batch["old_logp"] - batch["ref_logp"]).double() * mask
            token_rewards = token_rewards - self.config.beta * kl
            metrics["kl/ref"] = float(kl.sum(-1).mean())
        return batch_normalized_returns(token_rewards, mask.double()).to(rewards.dtype), metrics
