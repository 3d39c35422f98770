"""Actor-critic MLP. Discrete action spaces get a categorical head, boxes a Gaussian with
a state-independent log-std (as in CleanRL and SB3)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.policy import ControlPolicy


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

        self._act_fn = torch.tanh if config.activation == "tanh" else torch.relu
        self._shared = config.shared

    def _trunk(self, body: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        # F.linear on the layers' own parameters: calling each submodule costs more than
        # its arithmetic at these sizes; the module tree stays for state_dict and printing
        for layer in body[::2]:
            x = self._act_fn(F.linear(x, layer.weight, layer.bias))
        return x

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._trunk(self.actor_body, obs)
        hc = h if self._shared else self._trunk(self.critic_body, obs)
        return (F.linear(h, self.actor_head.weight, self.actor_head.bias),
                F.linear(hc, self.critic_head.weight, self.critic_head.bias).squeeze(-1))

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor | None, entropy: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of ``actions`` (summed over action dimensions) and, if asked, entropies,
        written out rather than through torch.distributions: on batches this small the
        distribution objects cost more than the network."""
        if self.discrete:
            logits = torch.log_softmax(out, -1)
            ent = -(logits.exp() * logits).sum(-1) if entropy else None
            return (logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1) if actions is not None else ent), ent
        log_std = self.log_std.expand_as(out)
        ent = (log_std + _HALF_LOG_2PI_E).sum(-1) if entropy else None
        if actions is None:
            return ent, ent
        z = (actions - out) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1), ent

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return torch.multinomial(torch.softmax(out, -1), 1).squeeze(-1)
        return out + self.log_std.exp() * torch.randn_like(out)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_2PI_E = 0.5 + _HALF_LOG_2PI


class MLPPolicy(ControlPolicy):
    kind = "control"

    def __init__(self, config: Any, *, env: Any = None, **kwargs: Any):
        super().__init__(config)
        if env is None or not hasattr(env, "observation_space"):
            raise UsageError("policy 'mlp' needs a control environment with observation and action spaces "
                             "(e.g. --env gym); for text environments use --policy tiny or hf")
        obs_space, act_space = env.observation_space, env.action_space
        self.discrete = hasattr(act_space, "n")
        self.obs_dim = int(math.prod(obs_space.shape))
        self.act_dim = int(act_space.n) if self.discrete else int(math.prod(act_space.shape))
        self.model = ActorCritic(self.obs_dim, self.act_dim, self.discrete, config)

    def _inner(self) -> ActorCritic:
        return getattr(self.model, "module", self.model)

    def act(self, obs: torch.Tensor, *, deterministic: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, value = self.model(obs.reshape(obs.shape[0], self.obs_dim))
        net = self._inner()
        if deterministic:
            a = out.argmax(-1) if self.discrete else out
        else:
            a = net.sample(out)
        return a, net.log_prob_entropy(out, a, entropy=False)[0], value

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model(obs.reshape(obs.shape[0], self.obs_dim))[1]

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor head's outputs ``[N, A]`` read as action values (value-based objectives
        such as dqn): ``act(deterministic=True)`` is then greedy in Q. Skips the critic."""
        net = self._inner()
        h = net._trunk(net.actor_body, obs.reshape(obs.shape[0], self.obs_dim))
        return F.linear(h, net.actor_head.weight, net.actor_head.bias)

    def evaluate_actions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, actions = batch["obs"], batch["actions"]
        B, T = actions.shape[:2]
        out, value = self.model(obs.reshape(B * T, self.obs_dim))
        logp, ent = self._inner().log_prob_entropy(out, actions.reshape(B * T, *actions.shape[2:]))
        return logp.view(B, T), ent.view(B, T), value.view(B, T)

    def reference(self) -> "MLPPolicy":
        ref = copy.copy(self)
        ref.model = copy.deepcopy(getattr(self.model, "module", self.model)).eval().requires_grad_(False)
        return ref

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(self.model, "module", self.model).state_dict(), path / "model.pt")
        (path / "config.json").write_text(json.dumps({"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                                                      "discrete": self.discrete, **self.config.model_dump()}))
