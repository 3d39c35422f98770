"""GRPO math checked against values computed by hand from the formulas.

Every expected number below is written out from the formula (a literal, or plain Python
arithmetic on the chosen inputs), never by calling the code under test a second way.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from _approx import close as approx_close

from rlx.batch import Batch
from rlx.plugins.grpo.config import GRPOConfig
from rlx.plugins.grpo.objective import GRPO, aggregate, clipped_objective, group_advantages

EPS = 1e-4
NAN = float("nan")


close = partial(approx_close, atol=1e-5)  # sums of several float32 terms


def outcome_batch(rewards: list[float], last: list[int], T: int = 4):
    """One reward event per completion, at token ``last[i]``."""
    B = len(rewards)
    r = torch.zeros(B, T)
    m = torch.zeros(B, T, dtype=torch.bool)
    for i, (v, j) in enumerate(zip(rewards, last)):
        r[i, j] = v
        m[i, j] = True
    return r, m


def spread(per_sample: list[float], last: list[int], T: int = 4) -> list[list[float]]:
    """Outcome advantage on every token at or before the reward position, 0 after."""
    return [[a if t <= j else 0.0 for t in range(T)] for a, j in zip(per_sample, last)]


# ---------------------------------------------------------------------------- advantages

# group 0: rewards 1, 2, 3 -> mean 2, unbiased std sqrt(((-1)^2 + 0^2 + 1^2) / 2) = 1
# group 1: rewards 4, 4    -> mean 4, std 0 (all equal: a zero-advantage group)
REW_A = [1.0, 2.0, 3.0, 4.0, 4.0]
GRP_A = [0, 0, 0, 1, 1]
LAST_A = [3, 1, 2, 3, 0]

# group 0: rewards 1, 2, 3 -> mean 2, std 1
# group 1: rewards 0, 2    -> mean 1, unbiased std sqrt((1 + 1) / 1) = sqrt(2)
REW_B = [1.0, 2.0, 3.0, 0.0, 2.0]
GRP_B = [0, 0, 0, 1, 1]
LAST_B = [3, 1, 2, 3, 0]


def test_outcome_group_scaling_with_zero_group():
    r, m = outcome_batch(REW_A, LAST_A)
    adv, zero = group_advantages(r, m, torch.tensor(GRP_A), "group")
    s0 = 1.0 + EPS
    per = [-1 / s0, 0 / s0, 1 / s0, 0.0 / (0.0 + EPS), 0.0 / (0.0 + EPS)]
    close(adv, spread(per, LAST_A))
    assert adv.dtype == r.dtype
    assert zero == pytest.approx(1 / 2)  # group 1 has equal rewards


def test_outcome_group_scaling():
    r, m = outcome_batch(REW_B, LAST_B)
    adv, zero = group_advantages(r, m, torch.tensor(GRP_B), "group")
    s0, s1 = 1.0 + EPS, math.sqrt(2.0) + EPS
    per = [-1 / s0, 0 / s0, 1 / s0, -1 / s1, 1 / s1]
    close(adv, spread(per, LAST_B))
    assert zero == 0.0


def test_outcome_group_scaling_interleaved_groups():
    # same as above with the rows of the two groups interleaved: 0 1 0 1 0
    rew = [1.0, 0.0, 2.0, 2.0, 3.0]
    grp = [0, 1, 0, 1, 0]
    last = [3, 3, 1, 0, 2]
    r, m = outcome_batch(rew, last)
    adv, _ = group_advantages(r, m, torch.tensor(grp), "group")
    s0, s1 = 1.0 + EPS, math.sqrt(2.0) + EPS
    close(adv, spread([-1 / s0, -1 / s1, 0.0, 1 / s1, 1 / s0], last))


def test_outcome_batch_scaling():
    r, m = outcome_batch(REW_B, LAST_B)
    adv, zero = group_advantages(r, m, torch.tensor(GRP_B), "batch")
    # batch: mean (1+2+3+0+2)/5 = 1.6; deviations -0.6 0.4 1.4 -1.6 0.4;
    # squares .36 .16 1.96 2.56 .16 = 5.2; unbiased var 5.2/4 = 1.3
    sb = math.sqrt(1.3) + EPS
    per = [-1 / sb, 0.0, 1 / sb, -1 / sb, 1 / sb]  # still centred on the GROUP mean
    close(adv, spread(per, LAST_B))
    assert zero == 0.0


def test_outcome_batch_scaling_with_zero_group():
    r, m = outcome_batch(REW_A, LAST_A)
    adv, zero = group_advantages(r, m, torch.tensor(GRP_A), "batch")
    # batch: mean 14/5 = 2.8; deviations -1.8 -0.8 0.2 1.2 1.2; squares sum 6.8; var 6.8/4 = 1.7
    sb = math.sqrt(1.7) + EPS
    close(adv, spread([-1 / sb, 0.0, 1 / sb, 0.0, 0.0], LAST_A))
    assert zero == pytest.approx(1 / 2)


def test_outcome_no_scaling():
    r, m = outcome_batch(REW_B, LAST_B)
    adv, zero = group_advantages(r, m, torch.tensor(GRP_B), "none")
    close(adv, spread([-1.0, 0.0, 1.0, -1.0, 1.0], LAST_B))
    assert zero == 0.0
    r, m = outcome_batch(REW_A, LAST_A)
    adv, zero = group_advantages(r, m, torch.tensor(GRP_A), "none")
    close(adv, spread([-1.0, 0.0, 1.0, 0.0, 0.0], LAST_A))
    assert zero == pytest.approx(1 / 2)


def test_zero_adv_frac_all_groups_equal():
    r, m = outcome_batch([0.5, 0.5, 1.0, 1.0], [0, 1, 2, 3])
    adv, zero = group_advantages(r, m, torch.tensor([0, 0, 1, 1]), "group")
    close(adv, torch.zeros(4, 4))
    assert zero == 1.0


def test_process_advantages():
    # 2 completions of one group, T=4.
    # completion 0: events at t=1 (1.0) and t=3 (0.0)
    # completion 1: events at t=0 (1.0), t=2 (1.0), t=3 (0.0)
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0],
                            [1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[False, True, False, True],
                         [True, False, True, True]])
    group = torch.tensor([0, 0])
    # all 5 events of the group: 1, 0, 1, 1, 0 -> mean 0.6
    # deviations: c0: +0.4 (t1), -0.6 (t3); c1: +0.4 (t0), +0.4 (t2), -0.6 (t3)
    # squares .16 .36 .16 .16 .36 = 1.2 -> unbiased var 1.2 / 4 = 0.3
    s = math.sqrt(0.3) + EPS
    # advantage at t = sum of normalized events at positions >= t
    c0 = [(0.4 - 0.6) / s, (0.4 - 0.6) / s, -0.6 / s, -0.6 / s]
    c1 = [(0.4 + 0.4 - 0.6) / s, (0.4 - 0.6) / s, (0.4 - 0.6) / s, -0.6 / s]
    adv, zero = group_advantages(rewards, mask, group, "group")
    close(adv, [c0, c1])
    assert zero == 0.0

    adv, _ = group_advantages(rewards, mask, group, "none")
    close(adv, [[-0.2, -0.2, -0.6, -0.6], [0.2, -0.2, -0.2, -0.6]])


def test_process_advantages_two_groups():
    # group 0 as in test_process_advantages without scaling; group 1: events 2 (t0), 4 (t1)
    # in one completion, nothing else -> mean 3, deviations -1, +1
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0],
                            [1.0, 0.0, 1.0, 0.0],
                            [2.0, 4.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, False, True],
                         [True, False, True, True],
                         [True, True, False, False]])
    adv, zero = group_advantages(rewards, mask, torch.tensor([0, 0, 1]), "none")
    close(adv, [[-0.2, -0.2, -0.6, -0.6], [0.2, -0.2, -0.2, -0.6], [0.0, 1.0, 0.0, 0.0]])
    assert zero == 0.0


def test_nan_scores_are_no_events():
    # a NaN score is "not applicable": placed or not, it counts in no statistic and no return.
    # group 0: row 0 event 1.0; row 1 only a NaN (not applicable); row 2 events 3.0 and NaN
    # -> the group's events are 1 and 3: mean 2, unbiased std sqrt(2)
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0],
                            [0.0, 0.0, NAN, 0.0],
                            [3.0, 0.0, 0.0, NAN]])
    mask = torch.tensor([[False, True, False, False],
                         [False, False, True, False],
                         [True, False, False, True]])
    adv, zero = group_advantages(rewards, mask, torch.tensor([0, 0, 0]), "group")
    s = math.sqrt(2.0) + EPS
    close(adv, [[-1 / s, -1 / s, 0.0, 0.0], [0.0] * 4, [1 / s, 0.0, 0.0, 0.0]])
    assert zero == 0.0
    # the same as leaving the NaN scores unplaced, which is how rlx.reward.combine hands them over
    adv2, _ = group_advantages(torch.nan_to_num(rewards), mask & ~torch.isnan(rewards), torch.tensor([0, 0, 0]))
    close(adv2, adv)


# ----------------------------------------------------------------- clipped objective

EPS_LO, EPS_HI = 0.2, 0.3
# row 0: A = +1, ratios 1.25 (inside), 1.5 (> 1 + 0.3: clipped), 0.5 (< 0.8, A>0: not clipped, masked)
# row 1: A = -2, ratios 0.5 (< 0.8, A<0: clipped), 1.25 (inside), 1.5 (> 1.3, A<0: not clipped)
RATIOS = [[1.25, 1.5, 0.5], [0.5, 1.25, 1.5]]
ADV = [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
OLD = -1.0
# per-token loss -min(r A, clip(r, 0.8, 1.3) A):
# row 0: -min(1.25, 1.25) = -1.25; -min(1.5, 1.3) = -1.3; -min(0.5, 0.8) = -0.5
# row 1: -min(-1.0, -1.6) = 1.6;  -min(-2.5, -2.5) = 2.5; -min(-3.0, -2.6) = 3.0
PER_TOKEN = [[-1.25, -1.3, -0.5], [1.6, 2.5, 3.0]]
CLIPPED = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def token_inputs():
    old = torch.full((2, 3), OLD)
    logp = old + torch.log(torch.tensor(RATIOS))
    return logp, old, torch.tensor(ADV), torch.tensor(MASK)


def test_clipped_objective_token_level():
    logp, old, adv, mask = token_inputs()
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI)
    close(per_token, PER_TOKEN)
    close(info["clipped"], CLIPPED)
    assert "kl" not in info


def test_epsilon_high_matters():
    # with epsilon_high = epsilon = 0.2 the ratio 1.25 with A=+1 is clipped to 1.2
    logp, old, adv, mask = token_inputs()
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.2)
    # row 0: -min(1.25, 1.2) = -1.2; -min(1.5, 1.2) = -1.2; -min(0.5, 0.8) = -0.5
    # row 1 unchanged: the upper bound never binds for A < 0 (min picks r A = -2.5, -3.0)
    close(per_token, [[-1.2, -1.2, -0.5], [1.6, 2.5, 3.0]])
    close(info["clipped"], [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


# aggregation of PER_TOKEN with MASK:
#   row sums: -1.25 - 1.3 = -2.55 (2 tokens); 1.6 + 2.5 + 3.0 = 7.1 (3 tokens); total 4.55, 5 tokens
@pytest.mark.parametrize("loss_type, kwargs, expected", [
    ("grpo", dict(max_len=4, num_items=10.0), ((-2.55 / 2) + (7.1 / 3)) / 2),
    ("bnpo", dict(max_len=4, num_items=10.0), 4.55 / 5),
    ("dr_grpo", dict(max_len=4, num_items=10.0), 4.55 / (2 * 4)),
    ("dr_grpo", dict(max_len=7, num_items=10.0), 4.55 / (2 * 7)),
    ("dapo", dict(max_len=4, num_items=10.0), 4.55 / 10),
    ("dapo", dict(max_len=4, num_items=5.0), 4.55 / 5),
])
def test_aggregate_loss_types(loss_type, kwargs, expected):
    logp, old, adv, mask = token_inputs()
    per_token, _ = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI)
    close(aggregate(per_token, mask, loss_type, **kwargs), expected)


def test_aggregate_ignores_masked_values():
    per_token = torch.tensor([[1.0, 2.0, 1e6], [3.0, 1e6, 1e6]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    close(aggregate(per_token, mask, "grpo", max_len=3, num_items=3.0), (1.5 + 3.0) / 2)
    close(aggregate(per_token, mask, "bnpo", max_len=3, num_items=3.0), 6.0 / 3)
    close(aggregate(per_token, mask, "dr_grpo", max_len=3, num_items=3.0), 6.0 / 6)
    close(aggregate(per_token, mask, "dapo", max_len=3, num_items=3.0), 6.0 / 3)
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "nope", max_len=3, num_items=3.0)


def k3(d: float) -> float:
    """k3 estimator written out: exp(ref - logp) - (ref - logp) - 1, d = ref - logp."""
    return math.exp(d) - d - 1


# ref - logp per token; the masked token gets a large gap that must not count
D = [[math.log(2.0), 0.0, 5.0], [0.0, -math.log(2.0), 1.0]]
# k3(ln 2) = 2 - ln 2 - 1 = 1 - ln 2; k3(0) = 0; k3(-ln 2) = 1/2 + ln 2 - 1 = ln 2 - 1/2; k3(1) = e - 2
KL = [[1 - math.log(2.0), 0.0, math.exp(5.0) - 6.0], [0.0, math.log(2.0) - 0.5, math.e - 2]]


def test_clipped_objective_with_kl():
    beta = 0.1
    logp, old, adv, mask = token_inputs()
    ref = logp + torch.tensor(D)
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI,
                                        ref_logp=ref, beta=beta)
    close(info["kl"], KL, atol=1e-4)
    # the literal k3 values, to be sure the helper is right
    assert KL[0][0] == pytest.approx(0.3068528, abs=1e-6)
    assert KL[1][1] == pytest.approx(0.1931472, abs=1e-6)
    assert KL[1][2] == pytest.approx(0.7182818, abs=1e-6)
    expected = [[PER_TOKEN[i][t] + beta * KL[i][t] for t in range(3)] for i in range(2)]
    close(per_token, expected, atol=1e-4)
    close(info["clipped"], CLIPPED)  # KL does not change the clip diagnostic

    row0 = PER_TOKEN[0][0] + PER_TOKEN[0][1] + beta * (KL[0][0] + KL[0][1])  # masked token left out
    row1 = sum(PER_TOKEN[1]) + beta * sum(KL[1])
    close(aggregate(per_token, mask, "grpo", max_len=4, num_items=5.0), (row0 / 2 + row1 / 3) / 2)
    close(aggregate(per_token, mask, "bnpo", max_len=4, num_items=5.0), (row0 + row1) / 5)
    close(aggregate(per_token, mask, "dr_grpo", max_len=4, num_items=5.0), (row0 + row1) / 8)
    close(aggregate(per_token, mask, "dapo", max_len=4, num_items=9.0), (row0 + row1) / 9)


def test_kl_needs_both_beta_and_reference():
    logp, old, adv, mask = token_inputs()
    ref = logp + torch.tensor(D)
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI,
                                        ref_logp=ref, beta=0.0)
    assert "kl" not in info
    close(per_token, PER_TOKEN)
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI,
                                        ref_logp=None, beta=0.5)
    assert "kl" not in info
    close(per_token, PER_TOKEN)


def test_sequence_level_gspo():
    # per-sequence ratio = exp(mean over masked tokens of (logp - old_logp))
    ratios = [[1.25, 1.5, 0.5],   # mask 1 1 0 -> sqrt(1.25 * 1.5) = sqrt(1.875) = 1.369306 > 1.3
              [0.5, 1.25, 1.5],   # mask 1 1 1 -> (0.9375)^(1/3) = 0.978717, inside [0.8, 1.3]
              [0.5, 0.5, 1.0]]    # mask 1 1 1 -> (0.25)^(1/3) = 0.629961 < 0.8
    adv = torch.tensor([[1.0] * 3, [-2.0] * 3, [-1.0] * 3])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    old = torch.full((3, 3), OLD)
    logp = old + torch.log(torch.tensor(ratios))
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI,
                                        level="sequence")
    r0, r1, r2 = math.sqrt(1.875), 0.9375 ** (1 / 3), 0.25 ** (1 / 3)
    assert r0 == pytest.approx(1.369306, abs=1e-6)
    assert r1 == pytest.approx(0.978717, abs=1e-6)
    assert r2 == pytest.approx(0.629961, abs=1e-6)
    # row 0: A=+1, r0 > 1.3 -> -min(r0, 1.3) = -1.3
    # row 1: A=-2, inside -> -(-2 r1) = 2 r1
    # row 2: A=-1, r2 < 0.8 -> -min(-r2, -0.8) = 0.8
    l0, l1, l2 = -1.3, 2 * r1, 0.8
    close(per_token.expand(3, 3), [[l0] * 3, [l1] * 3, [l2] * 3])
    close(info["clipped"].expand(3, 3), [[1.0] * 3, [0.0] * 3, [1.0] * 3])
    close(aggregate(per_token, mask, "grpo", max_len=3, num_items=8.0), (l0 + l1 + l2) / 3)
    close(aggregate(per_token, mask, "bnpo", max_len=3, num_items=8.0), (2 * l0 + 3 * l1 + 3 * l2) / 8)
    close(aggregate(per_token, mask, "dr_grpo", max_len=4, num_items=8.0), (2 * l0 + 3 * l1 + 3 * l2) / 12)
    close(aggregate(per_token, mask, "dapo", max_len=3, num_items=16.0), (2 * l0 + 3 * l1 + 3 * l2) / 16)

    # the masked token's log-ratio must not enter the sequence ratio
    logp2 = logp.clone()
    logp2[0, 2] = OLD + 40.0
    per_token2, _ = clipped_objective(logp2, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI,
                                      level="sequence")
    close((per_token2 * mask), (per_token * mask).expand(3, 3))


def test_sequence_level_with_kl():
    beta = 0.1
    ratios = [[1.25, 1.5, 0.5], [0.5, 1.25, 1.5]]
    adv = torch.tensor([[1.0] * 3, [-2.0] * 3])
    mask = torch.tensor(MASK)
    old = torch.full((2, 3), OLD)
    logp = old + torch.log(torch.tensor(ratios))
    ref = logp + torch.tensor(D)
    per_token, info = clipped_objective(logp, old, adv, mask, epsilon=EPS_LO, epsilon_high=EPS_HI,
                                        level="sequence", ref_logp=ref, beta=beta)
    l0, l1 = -1.3, 2 * 0.9375 ** (1 / 3)
    # KL stays per token
    expected = [[l0 + beta * KL[0][t] for t in range(3)], [l1 + beta * KL[1][t] for t in range(3)]]
    close(per_token, expected, atol=1e-4)
    row0 = 2 * l0 + beta * (KL[0][0] + KL[0][1])
    row1 = 3 * l1 + beta * sum(KL[1])
    close(aggregate(per_token, mask, "grpo", max_len=3, num_items=5.0), (row0 / 2 + row1 / 3) / 2)


def test_clipped_flags_exactly_the_clipped_tokens():
    # ratios at and just around the bounds, both signs of A, eps = 0.2, eps_high = 0.3
    ratios = torch.tensor([[0.7, 0.81, 1.29, 1.4],
                           [0.7, 0.81, 1.29, 1.4],
                           [0.7, 1.0, 1.4, 1.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0, 1.0],
                        [-1.0, -1.0, -1.0, -1.0],
                        [0.0, 0.0, 0.0, 0.0]])
    old = torch.zeros(3, 4)
    logp = torch.log(ratios)
    mask = torch.ones(3, 4)
    _, info = clipped_objective(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.3)
    # A>0: only ratio > 1.3 (1.4); A<0: only ratio < 0.8 (0.7); A=0: never
    close(info["clipped"], [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_gradient_at_ratio_one():
    # grpo, num_iterations=1: old = logp.detach() so ratio = 1 and
    # d loss / d logp_t = -A_t / n_i / B (n_i = masked tokens of sequence i)
    logp = torch.tensor([[-0.3, -1.2, -2.0], [-0.7, -0.1, -1.5]], requires_grad=True)
    adv = torch.tensor([[0.5, 0.5, 0.5], [-1.0, 2.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    per_token, _ = clipped_objective(logp, logp.detach(), adv, mask, epsilon=0.2, epsilon_high=0.2)
    loss = aggregate(per_token, mask, "grpo", max_len=3, num_items=5.0)
    loss.backward()
    B = 2
    expected = [[-0.5 / 2 / B, -0.5 / 2 / B, 0.0],
                [1.0 / 3 / B, -2.0 / 3 / B, -3.0 / 3 / B]]  # = [[-1/8, -1/8, 0], [1/6, -1/3, -1/2]]
    close(logp.grad, expected)
    close(loss, (-(0.5 + 0.5) / 2 + -(-1.0 + 2.0 + 3.0) / 3) / 2)


# ---------------------------------------------------------------------- GRPO class

class FakePolicy:
    """A policy that returns fixed log-probs (and a fixed entropy) for any batch."""

    def __init__(self, logp: torch.Tensor, requires_grad: bool = True):
        self.logp = logp.clone().requires_grad_(requires_grad)
        self.calls = 0

    def log_probs(self, batch, entropy=False):
        self.calls += 1
        ent = torch.full_like(self.logp, 0.5).detach() if entropy else None
        return self.logp, ent


def grpo_batch():
    # 2 groups of 2; lengths 2, 3, 4, 1 (T = 4); outcome reward at each last token
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0],
                         [1.0, 1.0, 1.0, 0.0],
                         [1.0, 1.0, 1.0, 1.0],
                         [1.0, 0.0, 0.0, 0.0]])
    r, m = outcome_batch([1.0, 0.0, 1.0, 1.0], [1, 2, 3, 0])
    return Batch({"rewards": r, "reward_mask": m, "group": torch.tensor([0, 0, 1, 1]), "mask": mask,
                  "actions": torch.zeros(4, 4, dtype=torch.long)})


LOGP = torch.tensor([[-0.5, -1.0, -2.0, -3.0],
                     [-0.2, -0.4, -0.6, -0.8],
                     [-1.1, -1.2, -1.3, -1.4],
                     [-0.9, -0.1, -0.1, -0.1]])


def test_grpo_prepare_and_loss_without_reference():
    cfg = GRPOConfig(num_generations=2, beta=0.0, loss_type="dr_grpo")
    obj = GRPO(cfg, max_new_tokens=4)
    assert obj.needs_reference is False
    assert obj.group_size == 2
    batch = grpo_batch()
    policy = FakePolicy(LOGP)
    stats = obj.prepare(batch, policy, None)
    assert stats["grpo/zero_adv_frac"] == pytest.approx(1 / 2)  # group 1: rewards 1, 1
    assert "ref_logp" not in batch and "old_logp" not in batch
    # group 0: rewards 1, 0 -> mean 0.5, unbiased std sqrt(0.25 + 0.25) = sqrt(0.5)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    close(batch["advantages"], spread([a, -a, 0.0, 0.0], [1, 2, 3, 0]))

    loss, metrics = obj.loss(policy, batch)
    assert {"loss/policy", "policy/clip_frac"} <= set(metrics)
    assert "kl/ref" not in metrics
    # ratio 1: per-token loss -A; dr_grpo: sum over masked tokens / (B * max_new_tokens)
    # = (-a * 2 + a * 3 + 0 + 0) / (4 * 4)
    expected = (-2 * a + 3 * a) / 16
    close(loss, expected)
    assert metrics["loss/policy"] == pytest.approx(expected, abs=1e-6)
    assert metrics["policy/clip_frac"] == 0.0
    assert metrics["policy/entropy"] == pytest.approx(0.5)
    loss.backward()
    # gradient of dr_grpo at ratio 1: -A_t * mask_t / (B * max_len)
    close(policy.logp.grad, [[-a / 16, -a / 16, 0, 0], [a / 16, a / 16, a / 16, 0], [0] * 4, [0] * 4])


def test_grpo_beta_needs_reference():
    beta = 0.1
    cfg = GRPOConfig(num_generations=2, beta=beta, loss_type="grpo")
    obj = GRPO(cfg, max_new_tokens=4)
    assert obj.needs_reference is True
    batch = grpo_batch()
    policy = FakePolicy(LOGP)
    reference = FakePolicy(LOGP + math.log(2.0), requires_grad=False)  # ref - logp = ln 2 everywhere
    stats = obj.prepare(batch, policy, reference)
    assert "ref_logp" in batch
    assert stats["grpo/zero_adv_frac"] == pytest.approx(1 / 2)
    loss, metrics = obj.loss(policy, batch)
    kl = 1 - math.log(2.0)  # k3(ln 2)
    assert metrics["kl/ref"] == pytest.approx(kl, abs=1e-5)
    # grpo: per-sequence mean of (-A + beta kl); advantages +a, -a, 0, 0 constant per row
    a = 0.5 / (math.sqrt(0.5) + EPS)
    expected = ((-a + beta * kl) + (a + beta * kl) + beta * kl + beta * kl) / 4
    close(loss, expected)
    assert {"loss/policy", "policy/clip_frac"} <= set(metrics)


def test_grpo_multiple_iterations_cache_old_logp():
    cfg = GRPOConfig(num_generations=2, beta=0.0, num_iterations=2)
    obj = GRPO(cfg, max_new_tokens=4)
    batch = grpo_batch()
    policy = FakePolicy(LOGP)
    obj.prepare(batch, policy, None)
    assert "old_logp" in batch and not batch["old_logp"].requires_grad
    close(batch["old_logp"], LOGP)
    assert len(list(obj.minibatches(batch))) == 2


def test_grpo_epsilon_high_default():
    assert GRPO(GRPOConfig(epsilon=0.25), max_new_tokens=4).eps_high == 0.25
    assert GRPO(GRPOConfig(epsilon=0.2, epsilon_high=0.28), max_new_tokens=4).eps_high == 0.28
