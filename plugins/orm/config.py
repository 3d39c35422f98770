from pydantic import Field

from rlx.reward import RewardConfig


class ORMConfig(RewardConfig):
    model_config = {"extra": "forbid"}
    model: str | None = Field(None, description="Directory of a transformers sequence-classification model with one "
                                                "label: what 'rlx run --objective rm' saves, or any such model.")
    normalize: bool = Field(False, description="Put scores on the held-out scale the rm run saved ((s - mean) / "
                                               "std); models without it are used as they are.")
    score_chunk: int = Field(64, ge=1, description="Completions scored per forward pass.")
