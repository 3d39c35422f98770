"""Policy ``hf``: any transformers causal LM, by hub id or local directory."""

from rlx.hookspecs import hookimpl
from rlx.plugins.hf.config import HFConfig


@hookimpl
def rlx_register_policies(register):
    register("hf", "rlx.plugins.hf.policy:HFPolicy", config=HFConfig, interface="lm",
             description="Any transformers causal LM (hub id or local directory)")
