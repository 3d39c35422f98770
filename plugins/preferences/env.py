"""``preferences``: (prompt, chosen, rejected) pairs, from a file or built from arithmetic.

Files go through the ``datasets`` library (JSONL, JSON, CSV, parquet; local paths), so
what loads in a Hugging Face pipeline loads here; a record missing a field or holding a
non-string is reported with its file and line (row for parquet). The last ``eval_size``
rows are held out. Without a file, pairs are made from the ``arithmetic`` environment:
the gold solution against the same solution with one arithmetic slip carried through
(``problems.flawed_solution``), held-out pairs on its held-out problems; the generation
evaluation (``eval/accuracy``) of arithmetic is then available too.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rlx.environment import Environment, Task
from rlx.errors import UsageError

from .config import PreferencesConfig

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_pairs(path: str, prompt: str, chosen: str, rejected: str) -> list[Task]:
    """Every record of ``path`` as a pair, checked."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"env.path '{path}' is not a file; give a .jsonl, .json, .csv or .parquet file of pairs")
    fmt = _FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise UsageError(f"env.path '{path}': unknown format '{file.suffix}'; use .jsonl, .json, .csv or .parquet")
    import datasets

    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset(fmt, data_files=str(file), split="train")
    except Exception as exc:  # the library's own parse error, with its cause
        raise UsageError(f"env.path '{path}' could not be read as {fmt}: {str(exc).splitlines()[0]}") from None
    missing = [f for f in (prompt, chosen, rejected) if f not in rows.column_names]
    if missing:
        raise UsageError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(rows.column_names)}); "
                         "set env.prompt_field / env.chosen_field / env.rejected_field")
    where = "line" if fmt in ("json", "csv") else "row"
    offset = 2 if fmt == "csv" else 1  # a CSV's first line is its header
    pairs = []
    for i, rec in enumerate(rows):
        for f in (prompt, chosen, rejected):
            if not isinstance(rec[f], str) or (f != prompt and not rec[f]):
                raise UsageError(f"{path}:{where} {i + offset}: field '{f}' is {rec[f]!r}, expected a non-empty string")
        pairs.append({"prompt": rec[prompt], "chosen": rec[chosen], "rejected": rec[rejected], "id": i})
    if not pairs:
        raise UsageError(f"env.path '{path}' holds no records")
    return pairs


class PreferencesEnv(Environment):
    kind = "preference"

    def __init__(self, config: PreferencesConfig | dict[str, Any] | None = None, *, seed: int = 0):
        if not isinstance(config, PreferencesConfig):
            config = PreferencesConfig.model_validate(config or {})
        super().__init__(config, seed=seed)
        self._rng = random.Random(f"preferences:{seed}")
        c = config
        if c.path is None:
            from rlx.plugins.arithmetic.env import ArithmeticEnv

            self.arithmetic: Any = ArithmeticEnv({"eval_size": c.eval_size}, seed=seed)
            self._train: list[Task] | None = None
            held_rng = random.Random(f"preferences-eval:{seed}")
            self._eval = [self._pair(t, held_rng, i) for i, t in enumerate(self.arithmetic.eval_tasks())]
        else:
            self.arithmetic = None
            pairs = load_pairs(c.path, c.prompt_field, c.chosen_field, c.rejected_field)
            if len(pairs) <= c.eval_size:
                raise UsageError(f"env.path '{c.path}' has {len(pairs)} pairs, not more than env.eval_size="
                                 f"{c.eval_size}; lower env.eval_size so some are left to train on")
            self._train, self._eval = pairs[:-c.eval_size], pairs[-c.eval_size:]
        self._order: list[int] = []

    @staticmethod
    def _pair(task: Task, rng: random.Random, index: int) -> Task:
        from rlx.plugins.arithmetic.problems import flawed_solution

        return {"prompt": task["prompt"], "chosen": task["solution"], "rejected": flawed_solution(task, rng),
                "id": index, "answer": task["answer"]}

    def sample(self, n: int) -> list[Task]:
        """``n`` training pairs: fresh synthetic ones, or the file's in shuffled passes."""
        if self._train is None:
            drawn = self.arithmetic.sample(n)
            return [self._pair(t, self._rng, -1) for t in drawn]
        out = []
        while len(out) < n:
            if not self._order:
                self._order = list(range(len(self._train)))
                self._rng.shuffle(self._order)
            out.append(self._train[self._order.pop()])
        return out

    def eval_pairs(self) -> list[Task]:
        return list(self._eval)

    # generation evaluation, for the synthetic source: arithmetic's held-out problems
    @property
    def generation_eval(self) -> bool:
        return self.arithmetic is not None

    def eval_tasks(self) -> list[Task]:
        return self.arithmetic.eval_tasks() if self.arithmetic is not None else []

    def is_correct(self, task: Task, completion: str) -> bool:
        return self.arithmetic.is_correct(task, completion)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        state: dict[str, Any] = {"rng": [version, list(internal), gauss], "order": list(self._order)}
        if self.arithmetic is not None:
            state["arithmetic"] = self.arithmetic.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._order = list(state.get("order", []))
        if self.arithmetic is not None and "arithmetic" in state:
            self.arithmetic.load_state_dict(state["arithmetic"])
