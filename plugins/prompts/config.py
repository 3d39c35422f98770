"""Settings of the ``prompts`` environment (``--set env.<field>=...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PromptsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="A JSONL, JSON, CSV or parquet file of prompts (with reference answers, "
                                       "optionally).")
    prompt_field: str = Field("prompt", description="Column holding the prompt.")
    answer_field: str = Field("answer", description="Column holding the reference answer (optional column).")
    eval_size: int = Field(64, ge=0, description="Held-out prompts (the file's last rows), scored by greedy "
                                                 "generation when answers are present.")
