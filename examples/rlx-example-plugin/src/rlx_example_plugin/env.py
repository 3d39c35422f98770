"""``countdown``: a text environment. Pure Python, no torch.

A task counts down from a start number by a few subtractions, never below zero::

    {"prompt": "Q:9-2-3\n", "answer": 4, "solution": "9-2=7\n7-3=4\nA:4", "expr": "9-2-3"}

Prompts and solutions use only the characters ``0123456789+-*=:QA``, newline and space:
the default ``tiny`` policy's char-level tokenizer knows nothing else. The solution has
the same shape as the built-in ``arithmetic`` environment's, so ``tiny`` can solve it.
"""

from __future__ import annotations

import random
from typing import Any

from rlx.environment import Task, TextEnvironment
from rlx.errors import ConfigError
from rlx_example_plugin.config import CountdownConfig

_TRIES = 10_000  # a config whose problem space is too small fails instead of looping


def make_task(nums: list[int]) -> Task:
    expr = "-".join(str(n) for n in nums)
    lines, total = [], nums[0]
    for n in nums[1:]:
        lines.append(f"{total}-{n}={total - n}")
        total -= n
    return {"prompt": f"Q:{expr}\n", "answer": total, "expr": expr,
            "solution": "\n".join(lines + [f"A:{total}"])}


def final_answer(completion: str) -> int | None:
    """The integer on the last line starting with ``A:``; None if missing or unparsable."""
    for line in reversed(completion.split("\n")):
        line = line.strip()
        if line.startswith("A:"):
            text = line[2:].strip()
            digits = text[1:] if text.startswith("-") else text
            if digits.isascii() and digits.isdigit() and len(digits) <= 30:
                return int(text)
            return None
    return None


class CountdownEnv(TextEnvironment):
    kind = "text"

    def __init__(self, config: CountdownConfig | dict[str, Any] | None = None, *, seed: int = 0):
        if not isinstance(config, CountdownConfig):
            config = CountdownConfig.model_validate(config or {})
        super().__init__(config, seed=seed)
        self._rng = random.Random(f"countdown-train:{seed}")
        self._eval: list[Task] | None = None

    def _draw(self, rng: random.Random) -> Task:
        total = rng.randint(1, self.config.max_operand)
        nums = [total]
        for _ in range(self.config.num_ops):
            n = rng.randint(0, min(total, self.config.max_operand))
            nums.append(n)
            total -= n
        return make_task(nums)

    def eval_tasks(self) -> list[Task]:
        """``eval_size`` distinct problems, the same for a given seed and config."""
        if self._eval is None:
            rng = random.Random(f"countdown-eval:{self.seed}:{self.config.max_operand}:{self.config.num_ops}")
            tasks: dict[str, Task] = {}
            for _ in range(_TRIES + 100 * self.config.eval_size):
                task = self._draw(rng)
                tasks.setdefault(task["prompt"], task)
                if len(tasks) == self.config.eval_size:
                    break
            else:
                raise ConfigError(f"countdown: only {len(tasks)} distinct problems for "
                                  f"eval_size={self.config.eval_size}; lower env.eval_size or raise "
                                  f"env.max_operand / env.num_ops")
            self._eval = list(tasks.values())
        return [dict(t) for t in self._eval]  # copies: callers cannot edit the cached split

    def sample(self, n: int) -> list[Task]:
        """``n`` training problems from a seeded stream, never a held-out one."""
        held_out = {t["prompt"] for t in self.eval_tasks()}
        out: list[Task] = []
        misses = 0
        while len(out) < n:
            task = self._draw(self._rng)
            if task["prompt"] in held_out:
                misses += 1
                if misses > _TRIES:
                    raise ConfigError("countdown: the held-out split covers (almost) every problem; "
                                      "lower env.eval_size or raise env.max_operand / env.num_ops")
                continue
            misses = 0
            out.append(task)
        return out

    def is_correct(self, task: Task, completion: str) -> bool:
        answer = final_answer(completion)
        return answer is not None and answer == task["answer"]

    def demonstration(self, task: Task) -> str:
        return task["solution"]

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss]}  # JSON-serializable

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
