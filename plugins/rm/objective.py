"""Bradley-Terry reward model training on (prompt, chosen, rejected) pairs.

``setup`` turns the policy into the reward model, so the loop's optimizer, checkpoints
and ``policy.save`` all act on it and the run's saved folder is what the ``orm`` reward
loads. Two kinds (``rlx.plugins.shared.scorers``):

- ``classifier``: the causal LM becomes a one-label sequence-classification model with
  the same backbone weights; the score is its logit.
- ``implicit``: the LM stays an LM and the score is ``beta`` times its summed log-ratio to
  a frozen copy of itself as it started, saved beside it as ``reference/``.

The loss is ``-log sigmoid(s_chosen - s_rejected - margin)`` plus a small penalty on the
squared scores to pin their offset, which Bradley-Terry leaves free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.objective import Objective
from rlx.plugins.shared import scorers
from rlx.policy import LMPolicy, Policy, unwrap


class RewardModelTraining(Objective):

    def __init__(self, config: Any, **kwargs: Any):
        super().__init__(config)
        self.reference: Any = None

    def setup(self, policy: Policy) -> None:
        if not isinstance(policy, LMPolicy):
            raise UsageError("objective 'rm' needs a transformers policy (--policy tiny or hf) to start the "
                             "reward model from")
        if self.config.head == "implicit":
            self.reference = policy.reference()
            setattr(unwrap(policy.model).config, scorers.IMPLICIT, self.config.beta)
        else:
            policy.model = scorers.classifier_from_lm(policy.model, policy.tokenizer, "sequence")

    def _encode(self, policy: Policy, pairs: list[dict[str, Any]]) -> scorers.Encoded:
        prompts = [p["prompt"] for p in pairs]
        model = unwrap(policy.model)
        enc = scorers.encode(policy.tokenizer, prompts + prompts, [p["chosen"] for p in pairs] +
                             [p["rejected"] for p in pairs], scorers.max_positions(model))
        return enc.to(next(model.parameters()).device)

    def make_batch(self, env: Any, policy: Policy, tasks: list[dict[str, Any]], *, seeds: list[int]) -> Batch:
        enc = self._encode(policy, tasks)
        n = len(tasks)
        return Batch({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                      "mask": enc.attention_mask.float(), "completion_mask": scorers.completion_mask(enc)},
                     {"of_task": list(range(n)) * 2})

    def scores(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """``[2n]`` scores of the batch's rows, with gradients through ``model``."""
        ids, attn = batch["input_ids"], batch["attention_mask"]
        if self.reference is None:
            return model(input_ids=ids, attention_mask=attn).logits[:, 0].float()
        ref = self.reference.model.to(ids.device)
        with torch.no_grad():
            ref_lp = scorers.token_logps(ref, ids, attn)
        q = scorers.implicit_q(scorers.token_logps(model, ids, attn), ref_lp, batch["completion_mask"],
                               self.config.beta)
        return q[:, -1]

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        s = self.scores(policy.model, batch)
        n = len(s) // 2
        chosen, rejected = s[:n], s[n:]
        diff = chosen - rejected
        bt = -F.logsigmoid(diff - self.config.margin).mean()
        loss = bt + self.config.center_weight * (s ** 2).mean()
        d = diff.detach()
        return loss, {"loss/bradley_terry": bt.detach(), "rm/accuracy": (d > 0).float().mean(),
                      "rm/margin": d.mean(), "rm/chosen": chosen.detach().mean(),
                      "rm/rejected": rejected.detach().mean()}

    @torch.no_grad()
    def held_out_metrics(self, env: Any, policy: Policy, reference: Policy | None, chunk: int = 64) -> dict[str, float]:
        """Held-out pairs: how often the chosen completion scores higher, the mean margin,
        and the scores' mean and spread, saved with the model for ensembles."""
        pairs = env.eval_pairs()
        if not pairs:
            return {}
        model = unwrap(policy.model)
        was_training = model.training
        model.eval()
        chosen, rejected = [], []
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            s = self.scores(model, self.make_batch(env, policy, part, seeds=[])).cpu()
            chosen.append(s[: len(part)])
            rejected.append(s[len(part):])
        model.train(was_training)
        c, r = torch.cat(chosen), torch.cat(rejected)
        setattr(model.config, scorers.CALIBRATION, scorers.calibration(torch.cat([c, r])))
        return {"eval/preference_accuracy": float((c > r).float().mean()), "eval/reward_margin": float((c - r).mean()),
                "eval/score_chosen": float(c.mean()), "eval/score_rejected": float(r.mean())}

    def save_alongside(self, folder: Path) -> None:
        if self.reference is not None:  # an implicit reward is a log-ratio: it needs its denominator
            self.reference.save(folder / "reference")
