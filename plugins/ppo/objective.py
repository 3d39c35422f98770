"""PPO (Schulman et al. 2017) with GAE (Schulman et al. 2016), read top to bottom.

The batch is ``[N, T]``: N environment copies, T steps each. ``prepare`` turns rewards
and values into advantages and returns; ``minibatches`` shuffles the N*T samples for
each epoch; ``loss`` is the clipped surrogate + value loss - entropy bonus.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from rlx.batch import Batch
from rlx.objective import Objective
from rlx.policy import Policy


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[N, T]``. ``dones[:, t]`` says the episode ended at step t,
    so step t+1's value is not bootstrapped; ``next_value`` is V of the observation after
    the last step."""
    N, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(N, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        v_next = next_value if t == T - 1 else values[:, t + 1]
        live = 1.0 - dones[:, t].float()
        delta = rewards[:, t] + gamma * v_next * live - values[:, t]
        last = delta + gamma * lam * live * last
        adv[:, t] = last
    return adv, adv + values


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


class PPO(Objective):
    data = "rollouts"

    def __init__(self, config: Any, **kwargs: Any):
        super().__init__(config)
        self.progress = 0.0
        self._stop_epochs = False

    @property
    def rollout_length(self) -> int:
        return self.config.n_steps

    def on_step(self, step: int, total: int) -> None:
        self.progress = (step - 1) / max(total, 1)

    @property
    def clip(self) -> float:
        c = self.config
        return c.clip_range * (1.0 - self.progress) if c.clip_schedule == "linear" else c.clip_range

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        c = self.config
        # a truncated episode still had a future: its last reward carries gamma * V(final obs)
        rewards = batch["rewards"] + c.gamma * batch["trunc_value"]
        adv, ret = gae(rewards, batch["values"], batch["dones"], batch["next_value"], c.gamma, c.gae_lambda)
        batch["advantages"], batch["returns"] = adv, ret
        return {"ppo/explained_variance": explained_variance(batch["values"].flatten(), ret.flatten()),
                "ppo/clip_range": self.clip}

    def minibatches(self, batch: Batch) -> Iterator[Batch]:
        N, T = batch["actions"].shape[:2]
        keys = ("obs", "actions", "old_logp", "values", "advantages", "returns")
        flat = Batch({k: batch[k].reshape(N * T, 1, *batch[k].shape[2:]) for k in keys})
        self._stop_epochs = False
        for _ in range(self.config.epochs):
            order = torch.randperm(N * T, device=batch["actions"].device)
            for mb in flat.select(order).split(self.config.num_minibatches):
                yield mb
                if self._stop_epochs:
                    return

    def loss(self, policy: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        logp, entropy, value = policy.evaluate_actions(batch)
        log_ratio = logp - batch["old_logp"]
        ratio = log_ratio.exp()
        adv = batch["advantages"]
        if c.normalize_advantages and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        eps = self.clip
        pg = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps)).mean()
        ret, old_v = batch["returns"], batch["values"]
        v_loss = (value - ret) ** 2
        if c.clip_value is not None:
            clipped = old_v + torch.clamp(value - old_v, -c.clip_value, c.clip_value)
            v_loss = torch.max(v_loss, (clipped - ret) ** 2)
        v_loss = 0.5 * v_loss.mean()
        ent = entropy.mean()
        loss = pg - c.ent_coef * ent + c.vf_coef * v_loss
        with torch.no_grad():
            approx_kl = float(((ratio - 1) - log_ratio).mean())  # k3: unbiased, >= 0
            clip_frac = float(((ratio - 1).abs() > eps).float().mean())
        if c.target_kl is not None and approx_kl > c.target_kl:
            self._stop_epochs = True
        return loss, {"loss/policy": float(pg.detach()), "loss/value": float(v_loss.detach()),
                      "policy/entropy": float(ent.detach()), "policy/approx_kl": approx_kl,
                      "policy/clip_frac": clip_frac}
