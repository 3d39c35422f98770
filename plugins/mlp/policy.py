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

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor_head(self.actor_body(obs)), self.critic_head(self.critic_body(obs)).squeeze(-1)

    def dist(self, out: torch.Tensor) -> torch.distributions.Distribution:
        # argument validation costs more than the tiny forward pass itself
        if self.discrete:
            return torch.distributions.Categorical(logits=out, validate_args=False)
        return torch.distributions.Normal(out, self.log_std.exp().expand_as(out), validate_args=False)


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

    def _logp(self, d: torch.distributions.Distribution, a: torch.Tensor) -> torch.Tensor:
        lp = d.log_prob(a)
        return lp if self.discrete else lp.sum(-1)

    def act(self, obs: torch.Tensor, *, deterministic: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, value = self.model(obs.reshape(obs.shape[0], self.obs_dim))
        inner = getattr(self.model, "module", self.model)
        d = inner.dist(out)
        if deterministic:
            a = out.argmax(-1) if self.discrete else out
        else:
            a = d.sample()
        return a, self._logp(d, a), value

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model(obs.reshape(obs.shape[0], self.obs_dim))[1]

    def evaluate_actions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, actions = batch["obs"], batch["actions"]
        B, T = actions.shape[:2]
        out, value = self.model(obs.reshape(B * T, self.obs_dim))
        d = getattr(self.model, "module", self.model).dist(out)
        a = actions.reshape(B * T, *actions.shape[2:])
        ent = d.entropy() if self.discrete else d.entropy().sum(-1)
        return self._logp(d, a).view(B, T), ent.view(B, T), value.view(B, T)

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
