"""Settings of the ``rm`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    head: Literal["implicit", "classifier"] = Field(
        "implicit", description="implicit: the reward is beta x the summed log-ratio of the trained LM to its frozen "
                                "start (DPO's implicit reward), saved with its reference; classifier: a one-label "
                                "sequence-classification head on the policy's backbone (TRL's RewardTrainer model).")
    beta: float = Field(0.1, gt=0, description="implicit: the scale of the log-ratio.")
    center_weight: float = Field(0.01, ge=0, description="Weight of the mean squared score (chosen and rejected): "
                                                         "Bradley-Terry fixes only differences, this keeps scores "
                                                         "near 0 (TRL's center_rewards_coefficient).")
    margin: float = Field(0.0, ge=0, description="Required score margin: -log sigmoid(s_chosen - s_rejected - "
                                                  "margin) (Llama 2's margin loss, one value for every pair).")
