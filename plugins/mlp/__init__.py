"""Policy ``mlp``: actor-critic MLPs for classic control."""

from rlx.hookspecs import hookimpl
from rlx.plugins.mlp.config import MLPConfig


@hookimpl
def rlx_register_policies(register):
    register("mlp", "rlx.plugins.mlp.policy:MLPPolicy", config=MLPConfig, interface="control",
             description="Actor-critic MLP: categorical (discrete) or Gaussian (continuous) actions")
