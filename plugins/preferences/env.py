"""``preferences``: (prompt, chosen, rejected) pairs, from a file or built from arithmetic.

Files go through the ``datasets`` library (JSONL, JSON, CSV, parquet; local paths), so
what loads in a Hugging Face pipeline loads here; a record missing a field or holding a
non-string is reported with its file and line (row for parquet). The last ``eval_size``
rows are held out. Without a file, pairs are made from the ``arithmetic`` environment:
the gold solution against one with a mistake (``problems.flawed_solution``: a slip
carried through, a forgotten term, a miscopied number or an early answer), held-out pairs on its held-out problems; the generation
evaluation (``eval/accuracy``) of arithmetic is then available too (``answer_tasks``). A
file's pairs have no checker: ``answer_tasks`` is None, and the held-out metric is the
objective's own (dpo: ``eval/preference_accuracy``). The arithmetic source is why the
registration declares ``requires=("arithmetic",)``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rlx.datafiles import ShuffledPasses, load_records
from rlx.environment import DatasetInfo, PreferenceEnvironment, Task, TextEnvironment, digest_of, file_digest, rng_state, set_rng_state
from rlx.errors import UsageError

from .config import PreferencesConfig

_SYNTHETIC_SOURCE = "rlx preferences generator (arithmetic: gold solution vs one mistake)"
_SYNTHETIC_COLUMNS = ("prompt", "chosen", "rejected", "answer")


class PreferencesEnv(PreferenceEnvironment):

    def __init__(self, config: PreferencesConfig | dict[str, Any] | None = None, *, seed: int = 0):
        if not isinstance(config, PreferencesConfig):
            config = PreferencesConfig.model_validate(config or {})
        super().__init__(config, seed=seed)
        self._rng = random.Random(f"preferences:{seed}")
        c = config
        if c.path is None:
            from rlx.plugins.arithmetic.env import ArithmeticEnv

            # The held-out pairs follow eval_seed, not the run seed, so the seeds of one
            # configuration are compared on the same pairs (the arithmetic env's own rule).
            self.arithmetic: Any = ArithmeticEnv({"eval_size": c.eval_size, "eval_seed": c.eval_seed}, seed=seed)
            self._passes: ShuffledPasses | None = None
            held_rng = random.Random(f"preferences-eval:{c.eval_seed}")
            self._eval = [self._pair(t, held_rng, i, c.flaws) for i, t in enumerate(self.arithmetic.eval_tasks())]
        else:
            self.arithmetic = None
            pairs = load_records(c.path, {"prompt": c.prompt_field, "chosen": c.chosen_field,
                                          "rejected": c.rejected_field}, non_empty=("chosen", "rejected"))
            if len(pairs) <= c.eval_size:
                raise UsageError(f"env.path '{c.path}' has {len(pairs)} pairs, not more than env.eval_size="
                                 f"{c.eval_size}; lower env.eval_size so some are left to train on")
            self._passes, self._eval = ShuffledPasses(pairs[:-c.eval_size], f"preferences:{seed}"), pairs[-c.eval_size:]

    @staticmethod
    def _pair(task: Task, rng: random.Random, index: int, flaws: list[str]) -> Task:
        from rlx.plugins.arithmetic.problems import flawed_solution

        return {"prompt": task["prompt"], "chosen": task["solution"], "rejected": flawed_solution(task, rng, flaws),
                "id": index, "answer": task["answer"]}

    def sample(self, n: int) -> list[Task]:
        """``n`` training pairs: fresh synthetic ones, or the file's in shuffled passes."""
        if self._passes is None:
            return [self._pair(t, self._rng, -1, self.config.flaws) for t in self.arithmetic.sample(n)]
        return self._passes.take(n)

    def eval_pairs(self) -> list[Task]:
        return list(self._eval)

    def datasets(self) -> list[DatasetInfo]:
        """Training pairs (a file, by its bytes; synthetic ones, by their settings and the
        run seed) and the held-out pairs, by their content, so that runs evaluated on the
        same pairs share that digest whatever their seeds or the rest of the file."""
        c = self.config
        held = digest_of([[p["prompt"], p["chosen"], p["rejected"]] for p in self._eval])
        if self._passes is None:
            settings = {"flaws": list(c.flaws), **self.arithmetic.config.model_dump()}
            return [
                DatasetInfo(name="preferences-train", context="training", digest=digest_of(settings, self.seed),
                            source=_SYNTHETIC_SOURCE, source_type="procedural", columns=_SYNTHETIC_COLUMNS,
                            settings=settings),
                DatasetInfo(name="preferences-eval", context="evaluation", digest=held, source=_SYNTHETIC_SOURCE,
                            source_type="procedural", rows=len(self._eval), columns=_SYNTHETIC_COLUMNS,
                            settings=settings),
            ]
        file = Path(c.path)
        source, columns = str(file.resolve()), (c.prompt_field, c.chosen_field, c.rejected_field)
        return [
            DatasetInfo(name=f"{file.stem}-train", context="training", digest=file_digest(file), source=source,
                        source_type="local", rows=len(self._passes.rows), columns=columns),
            DatasetInfo(name=f"{file.stem}-eval", context="evaluation", digest=held, source=source,
                        source_type="local", rows=len(self._eval), columns=columns),
        ]

    def answer_tasks(self) -> TextEnvironment | None:
        """The synthetic source's arithmetic problems (the pairs' prompts), whose answers
        can be checked; a file's pairs have none."""
        return self.arithmetic

    def state_dict(self) -> dict[str, Any]:
        if self._passes is not None:
            return self._passes.state_dict()
        return {"rng": rng_state(self._rng), "arithmetic": self.arithmetic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._passes is not None:
            self._passes.load_state_dict(state)
        else:
            set_rng_state(self._rng, state["rng"])
            self.arithmetic.load_state_dict(state["arithmetic"])
