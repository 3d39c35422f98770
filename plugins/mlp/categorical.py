"""A categorical actor-critic's training-time evaluation as one autograd node: both
networks, the log-softmax, the log-prob of the taken actions and the entropy (without a
gradient), from observations to ``(logp, value, entropy)``.

Written out for the same reason as chain.py: PPO evaluates the batch twenty times per
update, and between the networks and the loss autograd would otherwise add six small
nodes (log-softmax, gather, squeezes, views) whose bookkeeping outweighs their
arithmetic. The backward of ``log_softmax`` then ``gather`` is ``(onehot(a) - p) * g``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .chain import chain_backward, chain_forward


class _CategoricalActorCritic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, obs: torch.Tensor, actions: torch.Tensor, activation: str,  # type: ignore[override]
                shape: tuple[int, ...], n_actor: int, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keep_actor: list[torch.Tensor] = []
        keep_critic: list[torch.Tensor] = []
        logits = chain_forward(obs, params[:n_actor], activation, True, keep_actor)
        value = chain_forward(obs, params[n_actor:], activation, True, keep_critic)
        log_probs = torch.log_softmax(logits, -1)
        index = actions.reshape(-1, 1).long()
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        ctx.activation, ctx.n_actor, ctx.layers = activation, n_actor, (len(keep_actor), len(keep_critic))
        ctx.save_for_backward(*keep_actor, *keep_critic, log_probs, index, *params)
        ctx.mark_non_differentiable(entropy)
        return log_probs.gather(1, index).view(shape), value.view(shape), entropy.view(shape)

    @staticmethod
    def backward(ctx, g_logp: torch.Tensor, g_value: torch.Tensor, _: torch.Tensor
                 ) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        la, lc = ctx.layers
        keep_actor, keep_critic = saved[:la], saved[la:la + lc]
        log_probs, index = saved[la + lc], saved[la + lc + 1]
        params = saved[la + lc + 2:]
        g = g_logp.reshape(-1, 1)
        g_logits = log_probs.exp().mul_(-g).scatter_add_(1, index, g)
        actor, _x = chain_backward(g_logits, keep_actor, params[:ctx.n_actor], ctx.activation)
        critic, _x = chain_backward(g_value.reshape(-1, 1), keep_critic, params[ctx.n_actor:], ctx.activation)
        return (None, None, None, None, None, *actor, *critic)


def categorical_actor_critic(obs: torch.Tensor, actions: torch.Tensor, actor: Sequence[torch.Tensor],
                             critic: Sequence[torch.Tensor], activation: str, shape: tuple[int, ...]
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log pi(actions | obs), V(obs), entropy)``, each shaped ``shape``; the entropy
    has no gradient. ``actor`` and ``critic`` are linear-last chains' parameters."""
    return _CategoricalActorCritic.apply(obs, actions, activation, tuple(shape), len(actor), *actor, *critic)
