"""The few collectives the loop needs, as no-ops in a single process.

Every rank draws the same global list of tasks and keeps its own slice; rewards are
gathered across ranks before advantages are normalized; logged metrics are averaged
over ranks so rank 0 reports the whole batch.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank_world() -> tuple[int, int]:
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def sample_seed(seed: int, step: int, index: int) -> int:
    """A seed for one sample, from the run seed, the step and the sample's global index."""
    digest = hashlib.blake2b(f"{seed}:{step}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def gather_rows(t: "torch.Tensor", pad: float = 0.0) -> "torch.Tensor":
    """Concatenate every rank's ``[B, ...]`` tensor along dim 0 (dim 1 padded to the longest)."""
    import torch

    dist = _dist()
    if dist is None:
        return t
    world = dist.get_world_size()
    if t.dim() > 1:
        width = torch.tensor([t.shape[1]], device=t.device)
        dist.all_reduce(width, op=dist.ReduceOp.MAX)
        if t.shape[1] < int(width):
            extra = torch.full((t.shape[0], int(width) - t.shape[1], *t.shape[2:]), pad, dtype=t.dtype, device=t.device)
            t = torch.cat([t, extra], 1)
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


def mean_over_ranks(metrics: dict[str, float]) -> dict[str, float]:
    """Average each metric over ranks (all ranks must pass the same keys)."""
    import torch

    dist = _dist()
    if dist is None or not metrics:
        return metrics
    keys = sorted(metrics)
    vals = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(vals)
    vals /= dist.get_world_size()
    return dict(zip(keys, vals.tolist()))


def sum_over_ranks(value: float) -> float:
    import torch

    dist = _dist()
    if dist is None:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)
