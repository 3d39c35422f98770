"""What the ``bandit`` kind drives: the environment and policy interfaces a bandit
environment plugin and a bandit policy plugin both implement (``interface="bandit"``),
so that either can be replaced without the other. No torch at import."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from rlx.environment import Environment
from rlx.policy import Policy

if TYPE_CHECKING:
    import torch


class BanditEnvironment(Environment):
    """k arms with fixed expected payouts."""

    arms: int

    @abstractmethod
    def means(self) -> list[float]:
        """Expected payout of each arm: what evaluation measures the policy against."""

    @abstractmethod
    def pull(self, arms: list[int], seed: int) -> list[float]:
        """One payout per pulled arm. The noise must depend on ``seed`` alone (not on
        earlier pulls), so collection is the same split across processes or resumed."""


class ArmPolicy(Policy):
    """A distribution over the environment's arms (``interface="bandit"``).

    ``log_probs(batch)`` gives ``[B, 1]`` log-probabilities of ``batch["actions"]``."""

    @abstractmethod
    def arm_probs(self) -> "torch.Tensor":
        """Probabilities ``[k]`` of pulling each arm."""
