"""Settings of the ``reinforce`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from pydantic import Field

from rlx.plugins.shared.policy_gradient_config import LossType, PolicyGradientConfig


class ReinforceConfig(PolicyGradientConfig):
    num_generations: int = Field(4, ge=1, description="Completions per prompt (no group baseline is used).")
    beta: float = Field(0.05, ge=0, description="Per-token KL penalty in the reward: -beta x (log pi - log pi_ref) "
                                                "on every token; 0 loads no reference.")
    loss_type: LossType = Field("bnpo", description="Token aggregation, as grpo's.")
