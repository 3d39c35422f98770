from typing import Literal

from pydantic import Field

from rlx.plugins.hf.config import LMPaths


class TinyConfig(LMPaths):
    init: Literal["checkpoint", "scratch"] = Field(
        "checkpoint", description="Start from the shipped SFT checkpoint, or from random weights.")
    path: str | None = Field(None, description="Load this directory instead of the shipped checkpoint.")
    hidden_size: int = Field(128, ge=8, description="Width (init=scratch only).")
    num_layers: int = Field(4, ge=1, description="Transformer blocks (init=scratch only).")
    num_heads: int = Field(4, ge=1, description="Attention heads (init=scratch only).")
    intermediate_size: int = Field(384, ge=8, description="MLP width (init=scratch only).")
    max_length: int = Field(128, ge=16, description="Longest prompt + completion, in characters (init=scratch only).")
