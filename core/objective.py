"""Objective: the algorithm. Turns a scored batch into a loss and named metrics.

It declares what it needs (``group_size`` samples per prompt, a reference policy,
rollouts or demonstrations) and may compute advantages in ``prepare``. The loop owns
collection, optimizer steps and logging; an objective owns its minibatch schedule only
through ``minibatches``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from rlx.batch import Batch
    from rlx.policy import Policy


class Objective(ABC):
    # rollouts: the policy's own samples; demonstrations: the environment's gold
    # completions; preferences: (chosen, rejected) pairs; own: ``make_batch`` builds it
    data: ClassVar[str] = "rollouts"
    # what the run leaves behind: a "policy" (the default), a "reward_model" (the policy's
    # model was turned into a scorer in ``setup``), or "nothing" (inference-time methods).
    # Only a run that trains a policy gets the generation evaluation.
    produces: ClassVar[str] = "policy"

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

    def make_batch(self, env: Any, policy: "Policy", tasks: list[dict[str, Any]], *, seeds: list[int]) -> "Batch":
        """``data = "own"``: the training batch for ``tasks`` (one seed per task). Rows
        may be several per task; ``meta["of_task"]`` then gives each row's task index."""
        raise NotImplementedError(f"{type(self).__name__} has data='own' but no make_batch")

    def save_alongside(self, folder: "Path") -> None:
        """Called on the main process right after the policy is saved into ``folder``: the
        place to add what the saved model needs besides (an implicit reward model's reference)."""

    def artifacts(self, folder: "Path") -> None:
        """Write files (plots, tables) into ``folder`` at the end of a finished run; the
        loop logs whatever is there as MLflow artifacts."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
