from typing import Literal

from pydantic import Field, field_validator

from rlx.reward import RewardConfig


class EnsembleConfig(RewardConfig):
    model_config = {"extra": "forbid"}
    models: list[str] = Field(default_factory=list, description="Directories of outcome reward models (what "
                                                                "'rlx run --objective rm' saves); a list or a "
                                                                "comma-separated string.")
    sources: list[str] = Field(default_factory=list, description="Names of other outcome reward sources to "
                                                                 "include, each with its default settings "
                                                                 "(e.g. verifier, length).")
    aggregation: Literal["mean", "min", "uwo"] = Field(
        "mean", description="mean; min: the worst case over members; uwo: mean - uwo_lambda x variance across "
                            "members (uncertainty-weighted optimization).")
    uwo_lambda: float = Field(1.0, ge=0, description="Weight of the variance penalty of uwo.")
    normalize: bool = Field(True, description="Put each model on the held-out scale its rm run saved before "
                                              "aggregating, so min and variance compare like with like.")
    score_chunk: int = Field(64, ge=1, description="Completions scored per forward pass.")

    @field_validator("models", "sources", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # `--set reward.ensemble.models=a,b,c` arrives as one string
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
