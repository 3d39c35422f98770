"""Settings shared by the group-sampling policy-gradient objectives (``rlx.pg_losses``);
torch-free, so registering those objectives stays cheap."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PolicyGradientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(0.2, ge=0, description="Clip range of the importance ratio (lower).")
    epsilon_high: float | None = Field(None, ge=0, description="Upper clip range; default epsilon.")
    importance_sampling_level: Literal["token", "sequence"] = Field("token", description="Ratio per token or per "
                                                                                         "sequence.")
    num_iterations: int = Field(1, ge=1, description="Passes over each generated batch.")
    num_minibatches: int = Field(1, ge=1, description="Optimizer steps per pass.")
