"""Settings of the ``best-of-n`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BestOfNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(16, ge=2, description="Completions sampled per prompt (the largest N measured); the "
                                                  "curve covers every power of two up to n, and n itself.")
    examples: int = Field(8, ge=0, description="Prompts of the last step whose best completion is kept in "
                                               "best_of_n.json.")
