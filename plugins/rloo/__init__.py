"""Objective ``rloo``: REINFORCE with a leave-one-out baseline."""

from rlx.hookspecs import hookimpl
from rlx.plugins.rloo.config import RLOOConfig


@hookimpl
def rlx_register_objectives(register):
    register("rloo", "rlx.plugins.rloo.objective:RLOO", config=RLOOConfig, accepts=("text",), data="rollouts",
             headline=("reward/mean", "kl/ref"),
             description="RLOO: leave-one-out baseline over k samples per prompt, KL penalty in the reward")
