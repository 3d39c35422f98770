"""Objective ``grpo``: Group Relative Policy Optimization (and its Dr. GRPO, DAPO, GSPO variants)."""

from rlx.hookspecs import hookimpl
from rlx.plugins.grpo.config import GRPOConfig


@hookimpl
def rlx_register_objectives(register):
    register("grpo", "rlx.plugins.grpo.objective:GRPO", config=GRPOConfig, accepts=("text",),
             data="rollouts", headline=("reward/mean", "kl/ref"),
             default=True,  # what `rlx run` trains when no --objective is given
             description="Group-relative policy optimization with outcome or process rewards")
