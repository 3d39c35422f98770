"""``payout``: the bandit environment's payout as an outcome reward (``[B]``), so it goes
through the loop's standard path (``rlx.reward.combine`` places it on the batch's one
position, ``reward/mean`` is logged) and composes with other sources by weight."""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.reward import RewardSource
from rlx_example_plugin.bandit.interface import BanditEnvironment


class Payout(RewardSource):

    def __init__(self, config: Any, *, env: Any = None, name: str = "payout"):
        super().__init__(config, env=env, name=name)
        if not isinstance(env, BanditEnvironment):
            raise UsageError("reward 'payout' is a bandit environment's payout; use it with --env bandit")

    def score(self, batch: Batch) -> torch.Tensor:
        return batch["env_reward"][:, 0]
