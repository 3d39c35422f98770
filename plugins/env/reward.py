"""The environment's reward as a reward source, so other sources compose with it by weight."""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.environment import ControlEnvironment
from rlx.errors import UsageError
from rlx.reward import RewardSource


class EnvReward(RewardSource):

    def __init__(self, config: Any, *, env: Any = None, name: str = "env"):
        super().__init__(config, env=env, name=name)
        if not isinstance(env, ControlEnvironment):
            raise UsageError("reward 'env' reads a control environment's own reward; use it with --env gym "
                             "(text environments have verifier or prm)")

    def score(self, batch: Batch) -> torch.Tensor:
        return batch["env_reward"]  # [N, T]: a reward at every step

    def summarize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.mean(-1)  # mean reward per step, per env
