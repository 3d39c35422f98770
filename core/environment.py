"""Environment: hands out tasks.

An environment's registration names its kind (``rlx.kind``: how batches are collected
from it and how a policy is evaluated on it) and objectives' registrations name the kinds
they accept, so a mismatch fails before anything heavy is built. The interfaces below
are the ones the built-in kinds drive: text (prompt -> completion), preference (pairs)
and control (vectorized stepping). They live in core because independent plugins meet
through them: an environment plugin and a policy plugin implement the same kind without
importing each other. A new kind defines its environment interface in its own plugin.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset a run reads, as MLflow records it (``mlflow.log_input``): the run page's
    Datasets and the runs table's Dataset column show it.

    ``digest`` identifies the content: a hash of a file's bytes, or of a procedural
    generator's settings (the same settings make the same rows). ``source`` says where it
    comes from: a file path, a hub id, or the generator and its settings."""

    name: str  # short and stable: "arithmetic-train", "cartpole-episodes"
    context: str  # "training" or "evaluation" (MLflow's mlflow.data.context tag)
    digest: str  # at most 36 characters: MLflow's column
    source: str  # a path, a URI or a generator description
    source_type: str  # "local", "hub", "procedural", "simulator"
    rows: int | None = None  # how many rows (tasks, pairs, episodes), when known
    columns: tuple[str, ...] = ()  # the fields a row has
    settings: dict[str, Any] | None = None  # a procedural generator's settings


def digest_of(*parts: Any) -> str:
    """A short stable digest of JSON-able ``parts`` (a generator's settings, a seed)."""
    import hashlib
    import json

    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Any) -> str:
    """A short digest of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Environment(ABC):
    """Any environment: built with its config and the run's seed; checkpointed with the run."""

    def __init__(self, config: BaseModel, *, seed: int = 0):
        self.config = config
        self.seed = seed

    def datasets(self) -> list[DatasetInfo]:
        """The data this environment hands out, for the run's record in MLflow: its training
        source and its held-out split (``context`` "training" / "evaluation"). Called once
        per run, after the environment is built; keep it cheap (hash a file, not a corpus
        held remotely). Empty by default: nothing is logged."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """What resumes task sampling exactly (RNG state, position in a file): JSON-friendly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class TextEnvironment(Environment):
    """Prompt -> completion tasks, usually with a checkable answer."""

    @abstractmethod
    def sample(self, n: int) -> list[Task]:
        """``n`` training tasks; each has at least a ``prompt``."""

    @abstractmethod
    def eval_tasks(self) -> list[Task]:
        """The fixed held-out split for this seed."""

    @abstractmethod
    def is_correct(self, task: Task, completion: str) -> bool:
        """Whether the completion's final answer is the gold answer."""

    @property
    def checks_answers(self) -> bool:
        """Whether ``is_correct`` can judge completions (False for prompts without gold
        answers): without it there is no accuracy evaluation and no verifier reward."""
        return True

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

    num_envs: int
    observation_space: Any  # gymnasium spaces of one copy: control policies size their networks from them
    action_space: Any

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
    def eval_episodes(self, policy: Any) -> dict[str, float]:
        """``eval/return`` (and ``eval/length``) of the deterministic policy on fresh
        held-out episodes (as many as the environment's config says)."""


class PreferenceEnvironment(Environment):
    """(prompt, chosen, rejected) pairs: tasks with keys ``prompt``, ``chosen``, ``rejected``."""

    @abstractmethod
    def sample(self, n: int) -> list[Task]:
        """``n`` training pairs."""

    @abstractmethod
    def eval_pairs(self) -> list[Task]:
        """The fixed held-out pairs for this seed."""

    def answer_tasks(self) -> TextEnvironment | None:
        """A text environment over the pairs' prompts whose answers can be checked, for
        an accuracy evaluation of the policy trained on the pairs; None when the pairs
        carry no checkable answers (a file of human preferences)."""
        return None
