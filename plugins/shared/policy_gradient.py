"""The clipped policy-gradient surrogate for LM policies and the objective skeleton the
group-sampling families share (grpo, rloo, reinforce): sample ``group_size`` completions
per prompt, turn rewards into per-token advantages (the one thing each family defines),
then minimize the clipped surrogate, optionally with a k3 KL term to the reference.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from rlx.batch import Batch
from rlx.distributed import gather_rows, rank_world, sum_over_ranks
from rlx.objective import Objective
from rlx.policy import Policy


def clipped_objective(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                      *, epsilon: float, epsilon_high: float, level: str = "token",
                      ref_logp: torch.Tensor | None = None, beta: float = 0.0,
                      bias_correction_kl: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss ``[B, T]`` (before aggregation) and per-token diagnostics.

    ``bias_correction_kl`` weights the k3 term by the importance ratio ``r`` (per token, or
    the sequence's ratio for GSPO), as TRL's ``use_bias_correction_kl``: the gradient of
    ``r * k3`` at ``r = 1`` is ``(logp - ref_logp) * grad logp``, the unbiased reverse-KL
    gradient, where plain k3's is ``(1 - pi_ref / pi) * grad logp``, whose expectation is
    the gradient of the forward KL(pi_ref || pi). ``info["kl"]`` is the term that enters
    the loss (weighted when corrected, as TRL logs it)."""
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
        if bias_correction_kl:
            kl = kl * ratio  # ratio is not detached: its gradient is the point (see the docstring)
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


class PolicyGradient(Objective):
    """Config fields it reads: ``num_generations``, ``epsilon``, ``epsilon_high``, ``beta``
    (k3 KL in the loss), ``importance_sampling_level``, ``num_iterations``,
    ``num_minibatches``, ``loss_type``, and ``use_bias_correction_kl`` where the config has
    it (only families with the KL in the loss do). Subclasses define ``advantages``."""

    kl_in_loss = True  # False: the family puts its KL penalty into the rewards instead

    def __init__(self, config: Any, *, max_new_tokens: int = 48, **kwargs: Any):
        super().__init__(config)
        self.max_len = max_new_tokens
        self.eps_high = config.epsilon if config.epsilon_high is None else config.epsilon_high

    @property
    def needs_reference(self) -> bool:
        return self.config.beta > 0

    def advantages(self, rewards: torch.Tensor, placed: torch.Tensor, group: torch.Tensor,
                   batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-token advantages ``[B, T]`` for the global batch (every rank's rows):
        ``rewards`` with ``placed`` marking where reward events sit (see ``reward_events``
        and ``applicable_rows`` for NaN), ``group`` the prompt index of each row from 0."""
        raise NotImplementedError

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            # one pass per batch is exactly on-policy, so the current log-probs stand in
            if cfg.num_iterations > 1 or cfg.num_minibatches > 1 or not self.kl_in_loss:
                batch["old_logp"] = policy.log_probs(batch)[0].detach()
            if reference is not None:
                batch["ref_logp"] = reference.log_probs(batch)[0]
        # over the global batch: every rank's rows, then keep this rank's
        rank, _ = rank_world()
        B, T = batch["mask"].shape
        keys = ["rewards", "reward_mask", "group", "mask"]
        if not self.kl_in_loss:  # the family's advantages need the per-token KL
            keys += [k for k in ("old_logp", "ref_logp") if k in batch]
        rows = {k: gather_rows(batch[k]).cpu() for k in keys}
        full = Batch(rows)
        adv, metrics = self.advantages(rows["rewards"], rows["reward_mask"], rows["group"] - rows["group"].min(), full)
        batch["advantages"] = adv[rank * B:(rank + 1) * B, :T].to(batch["mask"].device)
        return metrics

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
                                            ref_logp=batch.get("ref_logp") if self.kl_in_loss else None,
                                            beta=cfg.beta,
                                            bias_correction_kl=getattr(cfg, "use_bias_correction_kl", False))
        num_items = 1.0
        if cfg.loss_type == "dapo":
            # Every minibatch is its own optimizer step (no accumulation), so dapo divides by
            # this step's tokens, as TRL divides by one optimizer step's tokens. Summed over
            # ranks and shared out per rank because DDP averages gradients over ranks. Every
            # rank calls loss() once per minibatch, so the collective lines up.
            num_items = sum_over_ranks(float(mask.sum())) / rank_world()[1]
        loss = aggregate(per_token, mask, cfg.loss_type, max_len=self.max_len, num_items=num_items)
        n = mask.sum().clamp(min=1)
        metrics = {"loss/policy": float(loss.detach()),
                   "policy/clip_frac": float((info["clipped"].expand_as(mask) * mask).sum() / n)}
        if entropy is not None:
            metrics["policy/entropy"] = float((entropy * mask).sum() / n)
        if "kl" in info:
            metrics["kl/ref"] = float((info["kl"].detach() * mask).sum() / n)
        return loss, metrics
