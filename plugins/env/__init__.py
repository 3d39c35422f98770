"""Reward ``env``: the environment's own reward, per step."""

from rlx.hookspecs import hookimpl
from rlx.reward import RewardConfig


@hookimpl
def rlx_register_rewards(register):
    register("env", "rlx.plugins.env.reward:EnvReward", config=RewardConfig, granularity="process", kinds=("control",),
             description="The environment's own per-step reward (default for control environments)")
