from typing import Literal

from pydantic import Field

from rlx.reward import RewardConfig


class PRMConfig(RewardConfig):
    model_config = {"extra": "forbid"}
    backend: Literal["rule", "model"] = Field(
        "rule", description="rule: the environment's step checker; model: a learned PRM from `model` (a step's "
                            "score is the model's probability that it is right).")
    model: str | None = Field(None, description="Backend model: directory of a transformers token-classification "
                                                "model with one label (what 'rlx run --objective prm-train' saves).")
    score_chunk: int = Field(64, ge=1, description="Backend model: completions scored per forward pass.")
    granularity: Literal["process", "outcome"] = Field(
        "process", description="process: one reward per step; outcome: the steps aggregated into one reward.")
    aggregation: Literal["min", "product", "last", "mean"] = Field(
        "min", description="How step scores become one number (outcome use and the reward/prm metric).")
    refinement: Literal["none", "clip", "delta"] = Field(
        "none", description="clip: min(score - clip_threshold, 0), so extra steps cannot raise the return; "
                            "delta: score_k - score_(k+1), last step kept, so the return telescopes.")
    clip_threshold: float = Field(0.5, description="The threshold eta of the clip refinement.")
    correct: float = Field(1.0, description="Rule backend: score of a correct step.")
    incorrect: float = Field(0.0, description="Rule backend: score of a wrong step.")
