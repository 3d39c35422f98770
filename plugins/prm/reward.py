"""PRM: scores each step, places the score on the step's last token.

The two refinements are from "On Designing Effective RL Reward at Training Time for LLM
Reasoning" (Gao et al., 2024): both keep a policy from farming reward by writing more
steps. ``clip`` makes every step reward <= 0; ``delta`` makes the sum of step rewards
from any step on equal that step's own score.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rlx.batch import Batch
from rlx.environment import TextEnvironment
from rlx.errors import UsageError
from rlx.reward import RewardSource


def refine(scores: list[float], how: str, threshold: float = 0.5) -> list[float]:
    if how == "clip":
        return [min(s - threshold, 0.0) for s in scores]
    if how == "delta":
        return [scores[i] - scores[i + 1] for i in range(len(scores) - 1)] + scores[-1:]
    return list(scores)


def aggregate(scores: list[float], how: str) -> float:
    if not scores:
        return math.nan
    if how == "min":
        return min(scores)
    if how == "product":
        return math.prod(scores)
    if how == "last":
        return scores[-1]
    return sum(scores) / len(scores)


def token_index(token_ends: list[int], char_end: int) -> int:
    """The token that holds the character just before ``char_end``."""
    for i, end in enumerate(token_ends):
        if end >= char_end:
            return i
    return max(len(token_ends) - 1, 0)


class PRM(RewardSource):
    def __init__(self, config: Any, *, env: Any = None, name: str = "prm"):
        super().__init__(config, env=env, name=name)
        self.granularity = config.granularity
        self.scorer: Any = None
        if config.backend == "model":
            from rlx.plugins.shared.scorers import Scorer

            if not config.model:
                raise UsageError(f"reward '{name}' with backend 'model' needs one: --set reward.{name}.model=<the "
                                 "folder an 'rlx run --objective prm-train' run saved>")
            self.scorer = Scorer(config.model, "token", f"reward.{name}.model", config.score_chunk)
        else:
            checker = getattr(type(env), "check_steps", None)
            if checker is None or checker is TextEnvironment.check_steps:
                raise UsageError(f"reward 'prm' with backend 'rule' needs an environment with a step checker "
                                 f"('{type(env).__name__}' has none); use --env arithmetic, or backend 'model'")
        self._summary: torch.Tensor | None = None
        self._repeat_frac = math.nan

    def step_scores(self, task: dict, completion: str) -> tuple[list[int], list[float]]:
        verdicts = self.env.check_steps(task, completion) or []
        if not verdicts:  # nothing that reads as a step: one failed step over the whole text
            return [len(completion)], [self.config.incorrect]
        ends = [v.end for v in verdicts]
        return ends, [self.config.correct if v.correct else self.config.incorrect for v in verdicts]

    def all_step_scores(self, batch: Batch) -> list[tuple[list[int], list[float]]]:
        """Per sample, where each step ends (characters) and its score: the rule checker's
        verdicts, or the learned model's probability that the step is right, in one batch."""
        texts = batch.meta["completion"]
        if self.scorer is None:
            return [self.step_scores(t, c) for t, c in zip(batch.meta["task"], texts)]
        from rlx.plugins.shared.scorers import step_ends

        # no step at all scores as one failed step over the whole text, as with the rule
        ends = [step_ends(c) or [len(c)] for c in texts]
        probs = self.scorer.steps(batch.meta["prompt"], texts, ends)
        return [(e, p if step_ends(c) else [self.config.incorrect]) for e, p, c in zip(ends, probs, texts)]

    def score(self, batch: Batch) -> torch.Tensor:
        cfg = self.config
        B, T = batch["mask"].shape
        dense = torch.full((B, T), math.nan)
        summary = []
        for i, ((ends, scores), ends_tok) in enumerate(zip(self.all_step_scores(batch), batch.meta["token_ends"])):
            summary.append(aggregate(scores, cfg.aggregation))
            if cfg.granularity == "process":
                for end, s in zip(ends, refine(scores, cfg.refinement, cfg.clip_threshold)):
                    j = token_index(ends_tok, end)
                    # two steps ending on one token (degenerate text) add up
                    dense[i, j] = s if math.isnan(dense[i, j]) else dense[i, j] + s
        self._summary = torch.tensor(summary)
        texts = batch.meta["completion"]
        self._repeat_frac = sum(map(repeats_a_step, texts)) / max(len(texts), 1)
        return dense if cfg.granularity == "process" else self._summary.clone()

    def summarize(self, scores: torch.Tensor) -> torch.Tensor:
        return self._summary if self._summary is not None else super().summarize(scores)

    def metrics(self) -> dict[str, float]:
        """``repeat_frac``: the share of completions that repeat a step verbatim, the way a
        policy farms a summed process reward by writing a well-scored step again (Gao et
        al., 2024); what ``clip`` and ``delta`` are meant to make pointless."""
        return {"repeat_frac": self._repeat_frac}


def repeats_a_step(completion: str) -> bool:
    """Whether some step (a non-empty line, surrounding spaces ignored) repeats an earlier
    step of the same completion verbatim."""
    seen: set[str] = set()
    for line in completion.split("\n"):
        step = line.strip()
        if step in seen:
            return True
        if step:
            seen.add(step)
    return False
