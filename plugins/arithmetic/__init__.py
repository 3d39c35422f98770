"""The ``arithmetic`` environment: registration only, so listing plugins stays cheap."""

from rlx.hookspecs import hookimpl
from rlx.plugins.arithmetic.config import ArithmeticConfig


@hookimpl
def rlx_register_environments(register):
    register("arithmetic", "rlx.plugins.arithmetic.env:ArithmeticEnv", config=ArithmeticConfig,
             kind="text", default_reward="verifier",
             description="Procedural multi-step arithmetic (+ - *) with gold steps and a step checker")
