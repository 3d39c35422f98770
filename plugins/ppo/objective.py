"""PPO (Schulman et al. 2017) with GAE (Schulman et al. 2016), read top to bottom.

One objective, two kinds of batch, the same loss:

- control: ``[N, T]`` = N environment copies x T steps. ``prepare`` turns the rewards and
  the values recorded while acting into advantages and returns; ``minibatches``
  shuffles the N*T transitions for each epoch.
- text: ``[B, T]`` = B completions x T tokens; a token is an action, its state the
  prompt plus the tokens before it. ``prepare`` scores the batch once with the policy
  (old log-probs and values from its value head) and the reference; the per-token KL to
  the reference is a penalty on the token's reward (Ziegler et al. 2019), placed with
  the task rewards at their positions (a ``prm`` step reward on the step's last
  token), and GAE runs over tokens. ``minibatches`` shuffles the completions.

``loss`` is the clipped surrogate + value loss - entropy bonus, as masked means over
the actions (every control step, the completion tokens of a text batch).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from rlx.batch import Batch
from rlx.objective import Objective
from rlx.policy import Policy

from .surrogate import ppo_loss

_TEXT_KEYS = ("input_ids", "attention_mask", "actions", "mask", "old_logp", "values", "advantages", "returns")
_CONTROL_KEYS = ("obs", "actions", "old_logp", "values", "advantages", "returns")


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, next_value: torch.Tensor,
        gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[N, T]``. ``dones[:, t]`` says the episode ended at step t,
    so step t+1's value is not bootstrapped; ``next_value`` is V of the observation after
    the last step."""
    N, T = rewards.shape
    live = 1.0 - dones.float()
    v_next = torch.cat([values[:, 1:], next_value.unsqueeze(1)], 1)
    # every TD error at once; only the backward recursion is a loop over steps
    deltas = (rewards + gamma * v_next * live - values).unbind(1)
    decays = (gamma * lam * live).unbind(1)
    last = torch.zeros(N, dtype=rewards.dtype, device=rewards.device)
    out: list[torch.Tensor] = [last] * T
    for t in reversed(range(T)):
        last = torch.addcmul(deltas[t], decays[t], last)
        out[t] = last
    adv = torch.stack(out, 1)
    return adv, adv + values


def token_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
              lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over completion tokens ``[B, T]``: the episode ends after the last token of
    ``mask`` (nothing is bootstrapped past it); padding gets zero advantage and return."""
    rewards, values = rewards * mask, values * mask
    adv, _ = gae(rewards, values, torch.zeros_like(mask), torch.zeros_like(mask[:, 0]), gamma, lam)
    adv = adv * mask
    return adv, (adv + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x.mean() if mask is None else (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries."""
    if mask is None:
        return (x - x.mean()) / (x.std() + 1e-8)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = x.numel() if mask is None else float(mask.sum())
    var = var * n / max(n - 1, 1)  # unbiased, as torch.std
    out = (x - mean) / (var.sqrt() + 1e-8)
    return out if mask is None else out * mask


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


class AdaptiveKL:
    """The KL coefficient of Ziegler et al. (2019): nudged each batch so the measured
    KL to the reference tracks ``target``; fixed when ``target`` is None."""

    def __init__(self, coef: float, target: float | None, horizon: int):
        self.coef, self.target, self.horizon = coef, target, horizon

    def update(self, kl: float, n: int) -> None:
        if self.target is None or not math.isfinite(kl):
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n / self.horizon


class PPO(Objective):

    def __init__(self, config: Any, *, env_kind: str = "control", **kwargs: Any):
        super().__init__(config)
        self.text = env_kind == "text"
        self.progress = 0.0
        self._stop_epochs = False
        self._last_epoch = True
        self._whitened = False  # the minibatches carry advantages normalized once for the update
        self.kl = AdaptiveKL(config.kl_coef, config.kl_target, config.kl_horizon)

    @property
    def rollout_length(self) -> int:
        return self.config.n_steps

    @property
    def needs_reference(self) -> bool:
        return self.text and self.config.kl_coef > 0

    def setup(self, policy: Policy) -> None:
        if self.text:
            policy.add_value_head()

    def begin_step(self, step: int, total_steps: int) -> None:
        self.progress = (step - 1) / max(total_steps, 1)

    @property
    def clip(self) -> float:
        c = self.config
        return c.clip_range * (1.0 - self.progress) if c.clip_schedule == "linear" else c.clip_range

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        return self._prepare_text(batch, policy, reference) if self.text else self._prepare_control(batch)

    def _prepare_control(self, batch: Batch) -> dict[str, float]:
        c = self.config
        # a truncated episode still had a future: its last reward carries gamma * V(final obs)
        rewards = batch["rewards"] + c.gamma * batch["trunc_value"]
        adv, ret = gae(rewards, batch["values"], batch["dones"], batch["next_value"], c.gamma, c.gae_lambda)
        batch["advantages"], batch["returns"] = adv, ret
        return {"ppo/explained_variance": explained_variance(batch["values"].flatten(), ret.flatten()),
                "ppo/clip_range": self.clip}

    @torch.no_grad()
    def _prepare_text(self, batch: Batch, policy: Any, reference: Any) -> dict[str, float]:
        c = self.config
        mask = batch["mask"]
        old_logp, _, values = policy.evaluate_actions(batch)
        rewards = batch["rewards"]
        metrics: dict[str, float] = {}
        coef = self.kl.coef
        if reference is not None:
            ref_logp, _ = reference.log_probs(batch)
            kl = (old_logp - ref_logp) * mask  # k1 per token: its expectation is the sequence KL
            rewards = rewards - coef * kl
            seq_kl = float(kl.sum(-1).mean())
            self.kl.update(seq_kl, len(batch))
            metrics.update({"kl/ref": seq_kl, "ppo/kl_coef": coef})
        adv, ret = token_gae(rewards, values, mask, c.gamma, c.gae_lambda)
        batch["old_logp"], batch["values"], batch["returns"] = old_logp, values * mask, ret
        batch["advantages"] = whiten(adv, mask) if c.normalize_advantages else adv
        on = mask.bool()
        metrics.update({"ppo/explained_variance": explained_variance(values[on], ret[on]),
                        "ppo/value_mean": float(values[on].mean()), "ppo/clip_range": self.clip})
        return metrics

    def minibatches(self, batch: Batch) -> Iterator[Batch]:
        if self.text:  # whole completions: a token's advantage depends on the rest of its sequence
            flat = Batch({k: batch[k] for k in _TEXT_KEYS})
        else:
            N, T = batch["actions"].shape[:2]
            flat = Batch({k: batch[k].reshape(N * T, 1, *batch[k].shape[2:]) for k in _CONTROL_KEYS})
        self._stop_epochs = False
        c = self.config
        # one full-batch minibatch: its advantages are normalized the same way every epoch
        self._whitened = (c.num_minibatches == 1 and c.normalize_advantages and not self.text
                          and flat["advantages"].numel() > 1)
        if self._whitened:
            flat["advantages"] = whiten(flat["advantages"], None)
        for epoch in range(c.epochs):
            self._last_epoch = epoch == c.epochs - 1
            if c.num_minibatches == 1:  # a full-batch gradient does not depend on the order
                yield flat
            else:
                order = torch.randperm(len(flat), device=batch["actions"].device)
                for mb in flat.select(order).split(c.num_minibatches):
                    yield mb
                    if self._stop_epochs:
                        return
            if self._stop_epochs:
                return

    def loss(self, policy: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.config
        mask = batch["mask"] if self.text else None  # every control step counts: skip the masking work
        # without an entropy bonus the entropies are only logged: no gradient through them
        logp, entropy, value = policy.evaluate_actions(batch, entropy=c.ent_coef > 0)
        adv = batch["advantages"]
        # text advantages were whitened over the whole batch in prepare
        if c.normalize_advantages and not self.text and not self._whitened and adv.numel() > 1:
            adv = whiten(adv, mask)
        eps = self.clip
        # max(-A r, -A clip(r, 1 -+ eps)) and 0.5 (V - R)^2 (or its clipped max), as means
        loss, pg, v_loss, ratio = ppo_loss(logp, value, batch["old_logp"], adv, batch["returns"], batch["values"],
                                           mask, eps, c.clip_value, c.vf_coef)
        ent = masked_mean(entropy, mask)
        if c.ent_coef > 0:
            loss = loss - c.ent_coef * ent
        metrics: dict[str, Any] = {"loss/policy": pg, "loss/value": v_loss,
                                   "policy/entropy": ent.detach()}
        # the diagnostics cost as much as the loss; they are needed on the last epoch (what
        # is logged) or for the target-KL stop
        if self._last_epoch or c.target_kl is not None:
            with torch.no_grad():
                approx_kl = masked_mean((ratio - 1) - ratio.log(), mask)  # k3: unbiased, >= 0
                metrics["policy/approx_kl"] = approx_kl
                metrics["policy/clip_frac"] = masked_mean(((ratio - 1).abs() > eps).float(), mask)
            if c.target_kl is not None and float(approx_kl) > c.target_kl:
                self._stop_epochs = True
        # 0-d tensors: the loop sums them over minibatches and reads them once per update
        return loss, metrics

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl.coef = state.get("kl_coef", self.kl.coef)
