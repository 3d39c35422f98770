"""Reward ``verifier``: outcome reward, 1 when the final answer matches the gold answer."""

from rlx.hookspecs import hookimpl
from rlx.plugins.verifier.config import VerifierConfig


@hookimpl
def rlx_register_rewards(register):
    register("verifier", "rlx.plugins.verifier.reward:Verifier", config=VerifierConfig,
             granularity="outcome", kinds=("text",), description="1 if the final answer matches the gold answer, else 0")
