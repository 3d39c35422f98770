"""SFT: token-level cross-entropy on gold completions (EOS included, prompt excluded)."""

from __future__ import annotations

import torch

from rlx.batch import Batch
from rlx.objective import Objective
from rlx.policy import Policy


class SFT(Objective):

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp, _ = policy.log_probs(batch)
        mask = batch["mask"]
        nll = -(logp * mask).sum() / mask.sum().clamp(min=1)
        return nll, {"loss/sft": float(nll.detach()), "sft/perplexity": float(torch.exp(nll.detach()))}
