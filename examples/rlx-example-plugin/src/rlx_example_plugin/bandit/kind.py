"""The ``bandit`` kind: each loop step pulls ``run.batch_size`` arms (per process) drawn
from the policy and pays them from the environment; evaluation is exact, from the
policy's probabilities and the arms' true means, so it is deterministic and costs no pulls.

Batch keys, all ``[B, 1]`` (one pull is a one-position "sequence", so rewards placed by
``rlx.reward.combine`` land at position 0): ``actions`` (long, the arm pulled),
``env_reward`` (its payout), ``old_logp`` (its log-probability when pulled) and ``mask``
(ones). After scoring, the loop adds ``rewards`` and ``reward_mask``.
"""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.distributed import rank_world, sample_seed
from rlx.kind import EnvironmentKind, Evaluation, KindContext
from rlx_example_plugin.bandit.interface import ArmPolicy, BanditEnvironment


class BanditKind(EnvironmentKind):
    small_steps = True  # one tensor of k logits, possibly thousands of steps

    def __init__(self, config: Any = None, *, context: KindContext):
        super().__init__(config, context=context)
        self.expect(BanditEnvironment, ArmPolicy)
        self.batch_size = context.cfg.run.batch_size
        means = self.env.means()
        self.best = max(range(len(means)), key=means.__getitem__)

    def _device(self) -> torch.device:
        return next(self.policy.model.parameters()).device

    @torch.no_grad()
    def collect(self, step: int) -> Batch:
        # a function of (seed, step, rank) alone: resuming needs no collector state and
        # each process pulls its own arms
        rank, _ = rank_world()
        gen = torch.Generator().manual_seed(sample_seed(self.context.seed, step, rank))
        probs = self.policy.arm_probs().float().cpu()
        arms = torch.multinomial(probs, self.batch_size, replacement=True, generator=gen)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        payouts = self.env.pull(arms.tolist(), seed=noise_seed)
        device = self._device()
        actions = arms.view(-1, 1).to(device)
        return Batch({"actions": actions, "env_reward": torch.tensor(payouts, dtype=torch.float32, device=device)[:, None],
                      "old_logp": probs.log()[arms].view(-1, 1).to(device),
                      "mask": torch.ones(self.batch_size, 1, device=device)})

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        probs = self.policy.arm_probs().double().cpu()
        means = torch.tensor(self.env.means(), dtype=torch.float64)
        best = self.best
        top = float(means[best])
        metrics = {  # the first is the one the progress bar and learning curve show
            "eval/optimal_arm_prob": float(probs[best]),
            "eval/regret": top - float((probs * means).sum()),
            "eval/greedy_regret": top - float(means[int(probs.argmax())]),
        }
        order = probs.argsort(descending=True).tolist()
        rows = [{"arm": a, "prob": round(float(probs[a]), 4), "mean": round(float(means[a]), 4), "best": a == best}
                for a in order]
        return Evaluation(metrics, rows)

    def step_metrics(self, batch: Batch, seconds: float) -> dict[str, float]:
        return {"perf/pulls_per_s": len(batch) / seconds,
                "env/optimal_pulls": float((batch["actions"] == self.best).float().mean())}
