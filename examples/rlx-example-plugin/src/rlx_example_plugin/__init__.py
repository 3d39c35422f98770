"""rlx-example-plugin: registration only.

rlx imports this module for every ``rlx`` command (even ``rlx plugins list``), so it
must stay cheap: it imports the pydantic config models and nothing else. The components
themselves are given by import path and loaded only when a run uses them.
"""

from rlx import hookimpl
from rlx_example_plugin.config import BrevityConfig, CountdownConfig

__version__ = "0.1.0"


@hookimpl
def rlx_register_rewards(register):
    register("brevity", "rlx_example_plugin.reward:Brevity", config=BrevityConfig,
             granularity="outcome",
             description="Outcome reward for short completions: 1 - min(len, target_length) / target_length")


@hookimpl
def rlx_register_environments(register):
    register("countdown", "rlx_example_plugin.env:CountdownEnv", config=CountdownConfig,
             kind="text", default_reward="verifier",
             description="Count down: a start number minus a few others, with gold steps (Q:9-2-3)")
