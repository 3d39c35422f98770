"""``brevity``: an outcome reward, one number per sample.

Outcome rewards return a ``[B]`` tensor; rlx places each value on the sample's last
completion token. (A process reward would return ``[B, T]`` with NaN off-step.)
"""

from __future__ import annotations

from typing import Any

import torch  # fine here: this module is imported only when a run uses the reward

from rlx.batch import Batch
from rlx.reward import RewardSource


class Brevity(RewardSource):
    granularity = "outcome"

    def __init__(self, config: Any, *, env: Any = None, name: str = "brevity"):
        super().__init__(config, env=env, name=name)

    def score(self, batch: Batch) -> torch.Tensor:
        target = self.config.target_length
        lengths = [len(text) for text in batch.meta["completion"]]
        return torch.tensor([1.0 - min(n, target) / target for n in lengths], dtype=torch.float32)
