from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PPOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # rollout
    n_steps: int = Field(32, ge=1, description="Steps per environment copy per update (batch = num_envs x n_steps).")
    gamma: float = Field(0.98, ge=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(0.8, ge=0, le=1, description="GAE lambda (1: Monte Carlo returns, 0: one-step TD).")
    # optimisation
    epochs: int = Field(20, ge=1, description="Passes over each batch.")
    num_minibatches: int = Field(1, ge=1, description="Minibatches per pass.")
    clip_range: float = Field(0.2, gt=0, description="Clip range of the probability ratio.")
    clip_schedule: Literal["constant", "linear"] = Field("linear", description="Anneal clip_range to 0 over the run.")
    clip_value: float | None = Field(None, gt=0, description="Clip value updates to this range around the old value "
                                                              "(None: no value clipping).")
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient.")
    vf_coef: float = Field(0.5, ge=0, description="Value loss coefficient.")
    normalize_advantages: bool = Field(True, description="Normalize advantages per minibatch.")
    # text (LM) policies: KL to the reference as a per-token reward penalty
    kl_coef: float = Field(0.05, ge=0, description="Text: coefficient of the per-token KL penalty (0: no reference "
                                                   "model at all).")
    kl_target: float | None = Field(None, gt=0, description="Text: adapt kl_coef so the sequence KL tracks this "
                                                            "(Ziegler et al. 2019); None keeps it fixed.")
    kl_horizon: int = Field(10_000, ge=1, description="Text: samples over which the adaptive coefficient moves by "
                                                      "at most 20%.")
    target_kl: float | None = Field(None, gt=0, description="Stop the epochs of an update once approx KL exceeds this.")
