"""Reward ``prm``: process reward, one score per reasoning step at the step's last token."""

from rlx.hookspecs import hookimpl
from rlx.plugins.prm.config import PRMConfig


@hookimpl
def rlx_register_rewards(register):
    register("prm", "rlx.plugins.prm.reward:PRM", config=PRMConfig, granularity="process", kinds=("text",),
             description="Process reward per step: the environment's step checker, or a learned PRM (backend model)")
