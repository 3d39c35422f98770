"""Objective ``reinforce``: REINFORCE++ (batch-normalized returns, per-token KL penalty)."""

from rlx.hookspecs import hookimpl
from rlx.plugins.reinforce.config import ReinforceConfig


@hookimpl
def rlx_register_objectives(register):
    register("reinforce", "rlx.plugins.reinforce.objective:Reinforce", config=ReinforceConfig, accepts=("text",),
             data="rollouts", headline=("reward/mean", "kl/ref"),
             description="REINFORCE++: batch-normalized reward-to-go, per-token KL penalty, no critic")
