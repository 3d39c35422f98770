from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GymConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field("CartPole-v1", description="A registered gymnasium environment id.")
    num_envs: int = Field(8, ge=1, description="Copies stepped in lockstep.")
    vectorization: Literal["sync", "async"] = Field(
        "sync", description="sync: one process (fast for cheap envs); async: one subprocess per copy.")
    eval_episodes: int = Field(10, ge=1, description="Episodes per evaluation of the deterministic policy.")
