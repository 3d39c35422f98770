"""Settings shared by the group-sampling policy-gradient objectives (grpo, rloo, reinforce;
``rlx.plugins.shared.policy_gradient``), which their configs inherit; torch-free, so
registering those objectives stays cheap."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# the token aggregations of ``policy_gradient.aggregate``; each family picks its default
LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


class PolicyGradientConfig(BaseModel):
    """The clipped surrogate's settings. A family's config inherits them and adds its own
    (``num_generations``, ``beta``, ``loss_type``, ...): one declaration, one description."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(0.2, ge=0, description="Lower clipping range of the importance ratio.")
    epsilon_high: float | None = Field(None, ge=0, description="Upper clipping range (DAPO clip-higher); default epsilon.")
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="Ratio per token (GRPO) or one length-normalized ratio per sequence (GSPO).")
    num_iterations: int = Field(1, ge=1, description="Passes over each generated batch (mu); old log-probs are cached.")
    num_minibatches: int = Field(1, ge=1, description="Optimizer steps per pass, each on a slice of the batch.")
