"""Reward ``orm``: a learned outcome reward model (sequence classification) loaded from a directory."""

from rlx.hookspecs import hookimpl
from rlx.plugins.orm.config import ORMConfig


@hookimpl
def rlx_register_rewards(register):
    register("orm", "rlx.plugins.orm.reward:ORM", config=ORMConfig, granularity="outcome", kinds=("text",),
             description="Learned outcome reward model from a folder (what --objective rm saves), batched")
