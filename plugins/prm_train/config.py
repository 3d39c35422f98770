"""Settings of the ``prm-train`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PRMTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples_per_task: int = Field(2, ge=0, description="Completions sampled from the starting policy per task: "
                                                       "the mistakes the PRM will meet when it scores that policy.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of those completions.")
    gold: bool = Field(True, description="Add each task's gold solution (environments with demonstrations).")
    flawed: bool = Field(True, description="Add a gold solution with one arithmetic slip (arithmetic tasks only).")
    eval_samples: int = Field(1, ge=0, description="Held-out completions sampled per held-out task (on top of "
                                                    "its gold and flawed ones), drawn once with fixed seeds.")
