"""DPO's pairwise losses, as functions of the policy-to-reference log-ratios of the
chosen and rejected completions.

- Divergences (Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference
  Optimization with Diverse Divergence Constraints"): the implicit reward is
  ``beta * f'(u)`` with ``u = pi / pi_ref`` and ``f`` the divergence's generator, so the
  pair's logit is ``f'(u_c) - f'(u_r)``:
  reverse KL ``f'(u) = log u + 1`` (standard DPO), forward KL ``f'(u) = -1/u``,
  Jensen-Shannon ``f'(u) = log(2u / (1 + u))``, alpha-divergence
  ``f'(u) = (1 - u^-alpha) / alpha``. Constants cancel in the difference.
- Loss types on that logit ``h``: ``sigmoid`` ``-log sigmoid(beta h)`` with label
  smoothing ``eps`` (conservative DPO: ``-(1-eps) log s(beta h) - eps log s(-beta h)``),
  ``hinge`` ``max(0, 1 - beta h)`` (SLiC), ``ipo`` ``(h - 1/(2 beta))^2`` (Azar et al.).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

Divergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]
LossType = Literal["sigmoid", "ipo", "hinge"]

_MAX_EXP = 30.0  # exp of larger log-ratios would overflow float32 long before it means anything


def _exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.clamp(max=_MAX_EXP))


def pair_logits(chosen: torch.Tensor, rejected: torch.Tensor, divergence: Divergence = "reverse_kl",
                alpha: float = 0.5) -> torch.Tensor:
    """``f'(u_c) - f'(u_r)`` from the log-ratios ``log pi/pi_ref`` of each completion."""
    if divergence == "reverse_kl":
        return chosen - rejected
    if divergence == "forward_kl":
        return _exp(-rejected) - _exp(-chosen)
    if divergence == "js":
        return (chosen - F.softplus(chosen)) - (rejected - F.softplus(rejected))
    if divergence == "alpha":
        return (_exp(-alpha * rejected) - _exp(-alpha * chosen)) / alpha
    raise ValueError(f"unknown divergence '{divergence}'")


def pair_loss(logits: torch.Tensor, loss_type: LossType = "sigmoid", beta: float = 0.1,
              label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pair loss from ``pair_logits``."""
    if loss_type == "sigmoid":
        z = beta * logits
        return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    if loss_type == "hinge":
        return torch.relu(1 - beta * logits)
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown loss_type '{loss_type}'")
