"""PPO: GAE and the loss terms against hand-computed values, and short real runs on
gymnasium (CartPole learns; Pendulum's continuous-action return improves)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _cli import rlx

from rlx.batch import Batch
from rlx.plugins.ppo.config import PPOConfig
from rlx.plugins.ppo.objective import PPO, explained_variance, gae


def test_gae_by_hand():
    # one env, 3 steps, no episode end; gamma=0.5, lambda=0.5
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, 1.0, 1.5]])
    nv = torch.tensor([2.0])
    d = torch.zeros(1, 3)
    adv, ret = gae(r, v, d, nv, gamma=0.5, lam=0.5)
    d2 = 3 + 0.5 * 2.0 - 1.5           # 2.5
    d1 = 2 + 0.5 * 1.5 - 1.0           # 1.75
    d0 = 1 + 0.5 * 1.0 - 0.5           # 1.0
    a2 = d2
    a1 = d1 + 0.25 * a2                # 2.375
    a0 = d0 + 0.25 * a1                # 1.59375
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5])


def test_gae_stops_at_episode_end():
    # the episode ends at step 0: step 1's value and advantage must not leak back
    r = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[0.0, 10.0]])
    d = torch.tensor([[1.0, 0.0]])
    adv, _ = gae(r, v, d, torch.tensor([0.0]), gamma=0.9, lam=0.9)
    assert adv[0, 0].item() == pytest.approx(1.0)           # r0 - V0, nothing bootstrapped
    assert adv[0, 1].item() == pytest.approx(0.0 + 0.9 * 0.0 - 10.0)


def test_gae_lambda_one_is_monte_carlo():
    r = torch.tensor([[1.0, 1.0, 1.0]])
    v = torch.tensor([[0.3, -0.2, 0.7]])
    adv, ret = gae(r, v, torch.zeros(1, 3), torch.tensor([4.0]), gamma=0.9, lam=1.0)
    mc = [1 + 0.9 + 0.81 + 0.729 * 4, 1 + 0.9 + 0.81 * 4, 1 + 0.9 * 4]
    assert ret[0].tolist() == pytest.approx(mc)


class FixedPolicy:
    def __init__(self, logp, value, entropy):
        self.logp, self.v, self.ent = logp, value, entropy

    def evaluate_actions(self, batch):
        return self.logp, self.ent, self.v


def test_loss_terms_by_hand():
    cfg = PPOConfig(clip_range=0.2, clip_schedule="constant", clip_value=0.5, ent_coef=0.1, vf_coef=0.5,
                    normalize_advantages=False)
    ppo = PPO(cfg)
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.5, 0.9, 1.0]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    batch = Batch({"old_logp": old, "advantages": adv, "returns": torch.tensor([[1.0, 0.0, 2.0]]),
                   "values": torch.tensor([[0.0, 0.0, 1.0]])})
    value = torch.tensor([[2.0, 0.1, 1.2]])
    loss, m = ppo.loss(FixedPolicy(logp, value, torch.tensor([[0.5, 0.5, 0.5]])), batch)
    # ratios 1.5 (clipped to 1.2 for A>0), 0.9 (clip to 0.8 irrelevant: 0.9 inside), 1.0
    pg = (max(-1.0 * 1.5, -1.0 * 1.2) + max(1.0 * 0.9, 1.0 * 0.9) + max(-2.0 * 1.0, -2.0 * 1.0)) / 3
    # value clipping: old + clamp(v - old, -0.5, 0.5)
    v_unclipped = [(2.0 - 1.0) ** 2, (0.1 - 0.0) ** 2, (1.2 - 2.0) ** 2]
    v_clipped = [(0.5 - 1.0) ** 2, (0.1 - 0.0) ** 2, (1.2 - 2.0) ** 2]
    vl = 0.5 * sum(max(a, b) for a, b in zip(v_unclipped, v_clipped)) / 3
    assert m["loss/policy"] == pytest.approx(pg)
    assert m["loss/value"] == pytest.approx(vl)
    assert m["policy/entropy"] == pytest.approx(0.5)
    assert float(loss.detach()) == pytest.approx(pg - 0.1 * 0.5 + 0.5 * vl)
    kl = sum((r - 1) - math.log(r) for r in (1.5, 0.9, 1.0)) / 3
    assert m["policy/approx_kl"] == pytest.approx(kl, rel=1e-5)
    assert m["policy/clip_frac"] == pytest.approx(1 / 3)


def test_clip_schedule_and_target_kl():
    ppo = PPO(PPOConfig(clip_range=0.2, clip_schedule="linear", target_kl=0.01, epochs=5))
    ppo.on_step(1, 4)
    assert ppo.clip == pytest.approx(0.2)
    ppo.on_step(3, 4)
    assert ppo.clip == pytest.approx(0.1)
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(1.0)


@pytest.mark.slow
def test_cartpole_learns(tmp_path):
    proc = rlx("run", "--objective", "ppo", "--env", "gym", "--policy", "mlp", "--set", "env.id=CartPole-v1",
               "--seed", "1", "--set", "run.env_steps=40000", "--set", "run.eval_every=0", "--no-progress",
               home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    hist = sorted(client.get_metric_history(run["mlflow_run_id"], "eval/return"), key=lambda m: m.step)
    print(f"CartPole eval/return {hist[0].value:.1f} -> {hist[-1].value:.1f}")
    assert hist[0].step == 0 and hist[-1].value >= 150 and hist[-1].value > 3 * hist[0].value, hist
    assert "learning_curve.png" in {a.path for a in client.list_artifacts(run["mlflow_run_id"])}
    data = client.get_run(run["mlflow_run_id"]).data.metrics
    for k in ("loss/value", "policy/approx_kl", "ppo/explained_variance", "episode/return", "perf/env_steps_per_s"):
        assert k in data, k


@pytest.mark.slow
def test_pendulum_continuous_improves(tmp_path):
    proc = rlx("run", "--objective", "ppo", "--env", "gym", "--policy", "mlp", "--set", "env.id=Pendulum-v1",
               "--seed", "0", "--set", "run.env_steps=60000", "--set", "run.eval_every=0",
               "--set", "env.num_envs=4", "--set", "objective.n_steps=256", "--set", "objective.gamma=0.9",
               "--set", "objective.gae_lambda=0.95", "--set", "objective.epochs=10",
               "--set", "objective.num_minibatches=16", "--set", "objective.clip_schedule=constant",
               "--set", "optim.lr=1e-3", "--set", "policy.log_std_init=-0.5", "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    hist = sorted(client.get_metric_history(run["mlflow_run_id"], "eval/return"), key=lambda m: m.step)
    first, last = hist[0].value, hist[-1].value
    print(f"Pendulum eval/return {first:.1f} -> {last:.1f}")
    assert last > first + 300, (first, last)
