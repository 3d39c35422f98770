"""Length shaping: an outcome reward from the completion's token count alone, to combine
with a task reward by weight (``--reward verifier --reward length``)."""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.reward import RewardSource


class Length(RewardSource):

    def score(self, batch: Batch) -> torch.Tensor:
        length = batch["mask"].sum(-1).float()
        c = self.config
        if c.target is not None:
            return -(length - c.target).abs() / c.target
        return -c.per_token * length
