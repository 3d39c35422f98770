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

