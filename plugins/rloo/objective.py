"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with a leave-one-out
baseline. With k completions of a prompt and sequence rewards R_1..R_k, completion i's
advantage is ``R_i - (sum_j R_j - R_i) / (k - 1)``, the same for all its tokens. The KL
to the reference enters the reward, as in TRL's RLOO: ``R_i = sum of reward events -
beta * sum_t (log pi_old - log pi_ref)``. The update is the clipped surrogate
(``rlx.pg_losses``) with these advantages.
"""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.pg_losses import PolicyGradient


def leave_one_out(rewards: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``R_i - mean of the other rewards in i's group``, for sequence rewards ``[B]``."""
    n = int(group.max()) + 1
    total = torch.zeros(n, dtype=rewards.dtype).index_add_(0, group, rewards)
    count = torch.bincount(group, minlength=n).to(rewards.dtype)
    others = (count[group] - 1).clamp(min=1)
    return rewards - (total[group] - rewards) / others


class RLOO(PolicyGradient):
    kl_in_loss = False

    def advantages(self, rewards: torch.Tensor, placed: torch.Tensor, group: torch.Tensor,
                   batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["mask"]
        seq = torch.where(placed, rewards, 0.0).sum(-1)  # NaN marks "not applicable" off the events
        metrics: dict[str, float] = {}
        if "ref_logp" in batch:
            kl = ((batch["old_logp"] - batch["ref_logp"]) * mask).sum(-1)
            seq = seq - self.config.beta * kl
            metrics["kl/ref"] = float(kl.mean())
        adv = leave_one_out(seq.double(), group).to(rewards.dtype)
        return adv[:, None] * mask, metrics
