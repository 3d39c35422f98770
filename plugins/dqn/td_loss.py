"""The TD loss of the taken actions' Q-values as one autograd node, with its gradient
written out.

Why: DQN takes a hundred or more gradient steps per update on batches of 64, where
gather, subtraction, the Huber loss and its mean as separate autograd nodes cost more in
bookkeeping than in arithmetic. The gradient here is the one autograd computes for the
plain formula (``td_loss_plain``); the tests check both against each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def td_loss_plain(q_all: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, huber: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, Q(s, a))``: the mean Huber (delta 1) or squared error between the Q-values
    of ``actions`` in ``q_all`` ``[B, A]`` and ``target`` ``[B]``, through autograd."""
    q = q_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    loss = F.smooth_l1_loss(q, target) if huber else F.mse_loss(q, target)
    return loss, q


def _forward(q_all: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, huber: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, Q(s, a), d loss / d Q(s, a), action index [B, 1])`` of ``td_loss_plain``."""
    index = actions.long().unsqueeze(-1)
    q = q_all.gather(-1, index).squeeze(-1)
    diff = q - target
    if huber:
        grad = diff.clamp(-1.0, 1.0)  # d huber / d diff, ties at |diff| = 1 included
        # huber = grad * (diff - grad / 2): diff^2 / 2 inside [-1, 1], |diff| - 1/2 outside
        loss = torch.dot(grad, diff.sub_(grad, alpha=0.5)) / diff.numel()
    else:
        loss = torch.dot(diff, diff) / diff.numel()
        grad = diff.mul_(2.0)
    return loss, q, grad.div_(diff.numel()), index


def _spread(grad: torch.Tensor, index: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """The per-row gradient ``grad`` ``[B]`` placed at the taken actions of a ``[B, A]``
    gradient, zero elsewhere."""
    return torch.zeros(shape, dtype=dtype, device=grad.device).scatter_(-1, index, grad.unsqueeze(-1).to(dtype))


class _TDLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_all: torch.Tensor, actions: torch.Tensor, target: torch.Tensor,  # type: ignore[override]
                huber: bool) -> tuple[torch.Tensor, torch.Tensor]:
        loss, q, grad, index = _forward(q_all, actions, target, huber)
        ctx.save_for_backward(grad, index)
        ctx.shape, ctx.dtype = q_all.shape, q_all.dtype
        ctx.mark_non_differentiable(q)
        return loss, q

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad, index = ctx.saved_tensors
        return _spread(grad * grad_loss, index, ctx.shape, ctx.dtype), None, None, None


def td_loss_and_grad(q_all: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, huber: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, Q(s, a), d loss / d q_all)`` without autograd: for a Q-network that takes
    the gradient at its outputs by hand (``ControlPolicy.q_values_with_backward``)."""
    loss, q, grad, index = _forward(q_all, actions, target, huber)
    return loss, q, _spread(grad, index, q_all.shape, q_all.dtype)


def td_loss(q_all: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, huber: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``td_loss_plain`` as one autograd node; ``Q(s, a)`` comes back without a gradient.
    ``target`` must not need one (it is the bootstrapped value, computed without)."""
    if target.requires_grad:
        return td_loss_plain(q_all, actions, target, huber)
    return _TDLoss.apply(q_all, actions, target, huber)
