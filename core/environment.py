"""Environment: hands out tasks.

An environment declares its ``kind`` (``text`` for prompt/answer tasks; ``control``,
``preference`` and ``multiturn`` come later) and objectives declare which kinds they
accept, so a mismatch fails before anything heavy is built.
"""

from __future__ import annotations

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


class Environment(ABC):
    kind: ClassVar[str] = "text"

    def __init__(self, config: BaseModel, *, seed: int = 0):
        self.config = config
        self.seed = seed

    @abstractmethod
    def sample(self, n: int) -> list[Task]:
        """``n`` training tasks; each text task has at least a ``prompt``."""

    @abstractmethod
    def eval_tasks(self) -> list[Task]:
        """The fixed held-out split for this seed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TextEnvironment(Environment):
    """Prompt -> completion tasks with a checkable answer."""

    kind: ClassVar[str] = "text"

    @abstractmethod
    def is_correct(self, task: Task, completion: str) -> bool:
        """Whether the completion's final answer is the gold answer."""

    def demonstration(self, task: Task) -> str:
        """The gold completion for supervised objectives."""
        raise NotImplementedError(f"{type(self).__name__} has no gold demonstrations")

    def check_steps(self, task: Task, completion: str) -> list[StepVerdict] | None:
        """Per-step verdicts, or None when the environment has no step checker."""
        return None
