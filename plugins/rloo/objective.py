"""RLOO (Ahmadian et al. 2024, "Back to Basics"): REINFORCE with a leave-one-out
baseline. With k completions of a prompt and sequence rewards R_1..R_k, completion i's
advantage is ``R_i - (sum_j R_j - R_i) / (k - 1)``, the same for all its tokens. The KL
to the reference enters the reward, as in TRL's RLOO: ``R_i = sum of reward events -
beta * sum_t (log pi_old - log pi_ref)``. The update is the clipped surrogate
(``rlx.plugins.shared.policy_gradient``) with these advantages.

NaN rewards follow grpo (and TRL's RLOO): a NaN event is no event, a row with no event
left is not applicable. Such a row is left out of its group's baselines and gets
advantage 0; the baseline of an applicable row is the mean over the *other applicable*
rows, and an applicable row alone in its group gets 0, as a lone row does in grpo.
"""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.plugins.shared.policy_gradient import PolicyGradient
from rlx.reward import applicable_rows, reward_events


def leave_one_out(rewards: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """``R_i - mean of the other rewards in i's group``, for sequence rewards ``[B]``.

    NaN marks a row that is not applicable: it counts in no baseline and gets 0, and so
    does a row with no applicable sibling (it has no baseline to compare against)."""
    n = int(group.max()) + 1
    ok = ~torch.isnan(rewards)
    r = torch.where(ok, rewards, torch.zeros_like(rewards))
    total = torch.zeros(n, dtype=rewards.dtype).index_add_(0, group, r)
    count = torch.zeros(n, dtype=rewards.dtype).index_add_(0, group, ok.to(rewards.dtype))
    others = count[group] - 1
    adv = r - (total[group] - r) / others.clamp(min=1)
    return torch.where(ok & (others > 0), adv, torch.zeros_like(adv))


class RLOO(PolicyGradient):
    kl_in_loss = False

    def advantages(self, rewards: torch.Tensor, placed: torch.Tensor, group: torch.Tensor,
                   batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["mask"]
        # a row's reward is the sum of its events, NaN ones left out (TRL nansums across reward
        # functions); a row with no event at all is NaN, so leave_one_out leaves it out
        seq = torch.where(reward_events(rewards, placed), rewards, 0.0).sum(-1)
        seq = torch.where(applicable_rows(rewards, placed), seq, float("nan"))
        metrics: dict[str, float] = {}
        if "ref_logp" in batch:
            kl = ((batch["old_logp"] - batch["ref_logp"]) * mask).sum(-1)
            seq = seq - self.config.beta * kl
            metrics["kl/ref"] = float(kl.mean())
        adv = leave_one_out(seq.double(), group).to(rewards.dtype)
        return adv[:, None] * mask, metrics
