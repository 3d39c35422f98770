"""RewardSource: scores a batch.

An *outcome* source returns one number per sample, ``[B]``; a *process* source returns
``[B, T]`` with a score at the last token of each step and NaN everywhere else. NaN for a
whole sample means "not applicable". Several sources compose with weights; ``combine``
places every score at its position so objectives see one ``rewards`` tensor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import torch

    from rlx.batch import Batch
    from rlx.environment import Environment


class RewardConfig(BaseModel):
    """Fields every reward source has; plugins subclass it."""

    weight: float = Field(1.0, description="Weight of this source when several are combined.")


class RewardSource(ABC):
    """Required: ``score``. Its registration names its granularity (``outcome`` or
    ``process``), which other plugins read before building it (an ensemble takes outcome
    members only); what counts at run time is the shape ``score`` returns."""

    def __init__(self, config: BaseModel, *, env: "Environment | None" = None, name: str = ""):
        self.config = config
        self.env = env
        self.name = name or type(self).__name__.lower()

    @property
    def weight(self) -> float:
        return float(getattr(self.config, "weight", 1.0))

    @abstractmethod
    def score(self, batch: "Batch") -> "torch.Tensor":
        """``[B]`` (outcome) or ``[B, T]`` with NaN off-step (process)."""

    def summarize(self, scores: "torch.Tensor") -> "torch.Tensor":
        """One number per sample for logging ``reward/<name>``; process sources override."""
        import torch

        return scores if scores.dim() == 1 else torch.nansum(scores, dim=-1)

    def metrics(self) -> dict[str, float]:
        """Numbers about the batch ``score`` saw last, beside the reward itself (how often a
        scorer's rule fired, what share of completions look like a hack), logged each step
        as ``reward/<name>/<key>``. Default: none."""
        return {}


def reward_events(rewards: "torch.Tensor", placed: "torch.Tensor") -> "torch.Tensor":
    """``[B, T]`` bool: where a reward event is, i.e. placed and a number.

    NaN means "not applicable" (``rlx.reward``): a NaN score is no event at all, so it
    neither counts in any statistic nor adds to any return. ``combine`` already leaves
    NaN scores unplaced; this also covers rewards built by hand with NaN where placed."""
    import torch

    return placed & ~torch.isnan(rewards)


def applicable_rows(rewards: "torch.Tensor", placed: "torch.Tensor") -> "torch.Tensor":
    """``[B]`` bool: rows with at least one reward event. A row whose every score is NaN
    (or that has none) is not applicable: an objective gives it advantage 0 and leaves it
    out of every baseline and normalization (the built-in policy-gradient families do). A
    row with some NaN events and some numbers is applicable, on its numbers alone."""
    return reward_events(rewards, placed).any(-1)


def combine(sources: list[RewardSource], batch: "Batch") -> dict[str, Any]:
    """Score ``batch`` with every source and write ``rewards``/``reward_mask``.

    Outcome scores land on each sample's last completion token. Returns per-source
    per-sample summaries for logging."""
    import torch

    mask = batch["mask"]
    B, T = mask.shape
    rewards = torch.zeros(B, T, dtype=torch.float32, device=mask.device)
    placed = torch.zeros(B, T, dtype=torch.bool, device=mask.device)
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rows = torch.arange(B, device=mask.device)
    summaries: dict[str, torch.Tensor] = {}
    for src in sources:
        s = src.score(batch).to(device=mask.device, dtype=torch.float32)
        if s.dim() == 1:
            if s.shape != (B,):
                raise ValueError(f"reward '{src.name}' returned shape {tuple(s.shape)}, expected ({B},)")
            dense = torch.full((B, T), float("nan"), device=mask.device)
            dense[rows, last] = s
        else:
            if s.shape != (B, T):
                raise ValueError(f"reward '{src.name}' returned shape {tuple(s.shape)}, expected ({B}, {T})")
            dense = s
        here = ~torch.isnan(dense)
        rewards = rewards + torch.where(here, dense, torch.zeros_like(dense)) * src.weight
        placed |= here
        summaries[src.name] = src.summarize(s)
    batch["rewards"] = rewards
    batch["reward_mask"] = placed
    return summaries
