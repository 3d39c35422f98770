"""Settings of the ``preferences`` environment (``--set env.<field>=...``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Flaw = Literal["slip", "skip", "operand", "early"]


class PreferencesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="A JSONL, JSON, CSV or parquet file of pairs; None: the built-in "
                                                "synthetic pairs from arithmetic (gold vs one mistake).")
    flaws: list[Flaw] = Field(["slip", "skip", "operand", "early"],
                              description="Synthetic pairs: the kinds of mistake a rejected solution makes, one drawn "
                                          "per pair: slip (a result off by 1-3), skip (a term forgotten), operand (a "
                                          "number miscopied), early (answers before the last step).")
    prompt_field: str = Field("prompt", description="Column holding the prompt.")
    chosen_field: str = Field("chosen", description="Column holding the preferred completion.")
    rejected_field: str = Field("rejected", description="Column holding the dispreferred completion.")
    eval_size: int = Field(256, ge=1, description="Held-out pairs (a file: its last rows; synthetic: pairs on the "
                                                  "arithmetic held-out problems).")
    eval_seed: int = Field(0, description="Synthetic pairs: seed of the held-out pairs (arithmetic's held-out problems "
                                          "and their mistakes); fixed by default so that every seed of one "
                                          "configuration is evaluated on the same pairs. A file's are its last rows.")

    @field_validator("flaws", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # `--set env.flaws=slip,skip` arrives as one string
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
