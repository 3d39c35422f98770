"""RLOO's leave-one-out baseline and REINFORCE++'s batch normalization against values
computed by hand."""

from __future__ import annotations

import statistics

import pytest
import torch

from rlx.batch import Batch
from rlx.plugins.reinforce.config import ReinforceConfig
from rlx.plugins.reinforce.objective import Reinforce, batch_normalized_returns
from rlx.plugins.rloo.config import RLOOConfig
from rlx.plugins.rloo.objective import RLOO, leave_one_out


def test_leave_one_out_by_hand():
    r = torch.tensor([1.0, 2.0, 6.0, 5.0, 3.0])
    g = torch.tensor([0, 0, 0, 1, 1])
    # group 0: baselines (2+6)/2, (1+6)/2, (1+2)/2; group 1: 3, 5
    assert torch.allclose(leave_one_out(r, g), torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 5 - 3.0, 3 - 5.0]))


def test_rloo_advantages_subtract_the_kl_then_the_baseline():
    obj = RLOO(RLOOConfig(num_generations=2, beta=0.5))
    rewards = torch.tensor([[0.0, 1.0, float("nan")], [0.0, 0.0, 3.0]])  # NaN off the event: ignored
    placed = torch.tensor([[False, True, False], [False, False, True]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    old = torch.tensor([[-1.0, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-2.0, -1.0, -1.0]])  # summed log-ratios 0.5 and 1.0
    batch = Batch({"mask": mask, "old_logp": old, "ref_logp": ref})
    adv, m = obj.advantages(rewards, placed, torch.tensor([0, 0]), batch)
    r0, r1 = 1.0 - 0.5 * 0.5, 3.0 - 0.5 * 1.0  # 0.75, 2.5
    assert torch.allclose(adv, torch.tensor([[r0 - r1] * 2 + [0.0], [r1 - r0] * 3]))
    assert m["kl/ref"] == pytest.approx(0.75)


def test_batch_normalized_returns_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    returns = [2.0, 2.0, 2.0, 1.0, 0.0]  # reward-to-go of the five completion tokens
    mu, sd = statistics.mean(returns), statistics.stdev(returns)
    out = batch_normalized_returns(rewards, mask)
    expected = torch.tensor([[(2 - mu) / sd] * 3, [(1 - mu) / sd, (0 - mu) / sd, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_reinforce_kl_penalty_is_per_token():
    obj = Reinforce(ReinforceConfig(beta=1.0))
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    placed = torch.tensor([[False, True], [False, True]])
    mask = torch.ones(2, 2)
    batch = Batch({"mask": mask, "old_logp": torch.tensor([[0.0, 0.0], [0.0, 0.0]]),
                   "ref_logp": torch.tensor([[-1.0, 0.0], [0.0, 0.0]])})
    adv, _ = obj.advantages(rewards, placed, torch.tensor([0, 1]), batch)
    # token rewards [[-1, 1], [0, 0]] -> returns [[0, 1], [0, 0]] -> normalized over 4 tokens
    returns = [0.0, 1.0, 0.0, 0.0]
    mu, sd = statistics.mean(returns), statistics.stdev(returns)
    assert torch.allclose(adv, torch.tensor([[(0 - mu) / sd, (1 - mu) / sd], [(0 - mu) / sd] * 2]), atol=1e-6)


NAN = float("nan")


def test_leave_one_out_leaves_out_nan_rows():
    r = torch.tensor([1.0, NAN, 6.0, 2.0, 5.0, NAN, NAN, NAN])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    # group 0, applicable 1, 6, 2: baselines (6+2)/2, (1+2)/2, (1+6)/2; the NaN row gets 0
    # group 1: 5 is alone among applicable rows -> 0 (no baseline), as a lone row in grpo
    # group 2: nothing applicable -> 0, 0
    expected = torch.tensor([1 - 4.0, 0.0, 6 - 1.5, 2 - 3.5, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(leave_one_out(r, g), expected)


def test_rloo_advantages_not_applicable_rows():
    obj = RLOO(RLOOConfig(num_generations=4, beta=0.0))
    # group 0: row 0 event 1.0; row 1 its only placed score NaN (not applicable); row 2 events
    # 2.0 and NaN (applicable, R = 2: the NaN event is left out); row 3 no event (not applicable)
    # group 1: row 4 event 5.0 alone among applicable rows; row 5 NaN
    rewards = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, NAN], [2.0, 0.0, NAN],
                            [0.0, 0.0, 0.0], [0.0, 0.0, 5.0], [NAN, 0.0, 0.0]])
    placed = torch.tensor([[False, True, False], [False, False, True], [True, False, True],
                           [False, False, False], [False, False, True], [True, False, False]])
    mask = torch.tensor([[1.0, 1.0, 0.0]] + [[1.0, 1.0, 1.0]] * 5)
    adv, _ = obj.advantages(rewards, placed, torch.tensor([0, 0, 0, 0, 1, 1]), Batch({"mask": mask}))
    # rows 0 and 2: R = 1 and 2, each one's baseline the other: -1, +1 (NaN rows counted
    # as 0 would give 1 - (0 + 2 + 0) / 3 instead)
    expected = torch.tensor([[-1.0, -1.0, 0.0], [0.0] * 3, [1.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3])
    assert torch.allclose(adv, expected)


def test_batch_normalized_returns_leave_out_rows():
    rewards = torch.tensor([[0.0, 0.0, 2.0], [NAN, NAN, NAN], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    returns = [2.0, 2.0, 2.0, 1.0, 0.0]  # rows 0 and 2 only
    mu, sd = statistics.mean(returns), statistics.stdev(returns)
    out = batch_normalized_returns(rewards, mask, applicable=torch.tensor([True, False, True]))
    expected = torch.tensor([[(2 - mu) / sd] * 3, [0.0] * 3, [(1 - mu) / sd, (0 - mu) / sd, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)
    out = batch_normalized_returns(rewards, mask, applicable=torch.tensor([False, False, False]))
    assert torch.equal(out, torch.zeros(3, 3))


def test_reinforce_not_applicable_rows():
    obj = Reinforce(ReinforceConfig(beta=1.0))
    # row 0: event 2.0 at t2; row 1: no event (not applicable); row 2: events 1.0 at t0 and
    # NaN at t1 (applicable on its number); row 3: its only placed score NaN (not applicable)
    rewards = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [1.0, NAN, 0.0], [0.0, NAN, 0.0]])
    placed = torch.tensor([[False, False, True], [False, False, False], [True, True, False],
                           [False, True, False]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    zeros = torch.zeros(4, 3)
    old = zeros.clone()
    old[1, 0] = old[3, 0] = 0.7  # KL on the left-out rows: must not matter
    old[2, 1] = 0.5              # row 2, t1: token reward -1 x 0.5
    batch = Batch({"mask": mask, "old_logp": old, "ref_logp": zeros})
    adv, _ = obj.advantages(rewards, placed, torch.tensor([0, 0, 1, 1]), batch)
    # token rewards: row 0 [0, 0, 2], row 2 [1, -0.5]; returns [2, 2, 2] and [0.5, -0.5]
    returns = [2.0, 2.0, 2.0, 0.5, -0.5]
    mu, sd = statistics.mean(returns), statistics.stdev(returns)
    expected = torch.tensor([[(2 - mu) / sd] * 3, [0.0] * 3, [(0.5 - mu) / sd, (-0.5 - mu) / sd, 0.0], [0.0] * 3])
    assert torch.allclose(adv, expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["rloo", "reinforce"])
def test_runs_end_to_end(tmp_path, objective):
    from _cli import latest_run, metric_history, rlx

    proc = rlx("run", "--objective", objective, "--reward", "prm", "--steps", "4", "--set", "run.batch_size=4",
               "--set", "run.eval_every=0", "--set", "env.eval_size=16", "--set", "run.threads=1", "--no-progress",
               home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    assert [m.step for m in metric_history(client, run["mlflow_run_id"], "kl/ref")] == [1, 2, 3, 4]
    assert run["objective"] == objective and run["status"] == "FINISHED"

