"""Settings of the ``rloo`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from pydantic import Field

from rlx.plugins.shared.policy_gradient_config import LossType, PolicyGradientConfig


class RLOOConfig(PolicyGradientConfig):
    num_generations: int = Field(4, ge=2, description="Completions per prompt (k); each one's baseline is the mean "
                                                      "reward of the other k-1.")
    beta: float = Field(0.05, ge=0, description="KL penalty: beta x the completion's summed log-ratio to the "
                                                "reference is subtracted from its reward; 0 loads no reference.")
    loss_type: LossType = Field("grpo", description="Token aggregation, as grpo's.")
