from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MLPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden_sizes: list[int] = Field([64, 64], description="Widths of the hidden layers.")
    activation: Literal["tanh", "relu"] = Field("tanh", description="Hidden-layer activation.")
    shared: bool = Field(False, description="One trunk for actor and critic (else two separate MLPs).")
    ortho_init: bool = Field(True, description="Orthogonal init: gain sqrt(2) hidden, 0.01 policy head, 1 value head.")
    log_std_init: float = Field(0.0, description="Initial log standard deviation of Gaussian actions.")
