from pydantic import Field

from rlx.reward import RewardConfig


class VerifierConfig(RewardConfig):
    model_config = {"extra": "forbid"}
    correct: float = Field(1.0, description="Reward for a correct final answer.")
    incorrect: float = Field(0.0, description="Reward for a wrong or missing final answer.")
