"""rlx's policy-gradient family against TRL 1.16's formulas on identical tensors.

TRL's formulas are written out here (not imported: they sit inside trainer methods that
need a model), each with the file and the place it comes from, so that a reader can
check them line by line:

- ``trl/trainer/grpo_trainer.py`` ``GRPOTrainer._compute_loss``: the per-token loss, the
  ``use_bias_correction_kl`` weighting and the ``dapo`` normalizer;
- ``trl/trainer/grpo_trainer.py`` ``_generate_and_score_completions``: ``num_items_in_batch``;
- ``trl/trainer/rloo_trainer.py`` ``_generate_and_score_completions``: RLOO's NaN-aware
  leave-one-out advantages.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from _approx import close as approx_close

import rlx.plugins.shared.policy_gradient
from rlx.batch import Batch
from rlx.plugins.grpo.config import GRPOConfig
from rlx.plugins.grpo.objective import GRPO, clipped_objective
from rlx.plugins.reinforce.config import ReinforceConfig
from rlx.plugins.reinforce.objective import Reinforce
from rlx.plugins.rloo.config import RLOOConfig
from rlx.plugins.rloo.objective import RLOO
from rlx.reward import RewardSource, combine

close = partial(approx_close, atol=1e-5)
NAN = float("nan")


def trl_per_token_loss(logp: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, adv: torch.Tensor,
                       mask: torch.Tensor, *, eps_low: float, eps_high: float, beta: float,
                       use_bias_correction_kl: bool, level: str = "token") -> torch.Tensor:
    """TRL's ``_compute_loss`` up to aggregation, for loss_type grpo/bnpo/dr_grpo/dapo with
    ``delta=None``, no vLLM correction, no entropy or off-policy mask."""
    log_ratio = logp - old
    if level == "token":
        log_importance_weights = log_ratio
    else:
        log_importance_weights = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    if beta != 0.0:
        per_token_kl = torch.exp(ref - logp) - (ref - logp) - 1
        if use_bias_correction_kl:  # "Importance sampling correction for the KL divergence"
            per_token_kl = per_token_kl * coef_1
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss


def trl_dapo_loss(per_token_loss: torch.Tensor, mask: torch.Tensor, *, num_items_in_batch: float,
                  num_processes: int, gradient_accumulation_steps: int, steps_per_generation: int) -> torch.Tensor:
    """TRL's ``dapo`` branch in train mode. ``num_items_in_batch`` is
    ``gather(loss_mask.sum()).sum()`` over the generation batch (every process)."""
    normalizer = max(num_items_in_batch, 1.0) / num_processes
    normalizer = normalizer * gradient_accumulation_steps / steps_per_generation
    return (per_token_loss * mask).sum() / normalizer


# ------------------------------------------------------------ use_bias_correction_kl

# two rows, T = 3; ratios off 1 and on both sides of the clip range; the masked token
# carries a large gap that must not count
OLD = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.8]])
LOGP = OLD + torch.log(torch.tensor([[1.25, 0.9, 3.0], [0.7, 1.1, 1.02]]))
REF = LOGP + torch.tensor([[math.log(2.0), -0.3, 5.0], [0.2, -math.log(2.0), 0.0]])
ADV = torch.tensor([[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("corrected", [False, True])
def test_kl_bias_correction_matches_trl_per_token(corrected, level):
    beta = 0.3
    logp_rlx = LOGP.clone().requires_grad_(True)
    logp_trl = LOGP.clone().requires_grad_(True)
    ours, info = clipped_objective(logp_rlx, OLD, ADV, MASK, epsilon=0.2, epsilon_high=0.28, level=level,
                                   ref_logp=REF, beta=beta, bias_correction_kl=corrected)
    theirs = trl_per_token_loss(logp_trl, OLD, REF, ADV, MASK, eps_low=0.2, eps_high=0.28, beta=beta,
                                use_bias_correction_kl=corrected, level=level)
    close(ours * MASK, theirs * MASK)
    (ours * MASK).sum().backward()
    (theirs * MASK).sum().backward()
    close(logp_rlx.grad, logp_trl.grad)
    # the two settings really differ here (ratios != 1), so the test tells them apart
    other, _ = clipped_objective(LOGP, OLD, ADV, MASK, epsilon=0.2, epsilon_high=0.28, level=level,
                                 ref_logp=REF, beta=beta, bias_correction_kl=not corrected)
    assert not torch.allclose(other * MASK, ours.detach() * MASK, atol=1e-3)
    # the logged KL is the term that enters the loss, as TRL logs it
    k3 = torch.exp(REF - LOGP) - (REF - LOGP) - 1
    log_ratio = LOGP - OLD
    if level == "sequence":
        log_ratio = ((log_ratio * MASK).sum(-1) / MASK.sum(-1)).unsqueeze(-1)
    close(info["kl"] * MASK, (k3 * torch.exp(log_ratio) if corrected else k3) * MASK)


def test_kl_bias_correction_gradient_on_policy():
    # old = logp: the ratio is 1 in value, but not in gradient. Per token, with A = 0:
    #   plain k3:   d k3 / d logp       = 1 - exp(ref - logp)   (forward-KL direction)
    #   corrected:  d (r * k3) / d logp = k3 + 1 - exp(ref - logp) = logp - ref   (reverse KL)
    d = REF - LOGP
    for corrected, expected in ((False, 1 - torch.exp(d)), (True, -d)):
        logp = LOGP.clone().requires_grad_(True)
        per_token, _ = clipped_objective(logp, logp.detach(), torch.zeros_like(ADV), MASK, epsilon=0.2,
                                         epsilon_high=0.2, ref_logp=REF, beta=1.0, bias_correction_kl=corrected)
        (per_token * MASK).sum().backward()
        close(logp.grad, expected * MASK)
        close(per_token.detach(), torch.exp(d) - d - 1)  # same value either way on-policy


class RowPolicy:
    """Log-probs from a table indexed by each row's ``row`` id, so minibatches select
    their rows and gradients land on the table."""

    def __init__(self, table: torch.Tensor, requires_grad: bool = True):
        self.table = table.clone().requires_grad_(requires_grad)

    def log_probs(self, batch, entropy=False):
        logp = self.table[batch["row"]]
        return logp, (torch.full_like(logp, 0.5).detach() if entropy else None)


def rows_batch(lengths: list[int], rewards: list[float], groups: list[int], T: int = 4) -> Batch:
    B = len(lengths)
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths])
    r = torch.zeros(B, T)
    placed = torch.zeros(B, T, dtype=torch.bool)
    for i, (n, v) in enumerate(zip(lengths, rewards)):
        r[i, n - 1] = v
        placed[i, n - 1] = True
    return Batch({"rewards": r, "reward_mask": placed, "group": torch.tensor(groups), "mask": mask,
                  "actions": torch.zeros(B, T, dtype=torch.long), "row": torch.arange(B)})


TABLE = torch.tensor([[-0.5, -1.0, -2.0, -3.0],
                      [-0.2, -0.4, -0.6, -0.8],
                      [-1.1, -1.2, -1.3, -1.4],
                      [-0.9, -0.1, -0.3, -0.7]])
STEP = torch.tensor([[0.3, -0.2, 0.1, 0.0],  # how far "earlier optimizer steps" moved the policy
                     [-0.25, 0.05, 0.4, 0.0],
                     [0.1, 0.1, -0.3, 0.2],
                     [0.0, -0.15, 0.25, 0.05]])


@pytest.mark.parametrize("corrected", [False, True])
def test_grpo_config_option_reaches_the_loss(corrected):
    beta = 0.04
    cfg = GRPOConfig(num_generations=2, beta=beta, loss_type="bnpo", num_iterations=2,
                     use_bias_correction_kl=corrected)
    obj = GRPO(cfg, max_new_tokens=4)
    batch = rows_batch([2, 3, 4, 1], [1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    policy = RowPolicy(TABLE)
    reference = RowPolicy(TABLE - 0.3 * STEP.flip(0), requires_grad=False)
    obj.prepare(batch, policy, reference)
    with torch.no_grad():
        policy.table += STEP  # off-policy: the ratio is not 1
    loss, _ = obj.loss(policy, batch)
    loss.backward()
    ours = policy.table.grad.clone()
    logp = (TABLE + STEP).requires_grad_(True)
    per_token = trl_per_token_loss(logp, batch["old_logp"], batch["ref_logp"], batch["advantages"], batch["mask"],
                                   eps_low=0.2, eps_high=0.2, beta=beta, use_bias_correction_kl=corrected)
    expected = (per_token * batch["mask"]).sum() / batch["mask"].sum()  # TRL's bnpo branch, one accumulation step
    expected.backward()
    close(loss, expected)
    close(ours, logp.grad)


def test_bias_correction_defaults():
    assert GRPOConfig().use_bias_correction_kl is False  # rlx keeps its earlier runs reproducible
    # rloo and reinforce put the KL in the reward: the option does not exist there
    for config in (RLOOConfig, ReinforceConfig):
        with pytest.raises(ValueError):
            config(use_bias_correction_kl=True)


# ------------------------------------------------------------------ dapo, k minibatches

@pytest.mark.parametrize("other_rank_tokens", [None, 7.0])
def test_dapo_minibatch_matches_trl_optimizer_step(monkeypatch, other_rank_tokens):
    """k = 2 minibatches of unequal token counts (5 and 8): each is one optimizer step in
    rlx, normalized as TRL normalizes one optimizer step's data: its tokens over all
    processes / the number of processes. ``other_rank_tokens`` simulates a second rank
    whose slice of the same minibatch has that many tokens."""
    beta = 0.04
    obj = GRPO(GRPOConfig(num_generations=2, beta=beta, loss_type="dapo", num_minibatches=2,
                          epsilon_high=0.28), max_new_tokens=4)
    batch = rows_batch([2, 3, 4, 4], [1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    policy = RowPolicy(TABLE)
    reference = RowPolicy(TABLE - 0.3 * STEP.flip(0), requires_grad=False)
    obj.prepare(batch, policy, reference)
    with torch.no_grad():
        policy.table += STEP
    world = 1
    if other_rank_tokens is not None:
        world = 2
        monkeypatch.setattr(rlx.plugins.shared.policy_gradient, "sum_over_ranks", lambda v: v + other_rank_tokens)
        monkeypatch.setattr(rlx.plugins.shared.policy_gradient, "rank_world", lambda: (0, 2))
    mbs = list(obj.minibatches(batch))
    assert [float(mb["mask"].sum()) for mb in mbs] == [5.0, 8.0]
    for mb in mbs:
        policy.table.grad = None
        loss, _ = obj.loss(policy, mb)
        loss.backward()
        logp = (TABLE + STEP)[mb["row"]].detach().requires_grad_(True)
        per_token = trl_per_token_loss(logp, mb["old_logp"], mb["ref_logp"], mb["advantages"], mb["mask"],
                                       eps_low=0.2, eps_high=0.28, beta=beta, use_bias_correction_kl=False)
        # TRL with this minibatch as one optimizer step's data: generation batch = the step
        n = float(mb["mask"].sum()) + (other_rank_tokens or 0.0)
        expected = trl_dapo_loss(per_token, mb["mask"], num_items_in_batch=n, num_processes=world,
                                 gradient_accumulation_steps=1, steps_per_generation=1)
        expected.backward()
        close(loss, expected)
        close(policy.table.grad[mb["row"]], logp.grad)


def test_dapo_equal_minibatches_match_trl_steps_per_generation():
    """TRL's own k-steps-per-generation setting (steps_per_generation = 2, no accumulation)
    normalizes each step by the generation batch's tokens x GA / steps_per_generation, the
    mean step's tokens; with equal minibatches that is each minibatch's count, as in rlx."""
    obj = GRPO(GRPOConfig(num_generations=2, beta=0.0, loss_type="dapo", num_minibatches=2), max_new_tokens=4)
    batch = rows_batch([3, 3, 2, 4], [1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1])
    policy = RowPolicy(TABLE)
    obj.prepare(batch, policy, None)
    with torch.no_grad():
        policy.table += STEP
    num_items_in_batch = float(batch["mask"].sum())  # 12: the whole generation batch
    mbs = list(obj.minibatches(batch))
    assert [float(mb["mask"].sum()) for mb in mbs] == [6.0, 6.0]
    for mb in mbs:
        loss, _ = obj.loss(policy, mb)
        logp = (TABLE + STEP)[mb["row"]]
        per_token = trl_per_token_loss(logp, mb["old_logp"], None, mb["advantages"], mb["mask"],
                                       eps_low=0.2, eps_high=0.2, beta=0.0, use_bias_correction_kl=False)
        expected = trl_dapo_loss(per_token, mb["mask"], num_items_in_batch=num_items_in_batch, num_processes=1,
                                 gradient_accumulation_steps=1, steps_per_generation=2)
        close(loss, expected)


# ---------------------------------------------------------------------- NaN rewards

class Fixed(RewardSource):
    """An outcome source returning fixed scores (NaN: not applicable)."""

    def __init__(self, scores: list[float], weight: float = 1.0, name: str = "fixed"):
        super().__init__(None, name=name)
        self.scores, self._weight = torch.tensor(scores), weight

    @property
    def weight(self) -> float:
        return self._weight

    def score(self, batch):
        return self.scores


# rewards_per_func [B, F] with F = 2 weighted sources; groups of 3, 3 and 2
PER_FUNC = [[1.0, 0.5], [NAN, NAN], [2.0, NAN],     # group 0: row 1 unscorable, row 2 partly NaN
            [0.0, 1.0], [3.0, 2.0], [NAN, 4.0],     # group 1: all scorable
            [NAN, NAN], [NAN, 1.5]]                 # group 2: one scorable row
WEIGHTS = [1.0, 0.5]
GROUPS = [0, 0, 0, 1, 1, 1, 2, 2]
LENGTHS = [2, 3, 1, 3, 3, 2, 1, 3]
KL_OLD_MINUS_REF = [0.4, -0.2, 0.1, 0.0, 0.3, -0.1, 0.5, 0.2]  # per row, put on the first token


def combined_batch(T: int = 3) -> Batch:
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in LENGTHS])
    old = torch.full((len(LENGTHS), T), -1.0)
    ref = old.clone()
    ref[:, 0] -= torch.tensor(KL_OLD_MINUS_REF)
    batch = Batch({"mask": mask, "group": torch.tensor(GROUPS), "old_logp": old, "ref_logp": ref})
    cols = list(zip(*PER_FUNC))
    combine([Fixed(list(cols[0]), WEIGHTS[0], "a"), Fixed(list(cols[1]), WEIGHTS[1], "b")], batch)
    return batch


def trl_rloo_advantages(rewards_per_func: torch.Tensor, weights: torch.Tensor, kl: torch.Tensor, beta: float,
                        num_generations: int) -> torch.Tensor:
    """TRL RLOOTrainer (normalize_advantages=False, the default; no reward clipping)."""
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    rewards = rewards - beta * kl
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = ((grouped_sum - grouped_rewards) / (scorable_counts - 1)).view(-1)
    return torch.nan_to_num(rewards - baselines, nan=0.0)


def test_rloo_nan_rewards_match_trl():
    # TRL's view needs equal groups: group 2 padded with one more unscorable row
    per_func = torch.tensor(PER_FUNC + [[NAN, NAN]], dtype=torch.double)
    kl = torch.tensor(KL_OLD_MINUS_REF + [0.0], dtype=torch.double)
    beta = 0.5
    expected = trl_rloo_advantages(per_func, torch.tensor(WEIGHTS, dtype=torch.double), kl, beta, 3)[:-1]
    batch = combined_batch()
    adv, _ = RLOO(RLOOConfig(num_generations=3, beta=beta)).advantages(
        batch["rewards"], batch["reward_mask"], batch["group"], batch)
    close(adv, expected[:, None].float() * batch["mask"])
    # the figures TRL's formula gives, by hand: group 0 rows 0, 2: R = 1.25 - 0.2, 2.0 - 0.05
    assert float(expected[0]) == pytest.approx((1.25 - 0.2) - (2.0 - 0.05))
    assert float(expected[1]) == 0.0 and float(expected[6]) == 0.0 and float(expected[7]) == 0.0


@pytest.mark.parametrize("make", [
    lambda: GRPO(GRPOConfig(num_generations=3, beta=0.0)),
    lambda: GRPO(GRPOConfig(num_generations=3, beta=0.0, scale_rewards="batch")),
    lambda: RLOO(RLOOConfig(num_generations=3, beta=0.5)),
    lambda: Reinforce(ReinforceConfig(num_generations=3, beta=0.5)),
], ids=["grpo", "grpo-batch", "rloo", "reinforce"])
def test_not_applicable_rows_are_left_out_everywhere(make):
    """The three families agree: a row whose every score is NaN gets advantage 0, and the
    other rows get exactly what they would get were that row not in the batch."""
    obj = make()
    batch = combined_batch()
    adv, _ = obj.advantages(batch["rewards"], batch["reward_mask"], batch["group"], batch)
    na = [i for i, r in enumerate(PER_FUNC) if all(math.isnan(v) for v in r)]
    assert na == [1, 6]
    close(adv[na], torch.zeros(len(na), adv.shape[1]))
    keep = [i for i in range(len(PER_FUNC)) if i not in na]
    sub = batch.select(keep)
    alone, _ = obj.advantages(sub["rewards"], sub["reward_mask"], sub["group"], sub)
    close(adv[keep], alone)
