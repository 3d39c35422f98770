"""Environment ``gym``: any gymnasium environment id, vectorized."""

from rlx.hookspecs import hookimpl
from rlx.plugins.gym.config import GymConfig


@hookimpl
def rlx_register_environments(register):
    register("gym", "rlx.plugins.gym.env:GymEnv", config=GymConfig, kind="control", default_reward="env", task_field="id",
             description="Any gymnasium environment (--set env.id=CartPole-v1), vectorized")
