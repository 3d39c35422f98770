"""Objective: the algorithm. Turns a scored batch into a loss and named metrics.

It declares what it needs (``group_size`` samples per prompt, a reference policy,
rollouts or demonstrations) and may compute advantages in ``prepare``. The loop owns
collection, optimizer steps and logging; an objective owns its minibatch schedule only
through ``minibatches``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from rlx.batch import Batch
    from rlx.policy import Policy


class Objective(ABC):
    data: ClassVar[str] = "rollouts"  # or "demonstrations"

    def __init__(self, config: BaseModel, **kwargs: Any):
        self.config = config

    @property
    def group_size(self) -> int:
        """Samples drawn per prompt."""
        return 1

    @property
    def needs_reference(self) -> bool:
        return False

    def setup(self, policy: "Policy") -> None:
        """Called once the policy is built and before the optimizer sees its parameters:
        the place to add what the objective trains alongside it (PPO's value head)."""

    def prepare(self, batch: "Batch", policy: "Policy", reference: "Policy | None") -> dict[str, float]:
        """Compute what the loss needs (advantages, old/ref log-probs) once per batch."""
        return {}

    def minibatches(self, batch: "Batch") -> Iterator["Batch"]:
        """The optimizer steps to take on one collected batch: one per yielded batch."""
        yield batch

    @abstractmethod
    def loss(self, policy: "Policy", batch: "Batch") -> tuple["torch.Tensor", dict[str, float]]:
        """A scalar loss to minimize and metrics named ``<group>/<name>``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
