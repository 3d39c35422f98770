from pydantic import Field

from rlx.reward import RewardConfig


class LengthConfig(RewardConfig):
    model_config = {"extra": "forbid"}
    target: int | None = Field(None, ge=1, description="Shape toward this many completion tokens: the reward is "
                                                       "-|length - target| / target. None: a penalty per token.")
    per_token: float = Field(0.01, ge=0, description="Without a target: the reward is -per_token x length.")
