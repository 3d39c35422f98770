"""Objective ``sft``: supervised fine-tuning on the environment's gold solutions."""

from rlx.hookspecs import hookimpl
from rlx.plugins.sft.config import SFTConfig


@hookimpl
def rlx_register_objectives(register):
    register("sft", "rlx.plugins.sft.objective:SFT", config=SFTConfig, accepts=("text",),
             data="demonstrations", headline=("loss/sft",), description="Supervised fine-tuning on gold demonstrations")
