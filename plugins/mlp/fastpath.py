"""Whether the hand-written chain (chain.py) computes exactly what an actor-critic's modules
would, read from the modules themselves on every call.

Why on every call and from the modules, not the config: the modules are what a user
edits (insert a LayerNorm, register a hook, wrap a layer), and a fast path that kept
running after such an edit would silently compute a different network than the one the
module prints and saves. Anything not recognised here sends the call to the plain module
path, so an edit is either reproduced exactly or run as written, never skipped. The check
is a few dict reads per module: about 3 us for two [64, 64] networks on this project's
CPU, 1 us of it gathering the parameters (needed anyway), against the 40-600 us of the
call it guards.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.modules import module as _module

# the activations chain.py writes out, by exact class: a subclass may override forward
_ACTIVATIONS: dict[type, str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


class Chain(NamedTuple):
    """What the fast path needs: (weight, bias) pairs in order, body then head."""
    activation: str
    actor: list[torch.Tensor]
    critic: list[torch.Tensor]
    shared: bool  # one body for both: the trunk is ``actor[:-2]``, and the same tensors as ``critic[:-2]``


def called_as_written(m: nn.Module) -> bool:
    """Calling ``m`` runs its class's ``forward`` and nothing else: no hooks, its own or
    global (what ``Module.__call__`` itself checks), and no ``forward`` patched onto the
    instance, as accelerate's hooks and some wrappers do."""
    return _no_global_hooks() and _unhooked(m.__dict__)


def _unhooked(d: dict[str, Any]) -> bool:
    """``called_as_written`` less the global hooks, from the module's ``__dict__``."""
    return not (d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"] or d["_backward_pre_hooks"]
                or "forward" in d)


def _no_global_hooks() -> bool:
    return not (_module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


def _network(body: nn.Module | None, head: nn.Module | None, params: list[torch.Tensor]) -> str | None:
    """The activation of ``body`` then ``head`` when they are exactly
    ``Sequential(Linear, act, ..., Linear, act)`` and a ``Linear``, one supported
    activation throughout, none of them hooked; their (weight, bias) pairs are appended to
    ``params``. None for anything else: another module anywhere, a subclass (it may
    override forward), a bias-free layer, an empty body."""
    if type(body) is not nn.Sequential or type(head) is not nn.Linear or not _unhooked(body.__dict__):
        return None
    activation = None
    linear = True  # Linear and activation alternate, and the head must land on a Linear place
    for m in (*body._modules.values(), head):
        if linear:
            if type(m) is not nn.Linear:
                return None
        else:
            act = _ACTIVATIONS.get(type(m))
            if act is None or act != (activation or act):
                return None
            activation = act
        d = m.__dict__
        # _unhooked written out: this loop runs on every call, and the calls would add a third
        if d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"] or d["_backward_pre_hooks"] \
                or "forward" in d:
            return None
        if linear:
            # .get: torch.func.functional_call swaps plain tensors in, and a removed bias is None
            p = d["_parameters"]
            w, b = p.get("weight"), p.get("bias")
            if w is None or b is None:
                return None
            params += (w, b)
        linear = not linear
    return activation


def chain_of(modules: dict[str, Any]) -> Chain | None:
    """The chain that reproduces an ActorCritic's ``actor_body``, ``critic_body``,
    ``actor_head`` and ``critic_head`` (its ``_modules``), or None where they are anything
    else and must be called as modules."""
    found = actor_chain_of(modules)
    if found is None:
        return None
    activation, actor = found
    critic: list[torch.Tensor] = []
    # one activation for both: chains() takes one
    if _network(modules.get("critic_body"), modules.get("critic_head"), critic) != activation:
        return None
    return Chain(activation, actor, critic, modules.get("critic_body") is modules.get("actor_body"))


def actor_chain_of(modules: dict[str, Any]) -> tuple[str, list[torch.Tensor]] | None:
    """``(activation, params)`` of the actor's chain alone (``actor_body`` then
    ``actor_head``), or None: for what reads the actor only (``trunk_out``, Q-values), at
    half of ``chain_of``'s cost on every env step of a DQN run."""
    if not _no_global_hooks():
        return None
    actor: list[torch.Tensor] = []
    activation = _network(modules.get("actor_body"), modules.get("actor_head"), actor)
    return None if activation is None else (activation, actor)
