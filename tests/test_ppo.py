"""PPO: GAE and the loss terms against hand-computed values, and short real runs on
gymnasium (CartPole learns; Pendulum's continuous-action return improves)."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
from _cli import latest_run, metric_history, rlx

from rlx.batch import Batch
from rlx.plugins.ppo.config import PPOConfig
from rlx.plugins.ppo.objective import PPO, AdaptiveKL, explained_variance, gae, token_gae, whiten


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

    def evaluate_actions(self, batch, entropy=True):
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
    assert float(m["loss/policy"]) == pytest.approx(pg)
    assert float(m["loss/value"]) == pytest.approx(vl)
    assert float(m["policy/entropy"]) == pytest.approx(0.5)
    assert float(loss.detach()) == pytest.approx(pg - 0.1 * 0.5 + 0.5 * vl)
    kl = sum((r - 1) - math.log(r) for r in (1.5, 0.9, 1.0)) / 3
    assert float(m["policy/approx_kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(m["policy/clip_frac"]) == pytest.approx(1 / 3)


def test_clip_schedule_and_target_kl():
    ppo = PPO(PPOConfig(clip_range=0.2, clip_schedule="linear", target_kl=0.01, epochs=5))
    ppo.begin_step(1, 4)
    assert ppo.clip == pytest.approx(0.2)
    ppo.begin_step(3, 4)
    assert ppo.clip == pytest.approx(0.1)
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(1.0)


def test_token_gae_by_hand():
    # two completions; the second is 2 tokens long (its third position is padding)
    r = torch.tensor([[0.0, 1.0, 2.0], [1.0, 3.0, 9.0]])
    v = torch.tensor([[0.5, 0.5, 1.0], [1.0, 2.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = token_gae(r, v, mask, gamma=1.0, lam=0.5)
    # row 0: deltas r_t + V_{t+1} - V_t, with V after the last token = 0
    d = [0 + 0.5 - 0.5, 1 + 1.0 - 0.5, 2 + 0 - 1.0]
    a2 = d[2]
    a1 = d[1] + 0.5 * a2
    a0 = d[0] + 0.5 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    # row 1: the episode ends at token 1; the padding's reward 9 and value 7 must not leak back
    b1 = 3 + 0 - 2.0
    b0 = (1 + 2.0 - 1.0) + 0.5 * b1
    assert adv[1].tolist() == pytest.approx([b0, b1, 0.0])
    assert ret[1].tolist() == pytest.approx([b0 + 1.0, b1 + 2.0, 0.0])


def test_whiten_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = whiten(x, mask)
    on = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    expect = (on - on.mean()) / on.std()
    assert w[mask.bool()].tolist() == pytest.approx(expect.tolist(), rel=1e-5)
    assert w[0, 2].item() == 0.0


def test_adaptive_kl_coefficient():
    kl = AdaptiveKL(0.1, target=6.0, horizon=100)
    kl.update(12.0, n=10)  # twice the target: error clipped to +0.2
    assert kl.coef == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    kl.update(3.0, n=10)  # half the target: error -0.2... clipped from -0.5
    assert kl.coef == pytest.approx(0.1 * 1.02 * (1 - 0.2 * 0.1))
    fixed = AdaptiveKL(0.05, target=None, horizon=100)
    fixed.update(100.0, n=50)
    assert fixed.coef == 0.05


def test_text_loss_is_token_masked():
    """Text batches: the surrogate and value loss average over completion tokens only."""
    cfg = PPOConfig(clip_range=0.2, clip_schedule="constant", clip_value=None, vf_coef=1.0, normalize_advantages=False)
    ppo = PPO(cfg, env_kind="text")
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    batch = Batch({"old_logp": torch.zeros(1, 3), "advantages": torch.tensor([[1.0, 2.0, 50.0]]),
                   "returns": torch.tensor([[1.0, 1.0, 40.0]]), "values": torch.zeros(1, 3), "mask": mask})
    value = torch.tensor([[0.0, 2.0, -9.0]])
    loss, m = ppo.loss(FixedPolicy(torch.zeros(1, 3), value, torch.ones(1, 3)), batch)
    assert float(m["loss/policy"]) == pytest.approx(-(1.0 + 2.0) / 2)
    assert float(m["loss/value"]) == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_mlp_log_probs_match_torch_distributions():
    from types import SimpleNamespace

    from rlx.plugins.mlp.policy import ActorCritic

    cfg = SimpleNamespace(activation="tanh", hidden_sizes=[8], shared=False, ortho_init=True, log_std_init=-0.3)
    torch.manual_seed(0)
    for discrete in (True, False):
        net = ActorCritic(3, 2, discrete, cfg)
        out = torch.randn(6, 2)
        a = net.sample(out)
        logp, ent = net.log_prob_entropy(out, a)
        assert ent is not None
        if discrete:
            d = torch.distributions.Categorical(logits=out)
            ref_lp, ref_ent = d.log_prob(a), d.entropy()
        else:
            d = torch.distributions.Normal(out, net.log_std.exp().expand_as(out))
            ref_lp, ref_ent = d.log_prob(a).sum(-1), d.entropy().sum(-1)
        assert torch.allclose(logp, ref_lp, atol=1e-6) and torch.allclose(ent, ref_ent, atol=1e-6)


def test_gym_normalization_and_async():
    import numpy as np

    from rlx.plugins.gym.config import GymConfig
    from rlx.plugins.gym.env import GymEnv, RunningMeanStd

    rms, x = RunningMeanStd((2,)), np.random.default_rng(0).normal(5.0, 2.0, (600, 2))
    for chunk in np.split(x, 6):
        rms.update(chunk)
    assert rms.mean == pytest.approx(x.mean(0)) and rms.var == pytest.approx(x.var(0), rel=1e-4)

    env = GymEnv(GymConfig(id="Pendulum-v1", num_envs=4, normalize_obs=True, normalize_reward=True), seed=0)
    env.reset()
    obs, rew = [], []
    for _ in range(400):
        o, r, *_ = env.step(torch.randn(4, 1))
        obs.append(o)
        rew.append(r)
    obs_t = torch.stack(obs).reshape(-1, 3)
    assert obs_t.mean(0).abs().max() < 0.5 and (obs_t.std(0) - 1).abs().max() < 0.4
    assert torch.stack(rew[200:]).abs().max() < 1.0  # raw Pendulum rewards reach -16
    assert env.episode_stats()["episode/return"] < -500  # episode returns stay raw
    env.close()

    sync = GymEnv(GymConfig(id="CartPole-v1", num_envs=3), seed=7)
    asyn = GymEnv(GymConfig(id="CartPole-v1", num_envs=3, vectorization="async"), seed=7)
    assert torch.equal(sync.reset(), asyn.reset())  # same seeds, same episodes
    for _ in range(30):
        a = torch.randint(0, 2, (3,))
        s_out, a_out = sync.step(a), asyn.step(a)
        assert torch.equal(s_out[0], a_out[0]) and torch.equal(s_out[1], a_out[1])
    sync.close()
    asyn.close()


def test_kind_defaults():
    from rlx.config import compose, resolve
    from rlx.registry import get_registry

    reg = get_registry()
    text = resolve(compose(None, {"objective": "ppo", "reward": ["prm"]}, []), reg)
    assert text.objective.gamma == 1.0 and text.optim.lr == 1e-4 and text.run.env_steps is None
    control = resolve(compose(None, {"objective": "ppo", "env": "gym", "policy": "mlp"}, ["objective.gamma=0.9"]), reg)
    assert control.objective.gamma == 0.9 and control.optim.lr == 1e-3 and control.run.env_steps == 100_000


@pytest.mark.slow
def test_text_ppo_runs_with_value_head(tmp_path):
    """The LM path end to end: value head trained, KL to the reference logged, and the
    saved policy is a plain transformers model (no value head in it)."""
    proc = rlx("run", "--objective", "ppo", "--reward", "prm", "--steps", "3", "--set", "run.batch_size=8",
               "--set", "run.eval_every=0", "--set", "env.eval_size=16", "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    data = client.get_run(run["mlflow_run_id"]).data.metrics
    for k in ("kl/ref", "ppo/kl_coef", "loss/value", "ppo/explained_variance", "eval/accuracy", "reward/prm"):
        assert k in data, k
    kl = {m.step: m.value for m in client.get_metric_history(run["mlflow_run_id"], "kl/ref")}
    assert kl[1] == pytest.approx(0.0, abs=1e-5) and kl[3] > 0  # the policy moved away from the reference
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "runs" / run["id"] / "policy" / "model.safetensors"))
    assert weights and not any("value_head" in k for k in weights)


STOP_AT_ENV_STEPS = textwrap.dedent('''
    from rlx.hookspecs import hookimpl

    @hookimpl
    def rlx_step_end(step, metrics):
        return metrics.get("env/steps", 0) >= 40000
''')


@pytest.mark.slow
def test_cartpole_learns(tmp_path):
    """The documented configuration (the defaults: Zoo's PPO set, its 100k-step schedule),
    stopped at 40k environment steps by a hook, on two seeds at once (one thread each).

    What the README states for it: seeds 0-4 reach >= 475 by 32k steps. Measured on
    2026-12-01 at 40k: 500, 500, 500, 483.5, 500. An earlier form of this test cut the
    schedule itself to 40k steps; there one seed's end moved with the machine's rounding
    (seed 1: 302 here, 172 elsewhere), which is chaos, not a regression. A PPO that does
    not learn stays at its start (20-180)."""
    import json

    from _cli import make_plugin, start

    site = make_plugin(tmp_path / "site", "stopat", STOP_AT_ENV_STEPS)
    seeds = (0, 1)
    procs = [start("run", "--objective", "ppo", "--env", "gym", "--policy", "mlp", "--set", "env.id=CartPole-v1",
                   "--seed", str(s), "--set", "run.eval_every=0", "--no-progress", "--experiment", f"seed{s}",
                   home=tmp_path, paths=[site]) for s in seeds]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    for s in seeds:
        run = runs[f"seed{s}"]
        hist = metric_history(client, run["mlflow_run_id"], "eval/return")
        steps = metric_history(client, run["mlflow_run_id"], "env/steps")
        print(f"CartPole seed {s}: eval/return {hist[0].value:.1f} -> {hist[-1].value:.1f} "
              f"at {steps[-1].value:.0f} env steps")
        assert hist[0].step == 0 and 40000 <= steps[-1].value < 41000
        assert hist[-1].value >= 400, (s, hist)
    run = runs["seed0"]
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
    run, client = latest_run(tmp_path)
    hist = metric_history(client, run["mlflow_run_id"], "eval/return")
    first, last = hist[0].value, hist[-1].value
    print(f"Pendulum eval/return {first:.1f} -> {last:.1f}")
    assert last > first + 300, (first, last)


def _reference_ppo_loss(logp, value, old_logp, adv, ret, old_v, mask, eps, clip_value, vf_coef):
    """The written-out formula, differentiated by autograd."""
    from rlx.plugins.ppo.objective import masked_mean

    ratio = (logp - old_logp).exp()
    pg = masked_mean(torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps)), mask)
    v = (value - ret) ** 2
    if clip_value is not None:
        v = torch.max(v, (old_v + torch.clamp(value - old_v, -clip_value, clip_value) - ret) ** 2)
    return pg + vf_coef * 0.5 * masked_mean(v, mask)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("clip_value", [None, 0.3])
def test_fused_ppo_loss_matches_autograd(masked, clip_value):
    from rlx.plugins.ppo.surrogate import ppo_loss

    g = torch.Generator().manual_seed(0)
    n = 64
    old_logp = -torch.rand(n, generator=g, dtype=torch.float64)
    logp = old_logp + 0.4 * torch.randn(n, generator=g, dtype=torch.float64)
    logp[:8] = old_logp[:8]  # ratio exactly 1: inside the clip range, a tie of the two terms
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    adv[8:12] = 0.0
    old_v = torch.randn(n, generator=g, dtype=torch.float64)
    value = old_v + 0.6 * torch.randn(n, generator=g, dtype=torch.float64)
    value[12:16] = old_v[12:16]  # inside the value clip: another tie
    ret = torch.randn(n, generator=g, dtype=torch.float64)
    mask = (torch.rand(n, generator=g) > 0.3).double() if masked else None
    for fn in (ppo_loss, _reference_ppo_loss):
        lp, v = logp.clone().requires_grad_(), value.clone().requires_grad_()
        out = fn(lp, v, old_logp, adv, ret, old_v, mask, 0.2, clip_value, 0.5)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        if fn is ppo_loss:
            fused = (loss.detach(), lp.grad, v.grad)
        else:
            ref = (loss.detach(), lp.grad, v.grad)
    for a, b in zip(fused, ref):
        assert torch.allclose(a, b, atol=1e-12), (a, b)
    assert fused[1].abs().sum() > 0 and fused[2].abs().sum() > 0


@pytest.mark.slow
def test_cartpole_checkpoints_and_resumes(tmp_path):
    """A control run steps AdamW through core/small_steps.py (step counters as elements
    of one tensor); its checkpoints hold the whole model and ordinary per-parameter
    optimizer state, and a killed run resumes from them and finishes."""
    import torch
    from _cli import make_plugin
    from test_resume import KILLER

    site = make_plugin(tmp_path / "site", "killer", KILLER)
    args = ["run", "--objective", "ppo", "--env", "gym", "--policy", "mlp", "--seed", "0",
            "--set", "run.env_steps=1536", "--set", "run.checkpoint_every=3", "--set", "run.eval_every=0",
            "--no-progress"]
    crashed = rlx(*args, home=tmp_path, paths=[site], RLX_TEST_KILL_AT="4")
    assert crashed.returncode == -9, crashed.stderr
    run, client = latest_run(tmp_path)
    ckpt = next((tmp_path / "runs" / run["id"] / "checkpoints").glob("step_00000003"))
    state = torch.load(ckpt / "optimizer.bin", weights_only=False)["state"]
    assert len(state) == 12 and {float(s["step"]) for s in state.values()} == {3 * 20.0}  # 3 updates x 20 epochs
    assert all(s["exp_avg"].abs().sum() > 0 for s in state.values())
    from safetensors.torch import load_file

    assert len(load_file(str(ckpt / "model.safetensors"))) == 12  # every parameter, not one per storage
    resumed = rlx("runs", "resume", run["id"][:8], "--no-progress", home=tmp_path, paths=[site])
    assert resumed.returncode == 0 and "FINISHED" in resumed.stdout, resumed.stderr
    steps = [m.step for m in metric_history(client, run["mlflow_run_id"], "env/steps")]
    assert steps == list(range(1, 7))
