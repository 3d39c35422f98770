"""``softmax-arms``: one learnable logit per arm, pi(a) = softmax(logits)_a."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.policy import unwrap
from rlx_example_plugin.bandit.interface import ArmPolicy, BanditEnvironment


class ArmLogits(nn.Module):
    """The logits as a module, so the loop's optimizer, accelerate and DDP see a model."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        return self.logits


class SoftmaxArms(ArmPolicy):

    def __init__(self, config: Any, *, env: Any = None, **kwargs: Any):
        super().__init__(config)
        if not isinstance(env, BanditEnvironment):
            raise UsageError("policy 'softmax-arms' needs a bandit environment (--env bandit), which tells it the "
                             "number of arms")
        self.arms = env.arms
        # drawn from torch's global generator, which the loop seeds with the run seed before building
        self.model = ArmLogits(torch.randn(self.arms) * config.init_std)

    def arm_probs(self) -> torch.Tensor:
        return torch.softmax(unwrap(self.model).logits, -1)

    def log_probs(self, batch: Batch, *, entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        # through the module call, not unwrap(): a DDP wrapper syncs gradients from its forward
        logp_all = torch.log_softmax(self.model(), -1)
        actions = batch["actions"]
        logp = logp_all[actions]
        if not entropy:
            return logp, None
        ent = -(logp_all.exp() * logp_all).sum()
        return logp, ent.expand_as(logp)

    def save(self, path: str | Path) -> None:
        """``logits.pt`` (``torch.load`` it into ``ArmLogits``) and a readable ``policy.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        net = unwrap(self.model)
        torch.save(net.state_dict(), path / "logits.pt")
        with torch.no_grad():
            probs = self.arm_probs().cpu()
        (path / "policy.json").write_text(json.dumps({
            "arms": self.arms, "logits": net.logits.detach().cpu().tolist(), "probs": probs.tolist(),
            **self.config.model_dump()}, indent=2))
