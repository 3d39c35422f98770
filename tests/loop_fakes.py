"""A fake plugin for tests/test_loop.py: one kind, environment, policy, reward and two
objectives, all on tiny tensors, plus lifecycle-hook plugins (an observer, an early
stopper and an interrupter). Loaded through entry points like any plugin::

    EntryPoint("fakes", "loop_fakes", "rlx")
    EntryPoint("stopper", "loop_fakes:STOPPER", "rlx")
    EntryPoint("interrupter", "loop_fakes:INTERRUPTER", "rlx")

Everything the loop does to the components is appended to ``EVENTS`` as tuples
(``("collect", step, group_size, rows)``, ``("evaluate", last_collected_step)``,
``("checkpoint", last_collected_step)``, ``("loss", step, rows_per_task)``,
``("step", step, metrics)``, ``("end", status)``); tests clear it first.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from rlx.batch import Batch
from rlx.environment import Environment
from rlx.hookspecs import hookimpl
from rlx.kind import EnvironmentKind, Evaluation
from rlx.objective import Objective
from rlx.policy import Policy, unwrap
from rlx.reward import RewardConfig, RewardSource

EVENTS: list[tuple[Any, ...]] = []

DIM, LENGTH = 3, 4  # features per position, positions per row


def events(kind: str) -> list[tuple[Any, ...]]:
    """The recorded events of one kind, without their name."""
    return [e[1:] for e in EVENTS if e[0] == kind]


# -- components ---------------------------------------------------------------------------


class FakeEnvConfig(BaseModel):
    evaluate: bool = True  # False: the kind's evaluation has no metrics (no learning curve to draw)


class FakeEnv(Environment):
    """Counts the tasks drawn from it (its checkpointed state)."""

    def __init__(self, config: BaseModel, *, seed: int = 0):
        super().__init__(config, seed=seed)
        self.drawn = 0

    def state_dict(self) -> dict[str, Any]:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drawn = state["drawn"]


class FakePolicy(Policy):
    """A linear score per position: ``log_probs`` is ``obs @ w``."""

    def __init__(self, config: BaseModel, **kwargs: Any):
        super().__init__(config)
        self.model = torch.nn.Linear(DIM, 1, bias=False)

    def log_probs(self, batch: Batch, *, entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model(batch["obs"]).squeeze(-1), None

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(unwrap(self.model).state_dict(), path / "model.pt")


class FakeRewardConfig(RewardConfig):
    nan: bool = False  # NaN for every sample: a broken scorer


class FakeReward(RewardSource):
    def score(self, batch: Batch) -> torch.Tensor:
        if self.config.nan:
            return torch.full((len(batch),), float("nan"))
        self.scored = len(batch)
        return batch["obs"].sum(dim=(1, 2))

    def metrics(self) -> dict[str, float]:
        return {"rows": float(getattr(self, "scored", 0))}


class FakeObjectiveConfig(BaseModel):
    nan_at_step: int = 0  # the loss is NaN on this step (0: never)
    zero_grad: bool = False  # the loss has an exactly-zero gradient on every step
    by_hand: bool = False  # writes its gradients itself (Objective.gradients)


class GroupedObjectiveConfig(FakeObjectiveConfig):
    num_generations: int = 4  # Objective.group_size reads it; FakeObjective does not override group_size


class FakeObjective(Objective):
    def __init__(self, config: BaseModel, **kwargs: Any):
        super().__init__(config)
        self.step = 0
        self.updates = 0

    def begin_step(self, step: int, total_steps: int) -> None:
        self.step = step

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        EVENTS.append(("loss", self.step, torch.bincount(batch["group"]).tolist()))
        logp, _ = policy.log_probs(batch)
        mask = batch["mask"]
        loss = -(batch["rewards"] * logp * mask).sum() / mask.sum() + 0.1 * (logp.pow(2) * mask).mean()
        if self.config.zero_grad:
            loss = loss * 0.0
        if self.step == self.config.nan_at_step:
            loss = loss * float("nan")
        self.updates += 1
        return loss, {"loss/value": loss.detach()}

    def gradients(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, float]] | None:
        if not self.config.by_hand:
            return None
        EVENTS.append(("gradients", self.step))
        loss, m = self.loss(policy, batch)
        params = list(policy.model.parameters())
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g if p.grad is None else p.grad + g  # adds, as backward does
        return loss.detach(), m

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]


class FakeKind(EnvironmentKind):
    """``run.batch_size`` tasks x the objective's group size rows of ``[LENGTH, DIM]``
    features, the same for a given seed and step."""

    def __init__(self, config: BaseModel | None = None, *, context: Any):
        super().__init__(config, context=context)
        self.last_step = 0

    def collect(self, step: int) -> Batch:
        tasks, group = self.context.cfg.run.batch_size, self.objective.group_size
        rows = tasks * group
        gen = torch.Generator().manual_seed(self.context.seed * 100_003 + step)
        obs = torch.randn(rows, LENGTH, DIM, generator=gen)
        mask = torch.ones(rows, LENGTH)
        mask[0, -1] = 0.0  # rows of different lengths
        self.env.drawn += tasks
        self.last_step = step
        EVENTS.append(("collect", step, group, rows))
        return Batch({"obs": obs, "mask": mask, "actions": torch.zeros(rows, LENGTH, dtype=torch.long),
                      "group": torch.arange(tasks).repeat_interleave(group)})

    def evaluate(self) -> Evaluation:
        EVENTS.append(("evaluate", self.last_step))
        if not self.env.config.evaluate:
            return Evaluation()
        score = float(unwrap(self.policy.model).weight.detach().sum())
        return Evaluation({"eval/score": score}, [{"score": score}])

    def step_metrics(self, batch: Batch, seconds: float) -> dict[str, float]:
        return {"env/drawn": float(self.env.drawn)}

    def state_dict(self) -> dict[str, Any]:
        EVENTS.append(("checkpoint", self.last_step))
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = state["last_step"]


# -- registration and lifecycle hooks of the "fakes" plugin -----------------------------------


@hookimpl
def rlx_register_kinds(register):
    register("fake", f"{__name__}:FakeKind", interface="fake", data=("rollouts",), default_policy="fake",
             default_env="fake", headline=("eval/score",), description="test kind")


@hookimpl
def rlx_register_environments(register):
    register("fake", f"{__name__}:FakeEnv", config=FakeEnvConfig, kind="fake", default_reward="fake")


@hookimpl
def rlx_register_policies(register):
    register("fake", f"{__name__}:FakePolicy", interface="fake")


@hookimpl
def rlx_register_rewards(register):
    register("fake", f"{__name__}:FakeReward", config=FakeRewardConfig)


@hookimpl
def rlx_register_objectives(register):
    register("fake", f"{__name__}:FakeObjective", config=FakeObjectiveConfig, accepts=("fake",),
             headline=("loss/value",), default=True)
    register("fake_grouped", f"{__name__}:FakeObjective", config=GroupedObjectiveConfig, accepts=("fake",))


@hookimpl
def rlx_step_end(step, metrics):
    EVENTS.append(("step", step, dict(metrics)))


@hookimpl
def rlx_run_end(run_id, status, metrics):
    EVENTS.append(("end", status))


class _AtStep:
    """A lifecycle-hook plugin acting at step ``plugins.<name>.at`` of the run's config."""

    def __init__(self, name: str):
        self.name = name
        self.at: int | None = None

    @hookimpl
    def rlx_run_start(self, run_id, config):
        self.at = config.get("plugins", {}).get(self.name, {}).get("at")


class _Stopper(_AtStep):
    @hookimpl
    def rlx_step_end(self, step):
        return step == self.at


class _Interrupter(_AtStep):
    @hookimpl
    def rlx_step_end(self, step):
        if step == self.at:  # what Ctrl-C does: rlx.interrupts notes it, the loop checkpoints and stops
            os.kill(os.getpid(), signal.SIGINT)


STOPPER = _Stopper("stopper")
INTERRUPTER = _Interrupter("interrupter")
