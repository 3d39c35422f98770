"""Settings of the ``arithmetic`` environment (``--set env.<field>=...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALLOWED_OPS = "+-*"


class ArithmeticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_ops: int = Field(2, ge=1, description="Fewest operations in a problem.")
    max_ops: int = Field(3, ge=1, description="Most operations in a problem (drawn uniformly in [min_ops, max_ops]).")
    max_operand: int = Field(20, ge=1, description="Largest operand of + and -.")
    max_factor: int = Field(9, ge=1, description="Largest operand of * (wins over max_operand for a number next to a *).")
    ops: str = Field("+-", description="Operators to draw from, characters of '+-*'; repeat one to weight it.")
    eval_size: int = Field(256, ge=1, description="Number of distinct held-out problems.")
    eval_seed: int = Field(0, description="Seed of the held-out split; fixed by default so that every seed of one "
                                          "configuration is evaluated on the same problems.")
    allow_negative: bool = Field(False, description="Allow negative intermediate results; if false no step goes below 0.")

    @field_validator("ops")
    @classmethod
    def _check_ops(cls, ops: str) -> str:
        if not ops:
            raise ValueError(f"ops must not be empty; use characters of '{ALLOWED_OPS}'")
        bad = sorted(set(ops) - set(ALLOWED_OPS))
        if bad:
            raise ValueError(f"ops has unsupported operator(s) {''.join(bad)!r}; use characters of '{ALLOWED_OPS}'")
        return ops

    @model_validator(mode="after")
    def _check_range(self) -> "ArithmeticConfig":
        if self.max_ops < self.min_ops:
            raise ValueError(f"max_ops ({self.max_ops}) must be >= min_ops ({self.min_ops})")
        return self
