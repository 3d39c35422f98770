"""A learned outcome reward model: one score per completion, from a saved classifier."""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.reward import RewardSource


class ORM(RewardSource):

    def __init__(self, config: Any, *, env: Any = None, name: str = "orm"):
        super().__init__(config, env=env, name=name)
        from rlx.plugins.shared.scorers import Scorer

        if not config.model:
            raise UsageError(f"reward '{name}' needs a model: --set reward.{name}.model=<the folder an "
                             "'rlx run --objective rm' run saved>")
        self.scorer = Scorer(config.model, "sequence", f"reward.{name}.model", config.score_chunk)

    def score(self, batch: Batch) -> torch.Tensor:
        return self.scorer.outcome(batch.meta["prompt"], batch.meta["completion"], normalize=self.config.normalize)
