"""Checks each completion's final answer with the environment's ``is_correct``."""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.environment import TextEnvironment
from rlx.errors import UsageError
from rlx.reward import RewardSource


class Verifier(RewardSource):

    def __init__(self, config: Any, *, env: Any = None, name: str = "verifier"):
        super().__init__(config, env=env, name=name)
        if not (isinstance(env, TextEnvironment) and env.checks_answers):
            raise UsageError(f"reward 'verifier' needs a text environment with gold answers; "
                             f"'{type(env).__name__}' has none")

    def score(self, batch: Batch) -> torch.Tensor:
        ok = [self.env.is_correct(t, c) for t, c in zip(batch.meta["task"], batch.meta["completion"])]
        return torch.tensor([self.config.correct if o else self.config.incorrect for o in ok])
