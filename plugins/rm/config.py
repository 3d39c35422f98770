"""Settings of the ``rm`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    center_weight: float = Field(0.01, ge=0, description="Weight of the mean squared score (chosen and rejected): "
                                                         "Bradley-Terry fixes only differences, this keeps scores "
                                                         "near 0 (TRL's center_rewards_coefficient).")
    margin: float = Field(0.0, ge=0, description="Required score margin: -log sigmoid(s_chosen - s_rejected - "
                                                  "margin) (Llama 2's margin loss, one value for every pair).")
