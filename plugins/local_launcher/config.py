from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads_per_run: int = Field(0, ge=0, description="torch threads per run (0: this machine's cores shared evenly "
                                                      "between the runs in flight). A run's own run.threads wins.")
    stop_timeout_s: float = Field(120.0, gt=0, description="When the sweep ends early: seconds a run gets to "
                                                           "checkpoint after SIGTERM before it is killed.")
