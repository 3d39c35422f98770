"""``ArithmeticEnv``: procedurally generated multi-step arithmetic with gold steps."""

from __future__ import annotations

import random
from typing import Any

from rlx.environment import DatasetInfo, StepVerdict, Task, TextEnvironment, digest_of, rng_state, set_rng_state
from rlx.errors import ConfigError
from rlx.plugins.arithmetic import problems
from rlx.plugins.arithmetic.config import ArithmeticConfig

# Guards against configs whose problem space is too small: without them drawing distinct
# held-out problems, or training problems outside the held-out set, would never end.
_EVAL_TRIES_PER_TASK = 100
_MAX_HELD_OUT_HITS = 10_000
_SOURCE = "rlx arithmetic generator"
_COLUMNS = ("prompt", "answer", "steps", "solution", "expr")


class ArithmeticEnv(TextEnvironment):

    def __init__(self, config: ArithmeticConfig | dict[str, Any] | None = None, *, seed: int = 0):
        if not isinstance(config, ArithmeticConfig):
            config = ArithmeticConfig.model_validate(config or {})
        super().__init__(config, seed=seed)
        self._rng = random.Random(f"arithmetic-train:{seed}")
        self._drawn = 0
        self._eval: list[Task] | None = None
        self._held_out: set[str] = set()

    def eval_tasks(self) -> list[Task]:
        # Copies, so a caller editing a task cannot change the cached split.
        return [dict(t, steps=list(t["steps"])) for t in self._split()]

    def _split(self) -> list[Task]:
        if self._eval is None:
            # eval_size is left out of the seed so a smaller split is a prefix of a larger one;
            # eval_seed takes the place the run seed had in the string (and is left out of the
            # key), so eval_seed=0 draws the problems every run drew before it existed.
            key = self.config.model_dump_json(exclude={"eval_size", "eval_seed"})
            rng = random.Random(f"arithmetic-eval:{self.config.eval_seed}:{key}")
            size, tasks, seen = self.config.eval_size, [], set()
            for _ in range(_EVAL_TRIES_PER_TASK * size + 1000):
                task = problems.make_task(*problems.generate(rng, self.config))
                if task["prompt"] not in seen:
                    seen.add(task["prompt"])
                    tasks.append(task)
                    if len(tasks) == size:
                        break
            else:
                raise ConfigError(f"arithmetic: found only {len(tasks)} distinct problems for "
                                 f"eval_size={size}; lower env.eval_size or widen the config "
                                 f"(max_ops, max_operand, max_factor, ops)")
            self._eval, self._held_out = tasks, seen
        return self._eval

    def datasets(self) -> list[DatasetInfo]:
        """The training stream, identified by its settings and the run seed (the problems
        are drawn, not stored), and the held-out split, identified by its problems so that
        runs evaluated on the same problems share its digest whatever their seeds."""
        # Every field counts for training, eval_size and eval_seed too: training skips the
        # held-out problems, so they change which problems it sees.
        settings = self.config.model_dump()
        split = self._split()
        return [
            DatasetInfo(name="arithmetic-train", context="training", digest=digest_of(settings, self.seed),
                        source=_SOURCE, source_type="procedural", columns=_COLUMNS, settings=settings),
            DatasetInfo(name="arithmetic-eval", context="evaluation",
                        digest=digest_of([[t["prompt"], t["answer"]] for t in split]),
                        source=_SOURCE, source_type="procedural", rows=len(split), columns=_COLUMNS,
                        settings=settings),
        ]

    def sample(self, n: int) -> list[Task]:
        self._split()
        out: list[Task] = []
        hits = 0
        while len(out) < n:
            task = problems.make_task(*problems.generate(self._rng, self.config))
            if task["prompt"] in self._held_out:  # training never sees a held-out problem
                hits += 1
                if hits > _MAX_HELD_OUT_HITS:
                    raise ConfigError("arithmetic: the held-out split covers (almost) every problem "
                                     "this config can generate; lower env.eval_size or widen the config")
                continue
            hits = 0
            out.append(task)
        self._drawn += n
        return out

    def is_correct(self, task: Task, completion: str) -> bool:
        answer = problems.final_answer(completion)
        return answer is not None and answer == task["answer"]

    def demonstration(self, task: Task) -> str:
        return task["solution"]

    def check_steps(self, task: Task, completion: str) -> list[StepVerdict]:
        return problems.check_steps(task["expr"], task["answer"], completion)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self._rng), "drawn": self._drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(self._rng, state["rng"])
        self._drawn = int(state["drawn"])
