from pydantic import BaseModel, ConfigDict


class SFTConfig(BaseModel):
    """SFT has no settings of its own: steps, batch size and learning rate live in
    ``run`` and ``optim``."""

    model_config = ConfigDict(extra="forbid")
