"""``prompts``: prompts from a file, with optional reference answers, for any online
objective (grpo, ppo, rloo, reinforce, ...).

A completion is correct when its final answer equals the reference: the text after its
last ``A:`` if it has one (the format of the built-in tasks), else the whole completion,
compared after stripping and case-folding. Without an answer column there is no
verifier and no generation evaluation; use a learned reward then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlx.datafiles import ShuffledPasses, load_records
from rlx.environment import DatasetInfo, Task, TextEnvironment, digest_of, file_digest
from rlx.errors import UsageError

from .config import PromptsConfig


def final_answer(completion: str) -> str:
    text = completion.rsplit("A:", 1)[-1] if "A:" in completion else completion
    return text.strip().casefold()


class PromptsEnv(TextEnvironment):

    def __init__(self, config: PromptsConfig | dict[str, Any], *, seed: int = 0):
        if not isinstance(config, PromptsConfig):
            config = PromptsConfig.model_validate(config)
        super().__init__(config, seed=seed)
        c = config
        rows = load_records(c.path, {"prompt": c.prompt_field}, {"answer": c.answer_field}, non_empty=("prompt",))
        if len(rows) <= c.eval_size:
            raise UsageError(f"env.path '{c.path}' has {len(rows)} prompts, not more than env.eval_size="
                             f"{c.eval_size}; lower env.eval_size so some are left to train on")
        split = len(rows) - c.eval_size
        self._train, self._eval = rows[:split], rows[split:]
        self.has_answers = "answer" in rows[0]
        self._passes = ShuffledPasses(self._train, f"prompts:{seed}")

    @property
    def checks_answers(self) -> bool:
        return self.has_answers

    def sample(self, n: int) -> list[Task]:
        """``n`` training prompts, in shuffled passes over the file's training rows."""
        return self._passes.take(n)

    def eval_tasks(self) -> list[Task]:
        return [dict(t) for t in self._eval] if self.has_answers else []

    def datasets(self) -> list[DatasetInfo]:
        """The file's training rows, by the file's bytes, and its held-out rows, by their
        content, so that runs evaluated on the same rows share that digest even when the
        training part of the file differs. Without answers (or held-out rows) nothing is
        evaluated, so only the training entry is given."""
        c = self.config
        file = Path(c.path)
        source = str(file.resolve())
        columns = (c.prompt_field, c.answer_field) if self.has_answers else (c.prompt_field,)
        out = [DatasetInfo(name=f"{file.stem}-train", context="training", digest=file_digest(file), source=source,
                           source_type="local", rows=len(self._train), columns=columns)]
        if self.has_answers and self._eval:
            held = digest_of([[t["prompt"], t["answer"]] for t in self._eval])
            out.append(DatasetInfo(name=f"{file.stem}-eval", context="evaluation", digest=held, source=source,
                                   source_type="local", rows=len(self._eval), columns=columns))
        return out

    def is_correct(self, task: Task, completion: str) -> bool:
        if "answer" not in task:
            raise UsageError("env 'prompts' has no reference answers (no answer column); the verifier needs them")
        return final_answer(completion) == str(task["answer"]).strip().casefold()

    def state_dict(self) -> dict[str, Any]:
        return self._passes.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._passes.load_state_dict(state)
