"""``gradient-bandit``: REINFORCE on arm pulls with a baseline (Sutton & Barto 2.8).

loss = -mean((r - b) * log pi(a)) - entropy_coef * H(pi). The baseline ``b`` is a running
mean of past batches' mean payout, this batch's mean, or 0. Rows whose reward is NaN
("not applicable") are left out of the baseline and the loss.
"""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.distributed import sum_over_ranks
from rlx.objective import Objective
from rlx.policy import Policy


class GradientBandit(Objective):

    def __init__(self, config: Any, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.running: float | None = None  # the running baseline; None until the first batch

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        on = batch["reward_mask"].any(-1)  # [B]: rows with a reward
        payout = torch.where(batch["reward_mask"], batch["rewards"], 0.0).sum(-1)
        # the mean over every process's batch, so all processes share one baseline
        n = sum_over_ranks(float(on.sum()))
        mean = sum_over_ranks(float(payout[on].sum())) / n if n else 0.0
        mode = self.config.baseline
        if mode == "none":
            base = 0.0
        elif mode == "batch" or self.running is None:  # a running mean starts at the first batch's
            base = mean
        else:
            base = self.running
        if mode == "running" and n:
            decay = self.config.baseline_decay
            self.running = mean if self.running is None else decay * self.running + (1 - decay) * mean
        batch["advantages"] = torch.where(on, payout - base, 0.0)[:, None]
        batch["applicable"] = on[:, None].float()
        return {"objective/baseline": base}

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp, ent = policy.log_probs(batch, entropy=True)  # k terms: cheap enough to always log
        weight = batch["mask"] * batch["applicable"]
        count = weight.sum().clamp(min=1.0)
        policy_loss = -(batch["advantages"] * logp * weight).sum() / count
        entropy = (ent * weight).sum() / count
        loss = policy_loss - self.config.entropy_coef * entropy
        return loss, {"loss/policy": policy_loss.detach(), "policy/entropy": entropy.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"running": self.running}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running = state.get("running")
