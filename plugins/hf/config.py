from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class HFConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or local directory.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype; bfloat16 halves memory on GPUs that support it.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (only for repos you trust).")
