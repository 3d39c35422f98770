"""GRPO, read top to bottom: group-normalized advantages, then the clipped surrogate.

Advantages treat every reward as an event at a token: an outcome reward is one event at
the last token, a process reward one event per step. Events are normalized within their
prompt's group, and a token's advantage is the sum of normalized events from its
position on (process supervision, DeepSeekMath sec. 4.1.3); with one outcome event per
completion this is the usual per-completion GRPO advantage.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from rlx.batch import Batch
from rlx.distributed import gather_rows, rank_world, sum_over_ranks
from rlx.objective import Objective
from rlx.policy import Policy

EPS = 1e-4


def group_advantages(rewards: torch.Tensor, reward_mask: torch.Tensor, group: torch.Tensor,
                     scale_rewards: str = "group") -> tuple[torch.Tensor, float]:
    """``[B, T]`` advantages and the share of groups whose rewards are all equal."""
    B, T = rewards.shape
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


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      *, epsilon: float, epsilon_high: float, level: str = "token",
                      ref_logp: torch.Tensor | None = None, beta: float = 0.0
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss ``[B, T]`` (before aggregation) and per-token diagnostics."""
    log_ratio = logp - old_logp
    if level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1)).unsqueeze(-1)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    info = {"clipped": (((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))).float()}
    if ref_logp is not None and beta > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # k3: unbiased, always >= 0
        per_token = per_token + beta * kl
        info["kl"] = kl
    return per_token, info


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, *, max_len: int,
              num_items: float) -> torch.Tensor:
    """Reduce the per-token loss as ``loss_type`` says (see GRPOConfig.loss_type)."""
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.shape[0] * max_len)
    if loss_type == "dapo":
        return (per_token * mask).sum() / max(num_items, 1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")


class GRPO(Objective):
    data = "rollouts"

    def __init__(self, config: Any, *, max_new_tokens: int = 48, **kwargs: Any):
        super().__init__(config)
        self.max_len = max_new_tokens
        self.eps_high = config.epsilon if config.epsilon_high is None else config.epsilon_high

    @property
    def group_size(self) -> int:
        return self.config.num_generations

    @property
    def needs_reference(self) -> bool:
        return self.config.beta > 0

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            # one pass per batch is exactly on-policy, so the current log-probs stand in
            if cfg.num_iterations > 1 or cfg.num_minibatches > 1:
                batch["old_logp"] = policy.log_probs(batch)[0].detach()
            if reference is not None:
                batch["ref_logp"] = reference.log_probs(batch)[0]
        # normalize over the global batch: every rank's rewards, then keep this rank's rows
        rank, world = rank_world()
        B, T = batch["mask"].shape
        rewards, placed, group = (gather_rows(batch[k]) for k in ("rewards", "reward_mask", "group"))
        adv, zero_frac = group_advantages(rewards.cpu(), placed.cpu(), (group - group.min()).cpu(), cfg.scale_rewards)
        batch["advantages"] = adv[rank * B:(rank + 1) * B, :T].to(batch["mask"].device)
        # DDP averages gradients over ranks, so dapo's global token count is shared out per rank
        self._num_items = sum_over_ranks(float(batch["mask"].sum())) / world
        return {"grpo/zero_adv_frac": zero_frac}

    def minibatches(self, batch: Batch) -> Iterator[Batch]:
        for _ in range(self.config.num_iterations):
            yield from batch.split(self.config.num_minibatches)

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logp, entropy = policy.log_probs(batch, entropy=True)
        old = batch["old_logp"] if "old_logp" in batch else logp.detach()
        mask = batch["mask"]
        per_token, info = clipped_objective(logp, old, batch["advantages"], mask, epsilon=cfg.epsilon,
                                            epsilon_high=self.eps_high, level=cfg.importance_sampling_level,
                                            ref_logp=batch.get("ref_logp"), beta=cfg.beta)
        loss = aggregate(per_token, mask, cfg.loss_type, max_len=self.max_len, num_items=self._num_items)
        n = mask.sum().clamp(min=1)
        metrics = {"loss/policy": float(loss.detach()),
                   "policy/clip_frac": float((info["clipped"].expand_as(mask) * mask).sum() / n)}
        if entropy is not None:
            metrics["policy/entropy"] = float((entropy * mask).sum() / n)
        if "kl" in info:
            metrics["kl/ref"] = float((info["kl"].detach() * mask).sum() / n)
        return loss, metrics
