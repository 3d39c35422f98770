"""Settings of the ``prm-train`` objective (``--set objective.<field>=...``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PRMTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    head: Literal["implicit", "classifier"] = Field(
        "implicit", description="implicit: a step's score is sigmoid of beta x the summed log-ratio of the trained LM "
                                "to its start up to the step's separator (saved with its reference); classifier: a "
                                "token-classification head on the policy's backbone.")
    beta: float = Field(0.5, gt=0, description="implicit: the scale of the log-ratio.")
    samples_per_task: int = Field(2, ge=0, description="Completions sampled from the starting policy per task: "
                                                       "the mistakes the PRM will meet when it scores that policy.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of those completions.")
    gold: bool = Field(True, description="Add each task's gold solution (environments with demonstrations).")
    flawed: bool = Field(True, description="Add a solution with one mistake (arithmetic tasks: a slip, a forgotten "
                                           "term, a miscopied number or an early answer).")
    eval_samples: int = Field(1, ge=0, description="Held-out completions sampled per held-out task (on top of "
                                                    "its gold and flawed ones), drawn once with fixed seeds.")
