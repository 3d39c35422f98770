"""Reward model ensembles (Coste et al. 2024, "Reward Model Ensembles Help Mitigate
Overoptimization"): several outcome scores per completion, aggregated conservatively.

``min`` optimizes the worst case over members; ``uwo`` penalizes disagreement,
``mean - lambda * var``, where the members disagree most where the policy has drifted
off their training distribution, which is where overoptimization happens.
"""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.reward import RewardSource


def aggregate(scores: torch.Tensor, how: str, uwo_lambda: float = 1.0) -> torch.Tensor:
    """``[M, B]`` member scores -> ``[B]``. The variance is the population one (over M)."""
    if how == "min":
        return scores.min(0).values
    mean = scores.mean(0)
    if how == "uwo":
        return mean - uwo_lambda * scores.var(0, unbiased=False)
    return mean


class Ensemble(RewardSource):

    def __init__(self, config: Any, *, env: Any = None, name: str = "ensemble"):
        super().__init__(config, env=env, name=name)
        from rlx.plugins.shared.scorers import Scorer

        if len(config.models) + len(config.sources) < 2:
            raise UsageError(f"reward '{name}' needs at least two members: --set reward.{name}.models=DIR1,DIR2,... "
                             f"and/or --set reward.{name}.sources=verifier,...")
        self.scorers = [Scorer(m, "sequence", f"reward.{name}.models[{i}]", config.score_chunk)
                        for i, m in enumerate(config.models)]
        self.sources = [self._source(s, env) for s in config.sources]
        self.member_scores: torch.Tensor | None = None  # [M, B] of the last batch, for inspection

    def _source(self, source: str, env: Any) -> RewardSource:
        from rlx.registry.plugins import get_registry

        if source == self.name:
            raise UsageError(f"reward '{self.name}' cannot contain itself")
        spec = get_registry().get("reward", source)
        granularity = spec.meta.get("granularity", "outcome")
        if granularity != "outcome":
            raise UsageError(f"reward '{self.name}': member '{source}' is a {granularity} reward; an ensemble "
                             "aggregates one score per completion, so use outcome sources (or prm with "
                             "granularity=outcome as its own --reward)")
        return spec.build(spec.config(), env=env, name=source)

    def score(self, batch: Batch) -> torch.Tensor:
        prompts, texts = batch.meta["prompt"], batch.meta["completion"]
        members = [s.outcome(prompts, texts, normalize=self.config.normalize) for s in self.scorers]
        members += [src.score(batch).float().cpu() for src in self.sources]
        self.member_scores = torch.stack(members)
        return aggregate(self.member_scores, self.config.aggregation, self.config.uwo_lambda)
