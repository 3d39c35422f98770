"""DPO (Rafailov et al. 2023) and its loss / divergence variants (losses.py).

A batch holds ``n`` pairs as ``2n`` rows: the chosen completions, then the rejected ones,
each after its prompt. A completion's log-ratio is ``log pi(y|x) - log pi_ref(y|x)``
summed over its tokens (per-token mean for ``ipo``). The reference's log-probs are
computed once per pair, in ``prepare`` (and remembered across epochs of a file's pairs),
never per optimizer step. Both models score a batch through ``scoring.pair_log_probs``:
by default one pass over it, which the hf and tiny policies pack without padding
(``policy.packing``); ``length_groups`` runs each pair's prompt once, in length groups
without padding columns, for policies that do not pack.
"""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.objective import Objective
from rlx.plugins.text.kinds import encode_pairs
from rlx.policy import Policy

from .losses import pair_logits, pair_loss
from .scoring import pair_log_probs


class DPO(Objective):

    def __init__(self, config: Any, **kwargs: Any):
        super().__init__(config)
        self._ref_cache: dict[int, float] = {}  # (pair id * 2 + rejected) -> summed reference log-prob

    @property
    def needs_reference(self) -> bool:
        return True

    def _sequence_logps(self, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (logp * mask).sum(-1)
        return total / mask.sum(-1).clamp(min=1) if self.config.loss_type == "ipo" else total

    @torch.no_grad()
    def _reference_logps(self, batch: Batch, reference: Policy) -> torch.Tensor:
        n = len(batch) // 2
        ids = [t.get("id", -1) for t in batch.meta["task"][:n]]
        keys = [2 * i + side for side in (0, 1) for i in ids]  # rows: chosen then rejected
        if all(i >= 0 for i in ids) and all(k in self._ref_cache for k in keys):
            return torch.tensor([self._ref_cache[k] for k in keys], device=batch["mask"].device)
        ref_logp = pair_log_probs(reference, batch, self.config.length_groups)
        seq = self._sequence_logps(ref_logp, batch["mask"])
        for k, v in zip(keys, seq.tolist()):
            if k >= 0:
                self._ref_cache[k] = v
        return seq

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        assert reference is not None
        batch["ref_logps"] = self._reference_logps(batch, reference)
        return {}

    def _pair_terms(self, seq: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(seq) // 2
        ratios = seq - ref
        return ratios[:n], ratios[n:]

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.config
        logp = pair_log_probs(policy, batch, c.length_groups)
        seq = self._sequence_logps(logp, batch["mask"])
        chosen, rejected = self._pair_terms(seq, batch["ref_logps"])
        logits = pair_logits(chosen, rejected, c.divergence, c.alpha)
        loss = pair_loss(logits, c.loss_type, c.beta, c.label_smoothing).mean()
        n = len(seq) // 2
        extra: dict[str, Any] = {}
        if c.nll_weight > 0:
            mask = batch["mask"][:n]
            nll = -(logp[:n] * mask).sum() / mask.sum().clamp(min=1)
            loss = loss + c.nll_weight * nll
            extra["loss/nll_chosen"] = nll.detach()
        with torch.no_grad():
            r_c, r_r = c.beta * chosen, c.beta * rejected
            metrics = {**extra, "loss/dpo": loss.detach(), "rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
                       "rewards/margins": (r_c - r_r).mean(), "rewards/accuracy": (r_c > r_r).float().mean(),
                       "logps/chosen": seq[:n].mean(), "logps/rejected": seq[n:].mean()}
        return loss, metrics

    @torch.no_grad()
    def held_out_metrics(self, env: Any, policy: Policy, reference: Policy | None, chunk: int = 64) -> dict[str, float]:
        """Held-out pairs: how often the implicit reward ``beta * log-ratio`` ranks the
        chosen completion above the rejected one, and the mean margin."""
        pairs = env.eval_pairs()
        if not pairs or reference is None:
            return {}
        right, margin = 0, 0.0
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            batch = encode_pairs(policy, part)
            groups = self.config.length_groups
            seq = self._sequence_logps(pair_log_probs(policy, batch, groups), batch["mask"])
            ref = self._sequence_logps(pair_log_probs(reference, batch, groups), batch["mask"])
            chosen, rejected = self._pair_terms(seq, ref)
            right += int((chosen > rejected).sum())
            margin += float((self.config.beta * (chosen - rejected)).sum())
        return {"eval/preference_accuracy": right / len(pairs), "eval/reward_margin": margin / len(pairs)}

