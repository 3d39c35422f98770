"""The ``text`` and ``preference`` kinds: batches of completions for LM policies.

Batch keys (both kinds): ``input_ids``, ``attention_mask`` ``[B, L]`` (prompt, left-padded,
then completion), ``actions`` and ``mask`` ``[B, T]`` (completion tokens and which count),
``group`` ``[B]`` (index of the task each row answers, global over processes); meta
``task``, ``prompt``, ``completion``, ``token_ends``. A preference batch holds ``2n`` rows:
each pair's prompt with its ``chosen`` completion, then each with its ``rejected`` one.
"""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.distributed import rank_world, sample_seed
from rlx.environment import PreferenceEnvironment, Task, TextEnvironment
from rlx.errors import RlxError
from rlx.kind import EnvironmentKind, Evaluation, KindContext
from rlx.policy import LMPolicy


class _LMKind(EnvironmentKind):
    """What both LM kinds share: the task slice of each process, throughput metrics and
    the samples table."""

    environment: type = TextEnvironment

    def __init__(self, config: Any = None, *, context: KindContext):
        super().__init__(config, context=context)
        self.expect(self.environment, LMPolicy)
        self.batch_size = context.cfg.run.batch_size

    def _tasks(self) -> tuple[list[Task], int]:
        """This process's tasks and the global index of its first: every rank draws the
        same global list and keeps its slice, so the split across ranks changes nothing."""
        rank, world = rank_world()
        n = self.batch_size
        tasks = self.env.sample(n * world)[rank * n:(rank + 1) * n]
        if len(tasks) < n:
            raise RlxError(f"environment '{type(self.env).__name__}' gave {len(tasks)} tasks where {n} were asked for "
                           "(an empty or exhausted dataset?); check its data or lower run.batch_size")
        return tasks, rank * n

    def _own(self, tasks: list[Task], first: int, step: int) -> Batch:
        """``data = "own"``: the objective's ``make_batch``; rows may be several per task,
        ``meta["of_task"]`` says which task each row is from."""
        seeds = [sample_seed(self.context.seed, step, first + i) for i in range(len(tasks))]
        batch = self.objective.make_batch(self.env, self.policy, tasks, seeds=seeds)
        of_task = batch.meta.pop("of_task", list(range(len(tasks))))
        return _finish(batch, [tasks[i] for i in of_task], [first + i for i in of_task])

    def step_metrics(self, batch: Batch, seconds: float) -> dict[str, float]:
        tokens = float(batch["mask"].sum())
        return {"perf/tokens_per_s": tokens / seconds, "completion/length": tokens / max(len(batch), 1)}

    def _judge(self) -> TextEnvironment | None:
        """The environment that checks answers, if any."""
        return self.env if self.env.checks_answers else None

    def train_samples(self, batch: Batch, step: int) -> list[dict[str, Any]]:
        if "completion" not in batch.meta:
            return []
        task, text, judge = batch.meta["task"][0], batch.meta["completion"][0], self._judge()
        return [{"prompt": batch.meta["prompt"][0], "completion": text,
                 "correct": bool(judge.is_correct(task, text)) if judge is not None else None}]

    def evaluate(self) -> Evaluation:
        judge = self._judge()
        if judge is None:
            return Evaluation()
        cfg = self.context.cfg
        return greedy_accuracy(judge, self.policy, max_new_tokens=cfg.generation.max_new_tokens,
                               keep=cfg.run.samples_to_log)


class TextKind(_LMKind):
    """Prompt -> completion tasks. ``rollouts``: ``group_size`` sampled completions per
    task, each drawn with its own seed so resumes and process splits sample the same
    text; ``demonstrations``: the environment's gold completions; ``own``: the objective's."""

    def collect(self, step: int) -> Batch:
        tasks, first = self._tasks()
        data = self.context.data
        if data == "demonstrations":
            batch = self.policy.encode([t["prompt"] for t in tasks], [self.env.demonstration(t) for t in tasks])
            return _finish(batch, tasks, [first + i for i in range(len(tasks))])
        if data == "own":
            return self._own(tasks, first, step)
        g = self.objective.group_size
        gen = self.context.cfg.generation
        rows = [t for t in tasks for _ in range(g)]
        seeds = [sample_seed(self.context.seed, step, first * g + i) for i in range(len(rows))]
        batch = self.policy.generate([t["prompt"] for t in rows], max_new_tokens=gen.max_new_tokens,
                                     temperature=gen.temperature, min_new_tokens=gen.min_new_tokens, seeds=seeds)
        return _finish(batch, rows, [first + i // g for i in range(len(rows))])


class PreferenceKind(_LMKind):
    """(prompt, chosen, rejected) pairs. ``preferences``: the pairs encoded as ``2n`` rows
    (``encode_pairs``); ``own``: the objective's batch (a reward-model trainer)."""

    environment = PreferenceEnvironment

    def collect(self, step: int) -> Batch:
        tasks, first = self._tasks()
        if self.context.data == "own":
            return self._own(tasks, first, step)
        batch = encode_pairs(self.policy, tasks)
        n = len(tasks)
        return _finish(batch, batch.meta["task"], [first + i % n for i in range(2 * n)])

    def _judge(self) -> TextEnvironment | None:
        answers = self.env.answer_tasks()
        return answers if answers is not None and answers.checks_answers else None


def _finish(batch: Batch, tasks: list[Task], group: list[int]) -> Batch:
    batch.meta["task"] = tasks
    batch["group"] = torch.tensor(group, device=batch["mask"].device)
    return batch


def encode_pairs(policy: LMPolicy, pairs: list[Task]) -> Batch:
    """Preference pairs as ``2n`` rows: each prompt with its ``chosen`` completion, then
    each with its ``rejected`` one; ``meta["task"]`` names the pair of every row."""
    prompts = [p["prompt"] for p in pairs]
    batch = policy.encode(prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    batch.meta["task"] = list(pairs) + list(pairs)
    return batch


def greedy_accuracy(env: TextEnvironment, policy: LMPolicy, *, max_new_tokens: int, chunk: int = 256,
                    keep: int = 8) -> Evaluation:
    """``eval/accuracy`` of greedy completions on the held-out split (and their mean
    length), with the first ``keep`` generations as sample rows."""
    tasks: list[Task] = env.eval_tasks()
    if not tasks:
        raise RlxError(f"environment '{type(env).__name__}' has an empty held-out split; check its data or eval_size")
    correct = 0
    rows: list[dict[str, Any]] = []
    lengths = 0.0
    for start in range(0, len(tasks), chunk):
        part = tasks[start:start + chunk]
        batch = policy.generate([t["prompt"] for t in part], max_new_tokens=max_new_tokens, greedy=True)
        lengths += float(batch["mask"].sum())
        for t, text in zip(part, batch.meta["completion"]):
            ok = env.is_correct(t, text)
            correct += ok
            if len(rows) < keep:
                rows.append({"prompt": t["prompt"], "completion": text, "correct": bool(ok)})
    n = max(len(tasks), 1)
    return Evaluation({"eval/accuracy": correct / n, "eval/completion_length": lengths / n}, rows)
