"""GRPO, read top to bottom: group-normalized advantages, then the clipped surrogate.

Advantages treat every reward as an event at a token: an outcome reward is one event at
the last token, a process reward one event per step. Events are normalized within their
prompt's group, and a token's advantage is the sum of normalized events from its
position on (process supervision, DeepSeekMath sec. 4.1.3); with one outcome event per
completion this is the usual per-completion GRPO advantage.

A NaN score ("not applicable") is no event: it is left out of its group's mean and
std, and a row with no event left gets advantage 0
(``rlx.reward.applicable_rows``).
"""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.plugins.shared.policy_gradient import PolicyGradient, aggregate, clipped_objective  # noqa: F401  (re-exported)
from rlx.reward import reward_events

EPS = 1e-4


def group_advantages(rewards: torch.Tensor, reward_mask: torch.Tensor, group: torch.Tensor,
                     scale_rewards: str = "group") -> tuple[torch.Tensor, float]:
    """``[B, T]`` advantages and the share of groups whose rewards are all equal."""
    B, T = rewards.shape
    reward_mask = reward_events(rewards, reward_mask)
    gid = group.view(B, 1).expand(B, T)[reward_mask]
    vals = rewards[reward_mask].double()
    n_groups = int(group.max()) + 1 if B else 0
    count = torch.bincount(gid, minlength=n_groups).double()
    mean = torch.zeros(n_groups, dtype=torch.double).index_add_(0, gid, vals) / count.clamp(min=1)
    dev = vals - mean[gid]
    var = torch.zeros(n_groups, dtype=torch.double).index_add_(0, gid, dev**2) / (count - 1).clamp(min=1)
    std = var.sqrt()
    present = count > 0
    zero_adv_frac = float(((std < 1e-8) & present).sum() / present.sum().clamp(min=1))
    if scale_rewards == "group":
        dev = dev / (std[gid] + EPS)
    elif scale_rewards == "batch":
        dev = dev / (vals.std() + EPS if vals.numel() > 1 else 1.0)
    events = torch.zeros(B, T, dtype=torch.double)
    events[reward_mask] = dev
    # sum of normalized events at positions >= t (reverse cumulative sum)
    adv = events.flip(-1).cumsum(-1).flip(-1)
    return adv.to(rewards.dtype), zero_adv_frac


class GRPO(PolicyGradient):
    """Advantages: each reward event normalized within its prompt's group."""

    def advantages(self, rewards: torch.Tensor, placed: torch.Tensor, group: torch.Tensor,
                   batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        adv, zero_frac = group_advantages(rewards, placed, group, self.config.scale_rewards)
        return adv, {"grpo/zero_adv_frac": zero_frac}
