from typing import Literal

from pydantic import Field

from rlx.plugins.shared.policy_gradient_config import LossType, PolicyGradientConfig


class GRPOConfig(PolicyGradientConfig):
    """grpo's settings; the clipped surrogate's (epsilon, epsilon_high,
    importance_sampling_level, num_iterations, num_minibatches) come from PolicyGradientConfig."""

    # sampling
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group size G).")
    # advantages
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide centred rewards by the group's std, the batch's std, or not at all (Dr. GRPO).")
    # loss
    loss_type: LossType = Field(
        "grpo", description="grpo: mean per sequence then over sequences; bnpo: mean over the minibatch's tokens; "
                            "dr_grpo: sum / (sequences x max_new_tokens); dapo: sum / tokens of the optimizer step's "
                            "minibatch (every process's, / processes).")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference (k3 estimator); 0 loads no reference.")
    # TRL's name and meaning; rlx keeps False so runs made before the option reproduce (plugins/grpo/README.md)
    use_bias_correction_kl: bool = Field(
        False, description="Multiply the k3 KL term by the importance ratio (TRL's use_bias_correction_kl, default "
                           "True there): its gradient becomes the unbiased reverse-KL gradient. Only with beta > 0.")
