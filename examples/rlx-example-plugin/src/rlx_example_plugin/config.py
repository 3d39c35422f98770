"""Config models: what ``--set reward.brevity.<field>=`` and ``--set env.<field>=`` accept.

Each field's description is shown by ``rlx plugins show example``. ``extra="forbid"``
turns a typo (``--set env.max_operan=9``) into an error that lists the allowed fields.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rlx.reward import RewardConfig


class BrevityConfig(RewardConfig):  # inherits ``weight`` from RewardConfig
    model_config = ConfigDict(extra="forbid")

    target_length: int = Field(32, ge=1, description="Completions this many characters or longer score 0.")


class CountdownConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_operand: int = Field(20, ge=1, description="Largest start number and largest number subtracted.")
    num_ops: int = Field(2, ge=1, le=4, description="Subtractions per problem.")
    eval_size: int = Field(64, ge=1, description="Number of distinct held-out problems (fixed per seed).")
