from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LMPaths(BaseModel):
    """How a transformers policy samples and scores; the defaults compute the same
    tokens and log-probs as the plain transformers calls, faster."""

    model_config = ConfigDict(extra="forbid")
    sampler: Literal["auto", "transformers"] = Field(
        "auto", description="auto: rlx's KV-cache decode loop for Llama and Qwen2 models (same tokens as "
                            "model.generate), model.generate otherwise; transformers: always model.generate.")
    share_prompts: bool = Field(
        True, description="Score rows that repeat a prompt (a GRPO group) with one pass over the prompt.")
    packing: bool = Field(
        True, description="Score a batch with much padding (a fifth of its slots or more) as packed rows: its "
                          "real tokens end to end, each shared prompt once, under a mask that keeps the "
                          "sequences apart (the same log-probs).")
    attention: Literal["rlx", "model"] = Field(
        "rlx", description="rlx: transformers' SDPA, with attention written out in bf16 on a CPU for short "
                           "sequences (torch's CPU SDPA kernel is slow there); model: the implementation the "
                           "model was loaded with.")
    fused_norms: bool = Field(
        True, description="Compute Llama and Qwen2 RMSNorm layers with torch's fused kernel (the same values, "
                          "one pass over memory instead of six).")


class HFConfig(LMPaths):
    model: str | None = Field(None, description="Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct) or local directory.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype; bfloat16 halves memory on GPUs that support it.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (only for repos you trust).")
