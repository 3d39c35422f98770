"""Reward ``length``: shaping toward a target completion length, or a per-token penalty."""

from rlx.hookspecs import hookimpl
from rlx.plugins.length.config import LengthConfig


@hookimpl
def rlx_register_rewards(register):
    register("length", "rlx.plugins.length.reward:Length", config=LengthConfig, granularity="outcome", kinds=("text",),
             description="-|length - target| / target, or -per_token x length")
