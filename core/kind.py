"""EnvironmentKind: how training batches are collected from one kind of environment, and
how a policy is evaluated on it.

The loop asks the run's kind and never branches on a kind's name. A kind is registered by
a plugin (``rlx_register_kinds``) like any component: text prompts, preference pairs and
vectorized control environments are kinds provided that way, and so is any new one (a
bandit, an offline dataset, a multi-turn game). Its registration names what the loop and
the CLI need before anything is built: the policy interface it drives, its default
policy and environment, and its headline metrics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from rlx.batch import Batch
    from rlx.config import Resolved
    from rlx.environment import Environment
    from rlx.objective import Objective
    from rlx.policy import Policy


@dataclass
class KindContext:
    """What a kind is built with: the run's components and settings.

    ``data`` is the objective's registered data mode (``rollouts``, ``demonstrations``,
    ``preferences``, ``own``, or a mode a kind defines); ``seed`` is the run's seed."""

    env: "Environment"
    policy: "Policy"
    objective: "Objective"
    cfg: "Resolved"
    data: str
    seed: int = 0


@dataclass
class Evaluation:
    """Held-out metrics (``eval/<name>``) and sample rows for the run's samples table."""

    metrics: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


class EnvironmentKind(ABC):
    """One kind of environment, built once per run.

    Required: ``collect``. Everything else has a default that suits a kind whose
    steps are counted by ``run.steps`` and which has no evaluation of its own."""

    # thousands of optimizer steps on small networks (classic control): the loop then calls
    # the fused AdamW kernel directly and clips with one flat norm, where per-tensor
    # overhead would dominate
    small_steps: bool = False

    def __init__(self, config: "BaseModel | None" = None, *, context: KindContext):
        """Factories are called as ``factory(config, context=...)``; kinds take no settings
        of their own today, so ``config`` is an empty model."""
        self.context = context
        self.env, self.policy, self.objective = context.env, context.policy, context.objective

    def expect(self, environment: type, policy: type) -> None:
        """Fail with one line unless the run's environment and policy are of the types this
        kind drives. Registrations are matched by name before anything is built; this
        checks what the factories actually returned. Call it from ``__init__``."""
        from rlx.errors import UsageError

        kind = type(self).__name__
        if not isinstance(self.env, environment):
            raise UsageError(f"environment '{type(self.env).__name__}' is not a {environment.__module__}."
                             f"{environment.__qualname__}, which {kind} drives; fix its registration (kind=) "
                             "or its base class")
        if not isinstance(self.policy, policy):
            raise UsageError(f"policy '{type(self.policy).__name__}' is not a {policy.__module__}.{policy.__qualname__}, "
                             f"which {kind} drives; fix its registration (interface=) or its base class")

    def total_steps(self) -> int:
        """Training steps of the run (default ``run.steps``; a kind counting environment
        steps turns ``run.env_steps`` into loop steps here)."""
        return self.context.cfg.run.steps

    @abstractmethod
    def collect(self, step: int) -> "Batch":
        """This process's training batch for loop step ``step`` (from 1). Its tensors have
        ``mask`` ``[B, T]``: 1.0 on the positions that count, ones then zeros in each row,
        because ``rlx.combine`` places an outcome reward at each row's last counted position
        (``mask.sum(-1) - 1``); plus the keys the kind documents, which objectives and
        rewards read. Deterministic given the seed and step: under several processes draw
        the global batch and keep this rank's slice (``rlx.rank_world``), seeding each sample
        by its global index (``rlx.sample_seed``), so a split across processes or a resume
        changes nothing."""

    def evaluate(self) -> Evaluation:
        """The policy on held-out data, on the main process only (no collectives). The
        first metric is the one the progress bar and learning curve show. Sample rows
        should share one set of keys with ``train_samples`` (the table's columns come from
        the first row): ``prompt``, ``completion``, ``correct`` for text-like kinds."""
        return Evaluation()

    def step_metrics(self, batch: "Batch", seconds: float) -> dict[str, float]:
        """Metrics of one collected batch that took ``seconds`` from collection to the
        optimizer step: throughput (``perf/...``) and the kind's own (``env/...``)."""
        return {}

    def train_samples(self, batch: "Batch", step: int) -> list[dict[str, Any]]:
        """Rows of the training batch worth keeping in the run's samples table (called
        every 10th step on the main process when ``run.samples_to_log`` > 0)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume collection exactly : JSON-serialisable, since checkpoints write it as JSON."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
