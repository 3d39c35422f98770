"""Best-of-n sampling: inference-time alignment with no training.

Each step samples N completions per prompt, scores them with the run's rewards and
measures, for n = 1, 2, 4, ... N, the expected reward (and gold accuracy, when the
environment can judge answers) of keeping the best of n, beside the analytic KL bound
``log n - (n-1)/n`` of the best-of-n policy to the sampling one. Nothing is optimized:
``minibatches`` yields no step, so the loop never calls ``loss``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import torch

from rlx.batch import Batch
from rlx.distributed import mean_over_ranks
from rlx.environment import TextEnvironment
from rlx.errors import RlxError
from rlx.objective import Objective
from rlx.plugins.best_of_n import estimator, report
from rlx.plugins.best_of_n.config import BestOfNConfig


def _sum_key(key: str) -> str:
    """A checkpoint's key for a running sum, as this version names it."""
    # checkpoints written before the sums had keys of their own used the logged names
    # ("bon/reward_at_4", "bon/reward_mean"); read them so such runs still resume whole
    match = re.fullmatch(r"bon/(\w+?)(?:_at_(\d+))?", key)
    if match is None:
        return key
    what, n = match.groups()
    return f"{what}@{int(n)}" if n else what


class BestOfN(Objective):

    def __init__(self, config: BestOfNConfig, *, env: Any = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        # gold answers come from the environment, not from a reward: best-of-n under a
        # process reward is judged on final answers the reward never sees
        self.judge = env.is_correct if isinstance(env, TextEnvironment) and env.checks_answers else None
        self.sizes = estimator.sizes(config.n)
        self.width = len(str(config.n))
        # per-step averages summed over steps (the run's curve), keyed "reward@4": apart
        # from the logged names, so renaming a metric never orphans a checkpoint's sums
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.examples: list[dict[str, Any]] = []

    @property
    def group_size(self) -> int:
        return self.config.n

    def prepare(self, batch: Batch, policy: Any, reference: Any) -> dict[str, float]:
        n_max = self.config.n
        total = batch["rewards"].sum(-1).detach().float().cpu()
        group = batch["group"].cpu()
        if len(total) % n_max or bool((group.view(-1, n_max) != group.view(-1, n_max)[:, :1]).any()):
            raise RlxError(f"best-of-n expects {n_max} contiguous samples per prompt; the batch has {len(total)} "
                           "rows not grouped that way")
        rewards = total.view(-1, n_max)
        tasks, completions = batch.meta["task"], batch.meta["completion"]
        correct = None
        if self.judge is not None:
            correct = torch.tensor([bool(self.judge(t, c)) for t, c in zip(tasks, completions)]).view(-1, n_max)
        reward_at, accuracy_at = estimator.best_of_n(rewards, self.sizes, correct)
        step = {f"reward@{n}": float(v) for n, v in zip(self.sizes, reward_at.mean(0))}
        if correct is not None:
            step.update({f"accuracy@{n}": float(v) for n, v in zip(self.sizes, accuracy_at.mean(0))})
            pass_at = estimator.pass_at(correct, self.sizes).mean(0)
            step.update({f"pass@{n}": float(v) for n, v in zip(self.sizes, pass_at)})
        step["reward_mean"] = float(rewards.mean())
        # every rank holds as many prompts, so the mean of rank means is the batch mean;
        # summing that keeps the final curve over all ranks' prompts, not rank 0's alone
        step = mean_over_ranks(step)
        for k, v in step.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.examples = self._examples(batch, rewards, correct)
        # MLflow's runs table shows a metric's last value: logging the running mean under
        # bon/ makes that value the same all-steps average as best_of_n.json and the plot
        metrics = {f"bon/{self.metric_name(k)}": self.sums[k] / self.steps for k in step}
        metrics.update({f"bon_step/{self.metric_name(k)}": v for k, v in step.items()})
        metrics.update({f"bon/{self.metric_name(f'kl_bound@{n}')}": estimator.kl_bound(n) for n in self.sizes})
        return metrics

    def metric_name(self, key: str) -> str:
        """``reward@4`` -> ``reward_at_04`` for N = 16: MLflow names cannot hold ``@`` and
        sort as strings, so n is zero-padded to the digits of N to sort numerically."""
        what, at, n = key.partition("@")
        return f"{what}_at_{int(n):0{self.width}d}" if at else key

    def _examples(self, batch: Batch, rewards: torch.Tensor, correct: torch.Tensor | None) -> list[dict[str, Any]]:
        """The first prompts' kept completion: the last in the stable ascending order."""
        n_max = self.config.n
        best = torch.sort(rewards, dim=-1, stable=True).indices[:, -1]
        rows = []
        for p in range(min(self.config.examples, len(rewards))):
            i = p * n_max + int(best[p])
            rows.append({"prompt": batch.meta["prompt"][i], "completion": batch.meta["completion"][i],
                         "reward": float(rewards[p, best[p]]), "group_mean_reward": float(rewards[p].mean()),
                         "correct": bool(correct[p, best[p]]) if correct is not None else None})
        return rows

    def minibatches(self, batch: Batch) -> Iterator[Batch]:
        return iter(())

    def loss(self, policy: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise RlxError("best-of-n trains nothing: it yields no minibatch, so loss() should never be called")

    def curve(self) -> list[dict[str, float | int | None]]:
        """One row per n: the KL bound and the reward, accuracy and pass@n averaged over steps."""
        def mean(key: str) -> float | None:
            return self.sums[key] / self.steps if key in self.sums else None

        return [{"n": n, "kl_bound": estimator.kl_bound(n), "reward": mean(f"reward@{n}"),
                 "accuracy": mean(f"accuracy@{n}"), "pass": mean(f"pass@{n}")} for n in self.sizes]

    def artifacts(self, folder: Path) -> None:
        if self.steps:
            report.write(folder, self.curve(), self.examples, n_max=self.config.n, steps=self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "steps": self.steps, "examples": list(self.examples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = {_sum_key(k): float(v) for k, v in state.get("sums", {}).items()}
        self.steps = int(state.get("steps", 0))
        self.examples = list(state.get("examples", []))
