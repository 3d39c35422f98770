from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GRPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # sampling
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group size G).")
    # advantages
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide centred rewards by the group's std, the batch's std, or not at all (Dr. GRPO).")
    # loss
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "grpo", description="grpo: mean per sequence then over sequences; bnpo: mean over the minibatch's tokens; "
                            "dr_grpo: sum / (sequences x max_new_tokens); dapo: sum / tokens of the optimizer step's "
                            "minibatch (every process's, / processes).")
    epsilon: float = Field(0.2, ge=0, description="Lower clipping range of the importance ratio.")
    epsilon_high: float | None = Field(None, ge=0, description="Upper clipping range (DAPO clip-higher); default epsilon.")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference (k3 estimator); 0 loads no reference.")
    # TRL's name and meaning; rlx keeps False so runs made before the option reproduce (plugins/grpo/README.md)
    use_bias_correction_kl: bool = Field(
        False, description="Multiply the k3 KL term by the importance ratio (TRL's use_bias_correction_kl, default "
                           "True there): its gradient becomes the unbiased reverse-KL gradient. Only with beta > 0.")
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="Ratio per token (GRPO) or one length-normalized ratio per sequence (GSPO).")
    # schedule
    num_iterations: int = Field(1, ge=1, description="Passes over each generated batch (mu); old log-probs are cached.")
    num_minibatches: int = Field(1, ge=1, description="Optimizer steps per pass, each on a slice of the batch.")
