"""Best-of-n from N samples without replacement: unbiased order-statistics estimates.

With a prompt's N rewards sorted ascending r_(1) <= ... <= r_(N), the i-th smallest is
the maximum of exactly C(i-1, n-1) of the C(N, n) subsets of size n, so
``E[max of n] = sum_i C(i-1, n-1) / C(N, n) * r_(i)``: every subset counted once, no
resampling noise. A stable sort fixes which of several tied samples a subset keeps (the
later one), and the same weights on the samples' correctness give best-of-n accuracy
under that choice.
"""

from __future__ import annotations

import math

import torch


def sizes(n_max: int) -> list[int]:
    """The n measured: powers of two up to ``n_max``, and ``n_max`` itself."""
    out = [1 << k for k in range(n_max.bit_length())]
    return out if out[-1] == n_max else out + [n_max]


def kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || policy): log n - (n-1)/n (Beirami et al. 2024)."""
    return math.log(n) - (n - 1) / n


def selection_weights(n_max: int, ns: list[int]) -> torch.Tensor:
    """``[len(ns), n_max]``: the probability that the sample of ascending rank i is the
    best of a uniformly drawn n-subset."""
    # Python integers keep C(N, n) exact for any N; one division rounds once
    return torch.tensor([[math.comb(i, n - 1) / math.comb(n_max, n) for i in range(n_max)] for n in ns],
                        dtype=torch.float64)


def best_of_n(rewards: torch.Tensor, ns: list[int],
              correct: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per prompt (rows of ``[P, N]`` ``rewards``), the expected reward of best-of-n for
    each n in ``ns``, and the expected correctness of the kept sample: ``[P, len(ns)]``."""
    order = torch.sort(rewards, dim=-1, stable=True).indices
    weights = selection_weights(rewards.shape[-1], ns).to(rewards.device).T
    reward_at = rewards.double().gather(-1, order) @ weights
    accuracy_at = correct.double().gather(-1, order) @ weights if correct is not None else None
    return reward_at, accuracy_at


def pass_at(correct: torch.Tensor, ns: list[int]) -> torch.Tensor:
    """``[P, len(ns)]``: the chance that at least one of n samples drawn from the N is
    correct, ``1 - C(N - c, n) / C(N, n)`` with c correct: best-of-n with a perfect judge."""
    n_max = correct.shape[-1]
    table = torch.tensor([[1 - math.comb(n_max - c, n) / math.comb(n_max, n) for n in ns] for c in range(n_max + 1)],
                         dtype=torch.float64)
    return table[correct.long().sum(-1).cpu()].to(correct.device)
