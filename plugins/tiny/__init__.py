"""Policy ``tiny``: a small Llama with a char-level tokenizer, shipped as a checkpoint
trained by rlx's own ``sft`` objective on ``arithmetic``."""

from rlx.hookspecs import hookimpl
from rlx.plugins.tiny.config import TinyConfig


@hookimpl
def rlx_register_policies(register):
    register("tiny", "rlx.plugins.tiny.policy:TinyPolicy", config=TinyConfig, interface="lm", requires=("hf",),
             description="~0.9M-param char-level Llama, SFT-trained on arithmetic (default policy)")
