"""Config models of the bandit components (what ``--set env.<field>=`` and friends
accept). Pydantic only: the registration module imports them on every ``rlx`` command."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlx.reward import RewardConfig


class BanditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arms: int = Field(10, ge=2, le=10_000, description="Number of arms k.")
    mean_std: float = Field(1.0, gt=0, description="Arm means are drawn once from N(0, mean_std^2).")
    noise: float = Field(1.0, ge=0, description="Std of a payout around its arm's mean (0: deterministic payouts).")
    means_seed: int | None = Field(None, ge=0, description="Seed of the arm means (default: the run seed); fix it "
                                                          "to give runs of several seeds the same bandit.")


class SoftmaxArmsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init_std: float = Field(0.0, ge=0, description="Std of the initial logits (0: the uniform policy, 1/k per arm).")


class GradientBanditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    baseline: Literal["running", "batch", "none"] = Field(
        "running", description="What is subtracted from each payout: a running mean of past batches' mean "
                               "payout, this batch's mean, or nothing (plain REINFORCE).")
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="Running baseline: b <- decay * b + (1 - decay) * "
                                                               "batch mean, after the batch's advantages are taken.")
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the policy's entropy bonus in the loss.")


class PayoutConfig(RewardConfig):  # ``weight`` only
    model_config = ConfigDict(extra="forbid")
