"""Environment: hands out tasks.

An environment declares its ``kind`` (``text`` for prompt/answer tasks; ``control``,
``preference`` and ``multiturn`` come later) and objectives declare which kinds they
accept, so a mismatch fails before anything heavy is built.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

Task = dict[str, Any]


@dataclass(frozen=True)
class StepVerdict:
    """One reasoning step of a completion: ``end`` is the character offset just past the
    step's last character, ``correct`` whether it is right given the steps before it."""

    end: int
    correct: bool


def rng_state(rng: random.Random) -> list[Any]:
    """A ``random.Random``'s state as JSON-friendly lists (for checkpoints)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list[Any]) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


class Environment(ABC):
    kind: ClassVar[str] = "text"

    def __init__(self, config: BaseModel, *, seed: int = 0):
        self.config = config
        self.seed = seed

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TextEnvironment(Environment):
    """Prompt -> completion tasks with a checkable answer."""

    kind: ClassVar[str] = "text"

    @abstractmethod
    def sample(self, n: int) -> list[Task]:
        """``n`` training tasks; each has at least a ``prompt``."""

    @abstractmethod
    def eval_tasks(self) -> list[Task]:
        """The fixed held-out split for this seed."""

    @abstractmethod
    def is_correct(self, task: Task, completion: str) -> bool:
        """Whether the completion's final answer is the gold answer."""

    def demonstration(self, task: Task) -> str:
        """The gold completion for supervised objectives."""
        raise NotImplementedError(f"{type(self).__name__} has no gold demonstrations")

    def check_steps(self, task: Task, completion: str) -> list[StepVerdict] | None:
        """Per-step verdicts, or None when the environment has no step checker."""
        return None


class ControlEnvironment(Environment):
    """A vectorized environment stepped by actions (``num_envs`` copies in lockstep).

    Observations, rewards and flags are torch tensors with ``num_envs`` rows. An episode
    that ends is reset automatically; ``step`` returns the observation that starts the
    next one, and ``final_obs`` holds the last observation of a truncated episode so
    objectives can bootstrap its value."""

    kind: ClassVar[str] = "control"
    num_envs: int

    @abstractmethod
    def reset(self) -> Any:
        """Observations ``[num_envs, ...]`` of fresh episodes."""

    @abstractmethod
    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[int, Any]]:
        """``(obs, reward, terminated, truncated, final_obs)``; ``final_obs`` maps the index
        of each truncated env to its last observation."""

    @abstractmethod
    def episode_stats(self) -> dict[str, float]:
        """Mean return and length of the episodes finished since the last call (empty if none)."""

    @abstractmethod
    def evaluate(self, policy: Any, episodes: int) -> dict[str, float]:
        """``eval/return`` (and ``eval/length``) of the deterministic policy on fresh episodes."""
