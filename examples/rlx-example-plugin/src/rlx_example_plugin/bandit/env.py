"""``bandit``: a Gaussian k-armed bandit (the 10-armed testbed of Sutton & Barto, 2.3).
Pure Python, no torch."""

from __future__ import annotations

import random
from typing import Any

from rlx.errors import RlxError
from rlx_example_plugin.bandit.config import BanditConfig
from rlx_example_plugin.bandit.interface import BanditEnvironment


class GaussianBandit(BanditEnvironment):
    """Arm ``a`` pays ``N(mean_a, noise^2)``; the means are drawn once from
    ``N(0, mean_std^2)`` by ``means_seed`` (default: the run seed)."""

    def __init__(self, config: BanditConfig | dict[str, Any] | None = None, *, seed: int = 0):
        if not isinstance(config, BanditConfig):
            config = BanditConfig.model_validate(config or {})
        super().__init__(config, seed=seed)
        self.arms = config.arms
        # a string seed: random.Random hashes it the same way in every process and version
        rng = random.Random(f"bandit-means:{config.means_seed if config.means_seed is not None else seed}")
        self._means = [rng.gauss(0.0, config.mean_std) for _ in range(self.arms)]

    def means(self) -> list[float]:
        return list(self._means)

    def pull(self, arms: list[int], seed: int) -> list[float]:
        bad = next((a for a in arms if not 0 <= a < self.arms), None)
        if bad is not None:
            raise RlxError(f"bandit: arm {bad} pulled, but there are only {self.arms} (0..{self.arms - 1}); "
                           "the policy's arm count does not match env.arms")
        rng = random.Random(seed)
        return [self._means[a] + self.config.noise * rng.gauss(0.0, 1.0) for a in arms]
