from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GymConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field("CartPole-v1", description="A registered gymnasium environment id.")
    num_envs: int = Field(8, ge=1, description="Copies stepped in lockstep.")
    vectorization: Literal["sync", "async"] = Field(
        "sync", description="sync: one process (fast for cheap envs); async: one subprocess per copy.")
    normalize_obs: bool = Field(False, description="Scale observations by running mean and std (frozen in evaluation).")
    normalize_reward: bool = Field(False, description="Scale rewards by the running std of the discounted return "
                                                      "(returns in episode/ and eval/ metrics stay raw).")
    clip_obs: float = Field(10.0, gt=0, description="Clip normalized observations to [-clip_obs, clip_obs].")
    clip_reward: float = Field(10.0, gt=0, description="Clip normalized rewards to [-clip_reward, clip_reward].")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount of the return whose std scales rewards.")
    eval_episodes: int = Field(10, ge=1, description="Episodes per evaluation of the deterministic policy.")
