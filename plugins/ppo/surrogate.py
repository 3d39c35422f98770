"""PPO's clipped surrogate plus its value loss as one autograd node, with the gradient
written out.

The loss is a dozen elementwise ops on a few hundred numbers; as separate autograd nodes
their bookkeeping costs more than their arithmetic (about 0.1 ms of every control update
step, measured). The gradient below is the one autograd computes for the written-out
formula, ties included (``torch.max`` splits a tie's gradient evenly); the tests check
both against each other.
"""

from __future__ import annotations

import torch


def _weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
    """Per-element weights of a (masked) mean."""
    if mask is None:
        return 1.0 / like.numel()
    return mask / mask.sum().clamp(min=1)


def _mean(x: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    return x.mean() if isinstance(w, float) else (x * w).sum()


def _max_grad(first: torch.Tensor, second: torch.Tensor, g_first: torch.Tensor, g_second: torch.Tensor
              ) -> torch.Tensor:
    """d max(first, second): the larger term's gradient, the mean of both on a tie."""
    tie = 0.5 * (g_first + g_second)
    return torch.where(first > second, g_first, torch.where(first < second, g_second, tie))


class _PPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logp: torch.Tensor, value: torch.Tensor, old_logp: torch.Tensor,  # type: ignore[override]
                adv: torch.Tensor, ret: torch.Tensor, old_v: torch.Tensor, mask: torch.Tensor | None, eps: float,
                clip_value: float | None, vf_coef: float) -> tuple[torch.Tensor, ...]:
        w = _weights(mask, logp)
        ratio = (logp - old_logp).exp_()
        neg_adv = -adv
        unclipped_obj, clipped_obj = neg_adv * ratio, neg_adv * ratio.clamp(1 - eps, 1 + eps)
        pg = _mean(torch.maximum(unclipped_obj, clipped_obj), w)
        # the surrogate's gradient flows through whichever term is the max; through the
        # clipped one only inside the clip range, where it equals the unclipped one
        g_logp = torch.where(unclipped_obj >= clipped_obj, unclipped_obj, 0.0).mul_(w)
        err = value - ret
        if clip_value is None:
            v_loss = 0.5 * _mean(err.square(), w)
            g_value = err * w
        else:
            delta = value - old_v
            err_c = old_v + delta.clamp(-clip_value, clip_value) - ret
            sq, sq_c = err.square(), err_c.square()
            v_loss = 0.5 * _mean(torch.maximum(sq, sq_c), w)
            inside = (delta.abs() <= clip_value).to(err.dtype)
            g_value = _max_grad(sq, sq_c, err, err_c * inside).mul_(w)
        ctx.save_for_backward(g_logp, g_value)
        ctx.vf_coef = vf_coef
        loss = pg + vf_coef * v_loss
        ctx.mark_non_differentiable(pg, v_loss, ratio)
        return loss, pg, v_loss, ratio

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        g_logp, g_value = ctx.saved_tensors
        return g_logp * grad, g_value * (grad * ctx.vf_coef), None, None, None, None, None, None, None, None


def ppo_loss(logp: torch.Tensor, value: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, ret: torch.Tensor,
             old_v: torch.Tensor, mask: torch.Tensor | None, eps: float, clip_value: float | None,
             vf_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pg + vf_coef * v_loss, pg, v_loss, ratio)``: the clipped surrogate ``pg`` and the
    (optionally clipped) value loss ``v_loss`` as (masked) means, and the probability
    ratio for diagnostics; only the first has a gradient."""
    return _PPOLoss.apply(logp, value, old_logp, adv, ret, old_v, mask, eps, clip_value, vf_coef)
