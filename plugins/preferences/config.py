"""Settings of the ``preferences`` environment (``--set env.<field>=...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PreferencesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="A JSONL, JSON, CSV or parquet file of pairs; None: the built-in "
                                                "synthetic pairs from arithmetic (correct vs one slip).")
    prompt_field: str = Field("prompt", description="Column holding the prompt.")
    chosen_field: str = Field("chosen", description="Column holding the preferred completion.")
    rejected_field: str = Field("rejected", description="Column holding the dispreferred completion.")
    eval_size: int = Field(256, ge=1, description="Held-out pairs (a file: its last rows; synthetic: pairs on the "
                                                  "arithmetic held-out problems).")
