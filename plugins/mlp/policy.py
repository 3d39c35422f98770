"""Actor-critic MLP. Discrete action spaces get a categorical head, boxes a Gaussian with
a state-independent log-std (as in CleanRL and SB3)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.policy import ControlPolicy, ModelTarget, unwrap

from .categorical import categorical_actor_critic
from .chain import chain_backward, chain_forward, chains
from .fastpath import Chain, actor_chain_of, called_as_written, chain_of


def _mlp(sizes: list[int], act: type[nn.Module], ortho: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(a, b)
        if ortho:
            nn.init.orthogonal_(lin.weight, math.sqrt(2))
            nn.init.zeros_(lin.bias)
        layers += [lin, act()]
    return nn.Sequential(*layers)


def _head(n_in: int, n_out: int, gain: float, ortho: bool) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    if ortho:
        nn.init.orthogonal_(lin.weight, gain)
        nn.init.zeros_(lin.bias)
    return lin


class ActorCritic(nn.Module):
    """Two MLP bodies (or one shared) with an actor head (logits or means) and a value head.

    ``forward`` runs the registered modules: through the hand-written chain (chain.py) when
    ``fastpath.chain_of`` finds them to be exactly a chain it reproduces, else by calling
    them (``forward_plain``). So an edit to the module tree, e.g. a LayerNorm inserted into
    a body, is either reproduced or run as written, never skipped. ``use_fast_path = False``
    on an instance forces the plain path (tests, debugging)."""

    use_fast_path = True

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, config: Any):
        super().__init__()
        act = nn.Tanh if config.activation == "tanh" else nn.ReLU
        sizes = [obs_dim, *config.hidden_sizes]
        last = sizes[-1]
        self.discrete = discrete
        self.actor_body = _mlp(sizes, act, config.ortho_init)
        self.critic_body = self.actor_body if config.shared else _mlp(sizes, act, config.ortho_init)
        self.actor_head = _head(last, act_dim, 0.01, config.ortho_init)
        self.critic_head = _head(last, 1, 1.0, config.ortho_init)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(config.log_std_init)))

    def fast_chain(self) -> Chain | None:
        """The chain that reproduces the modules as they are now, or None (plain path)."""
        # _modules directly: Module.__getattr__ costs ten times more, on every call
        return chain_of(self._modules) if self.use_fast_path else None

    def actor_chain(self) -> tuple[str, list[torch.Tensor]] | None:
        """The activation and parameters of the actor's chain as the modules are now, or None
        (plain path)."""
        return actor_chain_of(self._modules) if self.use_fast_path else None

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chain = self.fast_chain()
        if chain is None:
            return self.forward_plain(obs)
        if chain.shared:
            h = chains(obs, [chain.actor[:-2]], chain.activation, linear_last=False)[0]
            return F.linear(h, *chain.actor[-2:]), F.linear(h, *chain.critic[-2:]).squeeze(-1)
        # actor and critic as one autograd node (see chain.py for why)
        out, value = chains(obs, [chain.actor, chain.critic], chain.activation)
        return out, value.squeeze(-1)

    def forward_plain(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The modules called as they are: what runs whenever the fast path does not cover
        them, and the reference it is tested against."""
        h = self.actor_body(obs)
        hc = h if self.critic_body is self.actor_body else self.critic_body(obs)
        return self.actor_head(h), self.critic_head(hc).squeeze(-1)

    def trunk_out(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor head's outputs (logits or means) alone."""
        chain = self.actor_chain()
        if chain is None:
            return self.actor_head(self.actor_body(obs))
        return chains(obs, [chain[1]], chain[0])[0]

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor, entropy: bool = True,
                         entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of ``actions`` (summed over action dimensions) and, if asked, entropies
        (without a gradient unless ``entropy_grad``), written out rather than through
        torch.distributions: on batches this small the distribution objects cost more than
        the network."""
        ent = None
        if self.discrete:
            logits = torch.log_softmax(out, -1)
            if entropy:
                with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                    ent = -(logits.exp() * logits).sum(-1)
            return logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1), ent
        log_std = self.log_std.expand_as(out)
        if entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                ent = (log_std + _HALF_LOG_2PI_E).sum(-1)
        z = (actions - out) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1), ent

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        if self.discrete:  # Gumbel-max: argmax(logits - log E), E ~ Exp(1); a third of multinomial's cost here
            return (out - torch.empty_like(out).exponential_().log_()).argmax(-1)
        return out + self.log_std.exp() * torch.randn_like(out)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_2PI_E = 0.5 + _HALF_LOG_2PI


class MLPPolicy(ControlPolicy):

    def __init__(self, config: Any, *, env: Any = None, **kwargs: Any):
        super().__init__(config)
        if env is None or not hasattr(env, "observation_space"):
            raise UsageError("policy 'mlp' needs a control environment with observation and action spaces "
                             "(e.g. --env gym); for text environments use --policy tiny or hf")
        obs_space, act_space = env.observation_space, env.action_space
        discrete = hasattr(act_space, "n")
        self._build(int(math.prod(obs_space.shape)),
                    int(act_space.n) if discrete else int(math.prod(act_space.shape)), discrete)

    def _build(self, obs_dim: int, act_dim: int, discrete: bool) -> None:
        self.discrete, self.obs_dim, self.act_dim = discrete, obs_dim, act_dim
        self.model = ActorCritic(obs_dim, act_dim, discrete, self.config)

    @classmethod
    def load(cls, path: str | Path) -> "MLPPolicy":
        """The policy ``save`` wrote to ``path``, in eval mode, without the environment it
        was trained in (its sizes are in config.json)."""
        from .config import MLPConfig

        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        sizes = {k: meta.pop(k) for k in ("obs_dim", "act_dim", "discrete")}
        policy = cls.__new__(cls)
        ControlPolicy.__init__(policy, MLPConfig(**meta))
        policy._build(int(sizes["obs_dim"]), int(sizes["act_dim"]), bool(sizes["discrete"]))
        policy.model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
        policy.model.eval()
        return policy

    def _inner(self) -> ActorCritic:
        return unwrap(self.model)

    def act(self, obs: torch.Tensor, *, deterministic: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        net = self._inner()
        out, value = self._call(obs.reshape(obs.shape[0], self.obs_dim))
        if deterministic:
            a = out.argmax(-1) if self.discrete else out
        else:
            a = net.sample(out)
        return a, net.log_prob_entropy(out, a, entropy=False)[0], value

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self._call(obs.reshape(obs.shape[0], self.obs_dim))[1]

    def _call(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # without a gradient (acting) a DDP wrapper's bookkeeping has nothing to do: call
        # forward itself, 32 times per update; but through the module call where it has hooks
        net = self._inner()
        if torch.is_grad_enabled() or not called_as_written(net):
            return self.model(x)
        return net.forward(x)

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor head's outputs ``[N, A]`` read as action values (value-based objectives
        such as dqn): ``act(deterministic=True)`` is then greedy in Q. Skips the critic."""
        return self._inner().trunk_out(obs.reshape(obs.shape[0], self.obs_dim))

    def q_values_with_backward(self, obs: torch.Tensor
                               ) -> tuple[torch.Tensor, Callable[[torch.Tensor], None]] | None:
        """The actor chain's forward keeping each layer's input, and its hand-written
        backward (chain.py) as the function that adds the gradients. Only where ``q_values``
        itself takes the chain, and not under a DDP wrapper, whose gradient sync hooks into
        autograd. Why: a DQN gradient step on a [256, 256] network spends about as long in
        the autograd engine and the nodes' Python as in its products (measured 2026-12-04)."""
        net = self._inner()
        chain = net.actor_chain() if net is self.model else None
        if chain is None:
            return None
        activation, params = chain
        inputs: list[torch.Tensor] = []
        with torch.no_grad():
            q = chain_forward(obs.reshape(obs.shape[0], self.obs_dim), params, activation, keep=inputs)

        def backward(grad_q: torch.Tensor) -> None:
            with torch.no_grad():
                grads = chain_backward(grad_q, inputs, params, activation)[0]
            for p, g in zip(params, grads):
                if p.requires_grad:
                    p.grad = g if p.grad is None else p.grad.add_(g)

        return q, backward

    def evaluate_actions(self, batch: Batch, *, entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, actions = batch["obs"], batch["actions"]
        B, T = actions.shape[:2]
        net = self._inner()
        if self.discrete and not entropy and net is self.model and torch.is_grad_enabled():
            # one autograd node from observations to log-probs and values (categorical.py);
            # not under a DDP wrapper, whose gradient sync needs its own forward, and not
            # through the module call, so only where that call would add nothing
            chain = net.fast_chain() if called_as_written(net) else None
            if chain is not None and not chain.shared:
                logp, value, ent = categorical_actor_critic(obs.reshape(B * T, self.obs_dim), actions, chain.actor,
                                                            chain.critic, chain.activation, (B, T))
                return logp, ent, value
        out, value = self.model(obs.reshape(B * T, self.obs_dim))
        logp, ent = net.log_prob_entropy(out, actions.reshape(B * T, *actions.shape[2:]), entropy_grad=entropy)
        return logp.view(B, T), ent.view(B, T), value.view(B, T)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(unwrap(self.model).state_dict(), path / "model.pt")
        (path / "config.json").write_text(json.dumps({"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                                                      "discrete": self.discrete, **self.config.model_dump()}))

    def log_model(self, saved: Path, target: ModelTarget) -> str:
        """The saved policy as an MLflow ``pyfunc`` model whose ``predict`` maps
        observations to deterministic actions (``mlflow_model.py``)."""
        from .mlflow_model import log

        return log(saved, target, self)
