"""Objective: the algorithm. Turns a scored batch into a loss and named metrics.

It declares what it needs (``group_size`` samples per task, a reference policy) and may
compute advantages in ``prepare``. The loop owns
collection, optimizer steps and logging; an objective owns its minibatch schedule only
through ``minibatches``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from rlx.batch import Batch
    from rlx.policy import Policy


class Objective(ABC):
    """Required: ``loss``. The rest has defaults.

    What an objective learns from (``data``), what its run leaves behind (``produces``),
    the environment kinds it accepts and its headline metrics are stated once, in its
    registration (see ``rlx.hookspecs.rlx_register_objectives``), not on the class."""

    def __init__(self, config: BaseModel, **kwargs: Any):
        """Factories are called as ``factory(config, env=..., env_kind=..., max_new_tokens=...)``:
        the environment built for the run, its kind's name and the completion length limit."""
        self.config = config

    @property
    def group_size(self) -> int:
        """Samples drawn per task (``data = "rollouts"``): the config's ``num_generations``
        field where it has one, else 1. A group-relative objective whose groups are of 1
        has an advantage of 0 everywhere, so the number lives in one place, its config."""
        fields = type(self.config).model_fields
        return int(self.config.num_generations) if "num_generations" in fields else 1  # type: ignore[attr-defined]

    @property
    def needs_reference(self) -> bool:
        """Whether the loop builds a frozen copy of the initial policy (``reference`` in
        ``prepare`` and ``held_out_metrics``) for a KL term."""
        return False

    @property
    def rollout_length(self) -> int:
        """Kinds that step environments: time steps collected per environment copy per
        loop step (the batch is ``[num_envs, rollout_length]``)."""
        return 1

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

    def gradients(self, policy: "Policy", batch: "Batch") -> tuple["torch.Tensor", dict[str, float]] | None:
        """The gradients of ``loss(policy, batch)`` written straight into the ``.grad`` of
        the policy's trainable parameters, without an autograd graph, and ``loss``'s return
        value (the loss need not carry a graph); or None (the default) where there is no
        such path, and the loop calls ``loss`` and backpropagates.

        The loop calls it only in one process in full precision, where nothing (gradient
        sync, a loss scaler) stands between the loss and its gradients. It is a fast path
        for objectives that take thousands of steps on tiny networks; the gradients must
        be those of ``loss`` (test the two against each other)."""
        return None

    def begin_step(self, step: int, total_steps: int) -> None:
        """Called before collecting loop step ``step`` of ``total_steps``: the place for
        schedules the objective owns (an exploration rate, an annealed clip range)."""

    def act(self, policy: "Policy", obs: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Kinds that step environments: the behaviour policy's actions, their log-probs
        and values for ``obs``. Default: the policy's own ``act``; an objective that
        explores its own way (DQN's epsilon-greedy) overrides it."""
        return policy.act(obs)  # type: ignore[attr-defined]

    def held_out_metrics(self, env: Any, policy: "Policy", reference: "Policy | None") -> dict[str, float]:
        """Metrics the objective itself measures on the environment's held-out data (DPO:
        preference accuracy), merged with the kind's evaluation; main process only."""
        return {}

    def make_batch(self, env: Any, policy: "Policy", tasks: list[dict[str, Any]], *, seeds: list[int]) -> "Batch":
        """``data = "own"``: the training batch for ``tasks`` (one seed per task). Rows
        may be several per task; ``meta["of_task"]`` then gives each row's task index."""
        raise NotImplementedError(f"{type(self).__name__} has data='own' but no make_batch")

    def save_alongside(self, folder: "Path") -> None:
        """Called on the main process right after the policy is saved into ``folder``: the
        place to add what the saved model needs besides (an implicit reward model's reference)."""

    def artifacts(self, folder: "Path") -> None:
        """Write files (plots, tables) into ``folder`` at the end of a finished run; the
        loop logs whatever is there as MLflow artifacts (with tracking off they are not
        kept: write what must survive into the run's folder yourself). A file named
        ``<name>_table.json`` in MLflow's table layout (``{"columns": [...], "data":
        [[...], ...]}``) is shown as a table by MLflow's UI and ``mlflow.load_table``."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume exactly (schedules, counters): JSON-serialisable,
        since checkpoints write it as JSON. Owned networks and large buffers belong on the
        policy's ``model`` or in files of their own."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
