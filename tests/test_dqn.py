"""DQN: TD targets, the epsilon schedule, target updates and the replay buffer against
hand-computed values; objective defaults for the policy section; a short real CartPole
run that learns, and the one-line refusal of a continuous action space."""

from __future__ import annotations

import pytest
import torch
from _cli import latest_run, metric_history, rlx
from torch import nn

from rlx.batch import Batch
from rlx.config import compose, resolve
from rlx.errors import UsageError
from rlx.plugins.dqn.config import DQNConfig
from rlx.plugins.dqn.objective import DQN, ReplayBuffer, linear_epsilon, td_target, update_target, usable_cores
from rlx.registry import get_registry


class LinearQ:
    """A policy whose Q-values are ``obs @ W.T``: easy to compute by hand."""

    discrete = True

    def __init__(self, weight):
        self.model = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.model.weight.copy_(torch.tensor(weight, dtype=torch.float32))

    def q_values(self, obs):
        return self.model(obs)


SWAP2 = [[0.0, 2.0], [2.0, 0.0]]


def transitions():
    # row 0 ends its episode (terminated); row 1 is a time-limit truncation whose next_obs
    # is the real last observation, so it must still be bootstrapped
    return Batch({"obs": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "actions": torch.tensor([0, 1]),
                  "rewards": torch.tensor([1.0, 1.0]), "next_obs": torch.tensor([[3.0, 4.0], [5.0, 6.0]]),
                  "terminated": torch.tensor([1.0, 0.0])})


def dqn_with(online, target, **cfg):
    dqn = DQN(DQNConfig(gamma=0.5, **cfg))
    dqn.online, dqn.target = online, target
    return dqn


def test_td_target_terminated_vs_truncated():
    # next Q_target rows: [6, 8] and [12, 10] (target net = 2 x swap)
    next_q = torch.tensor([[8.0, 6.0], [12.0, 10.0]])
    t = td_target(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]), next_q, gamma=0.5)
    assert t.tolist() == pytest.approx([1.0, 1.0 + 0.5 * 12.0])


def test_loss_by_hand_mse_and_huber():
    online, target = LinearQ([[1.0, 0.0], [0.0, 1.0]]), LinearQ(SWAP2)
    # Q(s, a) = [1, 1]; targets: terminated -> r = 1; truncated -> 1 + 0.5 * max(12, 10) = 7
    loss, m = dqn_with(online, target, loss="mse", double_q=False).loss(online, transitions())
    assert float(loss.detach()) == pytest.approx((0.0 + 6.0 ** 2) / 2)
    assert m["q/mean"] == pytest.approx(1.0) and m["q/target"] == pytest.approx(4.0)
    loss, m = dqn_with(online, target, loss="huber", double_q=False).loss(online, transitions())
    assert float(loss.detach()) == pytest.approx((0.0 + (6.0 - 0.5)) / 2) == m["loss/td"]
    loss.backward()
    assert online.model.weight.grad is not None and target.model.weight.grad is None


def test_double_dqn_online_picks_target_values():
    online, target = LinearQ([[1.0, 0.0], [0.0, 1.0]]), LinearQ(SWAP2)
    # next_obs [5, 6]: the online net prefers action 1 (6 > 5); the target values it at 10,
    # although its own favourite (action 0) is worth 12
    _, m = dqn_with(online, target, loss="mse", double_q=True).loss(online, transitions())
    assert m["q/target"] == pytest.approx((1.0 + (1.0 + 0.5 * 10.0)) / 2)
    t = td_target(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([[12.0, 10.0]]), 1.0,
                  next_q_online=torch.tensor([[5.0, 6.0]]))
    assert t.item() == pytest.approx(10.0)


def test_epsilon_schedule():
    assert linear_epsilon(1.0, 0.04, 0.16, 0.0) == pytest.approx(1.0)
    assert linear_epsilon(1.0, 0.04, 0.16, 0.08) == pytest.approx(0.52)
    assert linear_epsilon(1.0, 0.04, 0.16, 0.16) == pytest.approx(0.04)
    assert linear_epsilon(1.0, 0.04, 0.16, 0.9) == pytest.approx(0.04)
    assert linear_epsilon(0.5, 0.1, 0.0, 0.0) == pytest.approx(0.1)
    # measured in env steps of the whole run: 10 loop steps x train_freq 4 x 2 envs = 80
    dqn = DQN(DQNConfig(start_e=1.0, end_e=0.0, exploration_fraction=0.5, train_freq=4))
    dqn.begin_step(1, 10)
    assert [dqn.epsilon_at(s, 2) for s in (0, 20, 40, 80)] == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_act_is_epsilon_greedy():
    torch.manual_seed(0)
    policy = LinearQ([[1.0, 0.0], [0.0, 1.0]])
    obs = torch.rand(2000, 2)
    greedy = obs.argmax(-1)
    dqn = DQN(DQNConfig(start_e=0.0, end_e=0.0))
    a, logp, v = dqn.act(policy, obs)
    assert torch.equal(a, greedy) and not logp.any() and not v.any()
    assert dqn.env_steps == 2000
    dqn = DQN(DQNConfig(start_e=1.0, end_e=1.0))
    a, _, _ = dqn.act(policy, obs)
    assert 0.4 < (a != greedy).float().mean() < 0.6  # uniform over two actions: half differ


def test_act_one_copy_at_a_time_reproducible_across_pool_refills():
    """Acting for one env copy per call (what the pool of draws is for): epsilon 0.5
    explores half the steps, half of those land on the greedy action anyway; the same seed
    gives the same actions across refills of the pool, and a call wanting more draws than
    the pool holds gets them."""
    from rlx.plugins.dqn.objective import UNIFORM_POOL

    policy = LinearQ([[1.0, 0.0], [0.0, 1.0]])
    one = torch.tensor([[1.0, 0.0]])  # greedy action: 0
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        dqn = DQN(DQNConfig(start_e=0.5, end_e=0.5))
        runs.append(torch.cat([dqn.act(policy, one)[0] for _ in range(3 * UNIFORM_POOL // 2 + 7)]))
    assert torch.equal(runs[0], runs[1])
    assert 0.22 < runs[0].float().mean() < 0.28
    many = torch.tensor([[1.0, 0.0]]).repeat(UNIFORM_POOL, 1)  # 2 draws each: twice the pool
    assert 0.22 < dqn.act(policy, many)[0].float().mean() < 0.28


def test_act_refuses_continuous_actions():
    policy = LinearQ([[1.0, 0.0], [0.0, 1.0]])
    policy.discrete = False
    with pytest.raises(UsageError, match="discrete action space.*--objective ppo"):
        DQN(DQNConfig()).act(policy, torch.zeros(1, 2))


def test_update_target_hard_and_polyak():
    online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    t0 = [p.detach().clone() for p in target.parameters()]
    update_target(target, online, 0.25)
    for t, o, old in zip(target.parameters(), online.parameters(), t0):
        assert torch.allclose(t, 0.75 * old + 0.25 * o)
    update_target(target, online, 1.0)
    for t, o in zip(target.parameters(), online.parameters()):
        assert torch.equal(t, o)


def test_target_updated_every_interval_gradient_steps():
    online, target = LinearQ([[1.0, 0.0], [0.0, 1.0]]), LinearQ(SWAP2)
    dqn = dqn_with(online, target, gradient_steps=5, target_update_interval=2, learning_starts=1)
    dqn.buffer.add(**transitions().tensors)
    seen = []
    for i, _ in enumerate(dqn.minibatches(Batch())):
        with torch.no_grad():  # stands in for the loop's optimizer step
            online.model.weight.fill_(float(i + 1))
        seen.append(target.model.weight[0, 0].item())
    # the target takes the online weights after steps 2 and 4 only: what it holds while
    # batch i is trained on
    assert seen == [0.0, 0.0, 2.0, 2.0, 4.0] and dqn.grad_steps == 5
    assert target.model.weight[0, 0].item() == 4.0


def test_learning_starts_and_prepare_time_major():
    dqn = DQN(DQNConfig(learning_starts=6, gradient_steps=3, minibatch_size=4))
    online, target = LinearQ([[1.0, 0.0], [0.0, 1.0]]), LinearQ(SWAP2)
    N, T = 2, 2
    step = torch.arange(N * T, dtype=torch.float32).view(N, T)  # env n, step t -> 2n + t
    batch = Batch({"obs": step[..., None].expand(N, T, 2), "next_obs": step[..., None].expand(N, T, 2),
                   "actions": torch.zeros(N, T, dtype=torch.long), "rewards": step, "terminated": torch.zeros(N, T)})
    m = dqn.prepare(batch, online, target)
    assert m["buffer/size"] == 4 and list(dqn.minibatches(batch)) == []  # 4 < learning_starts
    # time-major: all envs' step 0, then step 1 (the ring drops the oldest steps first)
    assert dqn.buffer.data["rewards"][:4].tolist() == [0.0, 2.0, 1.0, 3.0]
    dqn.prepare(batch, online, target)
    mbs = list(dqn.minibatches(batch))
    assert len(mbs) == 3 and all(len(mb) == 4 for mb in mbs)
    assert dqn.target is target and dqn.state_dict() == {"env_steps": 0, "grad_steps": 3}


def test_learning_starts_above_buffer_is_refused():
    with pytest.raises(UsageError, match="learning_starts .* exceeds objective.buffer_size"):
        DQN(DQNConfig(learning_starts=10, buffer_size=5))


def test_replay_buffer_wraparound_and_sampling():
    buf = ReplayBuffer(5)
    buf.add(x=torch.tensor([0.0, 1.0, 2.0]))
    torch.manual_seed(0)
    assert set(buf.sample(200)["x"].tolist()) == {0.0, 1.0, 2.0}  # never the empty slots
    buf.add(x=torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert len(buf) == 5 and buf.pos == 2
    assert buf.data["x"].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]  # 0 and 1 overwritten
    assert set(buf.sample(500)["x"].tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}
    buf.add(x=torch.arange(10, 17, dtype=torch.float32))  # more than fits: the newest 5
    assert sorted(buf.data["x"].tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0] and len(buf) == 5
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3).sample(1)


def test_objective_defaults_for_the_policy_section():
    reg = get_registry()
    cfg = resolve(compose(None, {"objective": "dqn", "env": "gym", "policy": "mlp"}), reg)
    assert cfg.policy.hidden_sizes == [256, 256] and cfg.policy.activation == "relu"
    assert cfg.optim.lr == pytest.approx(2.3e-3) and cfg.run.eval_every == 10
    cfg = resolve(compose(None, {"objective": "dqn", "env": "gym", "policy": "mlp"},
                          ["policy.activation=tanh"]), reg)
    assert cfg.policy.activation == "tanh" and cfg.policy.hidden_sizes == [256, 256]  # the user's value wins
    assert resolve(cfg.to_dict(), reg).to_dict() == cfg.to_dict()
    cfg = resolve(compose(None, {"objective": "ppo", "env": "gym", "policy": "mlp"}), reg)
    assert cfg.policy.hidden_sizes == [64, 64]  # another objective's run is untouched
    # an LM policy on a control environment is refused before anything is built
    from rlx.errors import UsageError

    with pytest.raises(UsageError, match="need a 'control' policy such as --policy mlp"):
        resolve(compose(None, {"objective": "dqn", "env": "gym", "policy": "tiny"}), reg)
    # and without --policy the kind's default is picked
    assert resolve(compose(None, {"objective": "dqn", "env": "gym"}), reg).names["policy"] == "mlp"


def test_continuous_env_is_refused_in_one_line(tmp_path):
    proc = rlx("run", "--objective", "dqn", "--env", "gym", "--policy", "mlp", "--set", "env.id=Pendulum-v1",
               "--set", "env.eval_episodes=1", "--no-progress", home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "discrete action space" in lines[0], proc.stderr


@pytest.mark.slow
def test_cartpole_learns(tmp_path):
    proc = rlx("run", "--objective", "dqn", "--env", "gym", "--policy", "mlp", "--set", "env.id=CartPole-v1",
               "--seed", "0", "--set", "run.env_steps=20480", "--set", "run.eval_every=10", "--no-progress",
               home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    hist = metric_history(client, run["mlflow_run_id"], "eval/return")
    print("CartPole eval/return", [round(m.value) for m in hist])
    # random play lasts ~20 steps; DQN's evaluations swing from one to the next (and with the
    # float rounding of any change to the arithmetic), so the best one and the mean of all
    # after the first are checked: 7x and 5x random play
    later = [m.value for m in hist[1:]]
    assert hist[0].step == 0 and hist[0].value < 50 and max(later) >= 150 and sum(later) / len(later) >= 100, hist
    data = client.get_run(run["mlflow_run_id"]).data.metrics
    for k in ("loss/td", "q/mean", "q/target", "explore/epsilon", "buffer/size", "dqn/grad_steps", "episode/return"):
        assert k in data, k
    assert data["explore/epsilon"] == pytest.approx(0.04) and data["buffer/size"] == 20480


@pytest.mark.parametrize("huber", [True, False])
def test_td_loss_node_matches_the_plain_formula(huber):
    """The one-node TD loss against gather + smooth_l1/mse through autograd: same loss, same
    Q(s, a), same gradient, at differences inside, outside and exactly on Huber's bend."""
    from rlx.plugins.dqn.td_loss import td_loss, td_loss_plain

    g = torch.Generator().manual_seed(0)
    q_all = torch.randn(9, 3, generator=g, dtype=torch.float64) * 2
    actions = torch.randint(3, (9,), generator=g)
    target = torch.randn(9, generator=g, dtype=torch.float64) * 2
    target[:2] = q_all[[0, 1], actions[:2]] + torch.tensor([1.0, -1.0], dtype=torch.float64)  # on the bend
    results = []
    for fn in (td_loss, td_loss_plain):
        leaf = q_all.clone().requires_grad_()
        loss, q = fn(leaf, actions, target, huber)
        (3.0 * loss).backward()
        results.append((loss.detach(), q.detach(), leaf.grad))
    for fast, plain in zip(*results):
        assert torch.allclose(fast, plain, rtol=1e-12, atol=1e-12)
    assert results[0][2].count_nonzero() == 9  # one entry per row: the taken action's
    leaf = q_all.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: td_loss(x, actions, target + 0.3, huber)[0], (leaf,))


class MLPQ:
    discrete = True

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

    def q_values(self, obs):
        return self.model(obs)


TWO_CORES = usable_cores() >= 2


@pytest.fixture
def one_torch_thread():
    """torch on one thread, so a core is free for the target passes' worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def replay_data(n: int = 300) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"obs": torch.randn(n, 4, generator=g), "actions": torch.randint(3, (n,), generator=g),
            "rewards": torch.randn(n, generator=g), "next_obs": torch.randn(n, 4, generator=g),
            "terminated": (torch.rand(n, generator=g) < 0.1).float()}


@pytest.mark.parametrize("double_q, tau, overlap", [(False, 1.0, False), (True, 1.0, False), (False, 0.5, False),
                                                    (False, 1.0, True), (True, 0.5, True)])
def test_batched_targets_train_as_one_pass_per_step(double_q, tau, overlap, one_torch_thread, monkeypatch):
    """``batched_targets`` (one draw per block of steps up to the next target update, the
    target network over it a few minibatches per pass, on a worker thread with
    ``overlap_targets``) against one draw and one pass per step: the same batches, targets,
    losses and final weights, over updates whose blocks end mid-update."""
    from rlx.plugins.dqn import objective

    monkeypatch.setattr(objective, "TARGET_PASS_ROWS", 32)  # two minibatches per pass
    if overlap and not TWO_CORES:
        pytest.skip("the worker needs a second core")
    data = replay_data()
    results = []
    for batched in (True, False):
        online, target = MLPQ(0), MLPQ(0)
        dqn = dqn_with(online, target, batched_targets=batched, double_q=double_q, tau=tau, gradient_steps=7,
                       target_update_interval=3, minibatch_size=16, learning_starts=1, overlap_targets=overlap)
        dqn.buffer.add(**data)
        opt = torch.optim.Adam(online.model.parameters(), lr=1e-2)
        torch.manual_seed(5)
        losses, targets = [], []
        for _update in range(3):
            for mb in dqn.minibatches(Batch()):
                loss, m = dqn.loss(online, mb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                targets.append(m["q/target"].item())
        assert ("next_q_target" in mb) == batched and ("td_target" in mb) == (batched and not double_q)
        assert (dqn._worker is not None) == (batched and overlap)
        results.append((losses, targets, [p.detach().clone() for p in online.model.parameters()], dqn.grad_steps))
    (lb, tb, wb, sb), (lp, tp, wp, sp) = results
    assert sb == sp == 21
    assert lb == pytest.approx(lp, rel=1e-5, abs=1e-6) and tb == pytest.approx(tp, rel=1e-5, abs=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(wb, wp))


def test_batched_targets_draw_in_blocks_that_fit():
    """Large transitions are drawn in blocks of at most BLOCK_BYTES, still ending at target updates."""
    from rlx.plugins.dqn import objective

    dqn = dqn_with(LinearQ(SWAP2), LinearQ(SWAP2), gradient_steps=10, target_update_interval=4, minibatch_size=2,
                   learning_starts=1)
    dqn.buffer.add(**transitions().tensors)
    per_row = sum(v[0].numel() * v.element_size() for v in dqn.buffer.data.values())
    sizes = []
    real = dqn.buffer.sample
    dqn.buffer.sample = lambda k: sizes.append(k) or real(k)
    assert len(list(dqn.minibatches(Batch()))) == 10 and sizes == [8, 8, 4]  # 4 + 4 + 2 steps
    sizes.clear()
    dqn.grad_steps = 0
    old = objective.BLOCK_BYTES
    try:
        objective.BLOCK_BYTES = per_row * 2 * 3  # three steps' draws
        assert len(list(dqn.minibatches(Batch()))) == 10 and sizes == [6, 2, 6, 2, 4]
    finally:
        objective.BLOCK_BYTES = old


@pytest.mark.parametrize("huber, double_q, drawn", [(True, False, True), (False, False, True), (True, True, True),
                                                     (True, False, False)])
def test_gradients_by_hand_match_autograd(huber, double_q, drawn):
    """``DQN.gradients`` through the mlp policy's hand-written backward against ``loss``
    through autograd: the same loss, metrics and gradient of every parameter (none for the
    critic, which dqn does not train), with TD errors on both sides of Huber's bend; and
    no such path (None) where the policy's modules are not the chain."""
    from rlx.loop import build

    cfg = resolve(compose(None, {"objective": "dqn", "env": "gym", "policy": "mlp", "seed": 0},
                          ["env.id=CartPole-v1", "env.num_envs=1", "policy.hidden_sizes=[32, 16]",
                           f"objective.loss={'huber' if huber else 'mse'}", f"objective.double_q={double_q}",
                           "objective.minibatch_size=24", "objective.learning_starts=1",
                           "objective.gradient_steps=2"]), get_registry())
    parts = build(cfg, get_registry())
    dqn, policy = parts.objective, parts.policy
    dqn.online, dqn.target = policy, parts.reference
    g = torch.Generator().manual_seed(3)
    n = 200
    dqn.buffer.add(obs=torch.randn(n, 4, generator=g), actions=torch.randint(2, (n,), generator=g),
                   rewards=3 * torch.randn(n, generator=g), next_obs=torch.randn(n, 4, generator=g),
                   terminated=(torch.rand(n, generator=g) < 0.2).float())
    mb = next(iter(dqn.minibatches(Batch()))) if drawn else dqn.buffer.sample(24)
    assert ("td_target" in mb) == (drawn and not double_q)
    params = list(policy.model.parameters())
    results = []
    for by_hand in (True, False):
        for p in params:
            p.grad = None
        if by_hand:
            loss, m = dqn.gradients(policy, mb)
            assert not loss.requires_grad
        else:
            loss, m = dqn.loss(policy, mb)
            loss.backward()
        results.append((loss.item(), {k: float(v) for k, v in m.items()}, [p.grad for p in params]))
    (lh, mh, gh), (la, ma, ga) = results
    assert lh == pytest.approx(la, rel=1e-6) and mh == pytest.approx(ma, rel=1e-6)
    trained = [i for i, grad in enumerate(ga) if grad is not None]
    assert [i for i, grad in enumerate(gh) if grad is not None] == trained and len(trained) == 6  # 3 layers
    assert all(torch.allclose(gh[i], ga[i], rtol=1e-5, atol=1e-7) for i in trained)
    errors = (policy.q_values(mb["obs"]).gather(1, mb["actions"].long()[:, None]).squeeze(1)
              - dqn._td_target(policy, mb)).abs()
    assert ((errors < 1).any() and (errors > 1).any()) or not huber
    policy.model.use_fast_path = False
    assert dqn.gradients(policy, mb) is None


def test_target_passes_are_done_when_the_loop_stops_early(one_torch_thread, monkeypatch):
    """A loop that stops mid-block (a non-finite loss) closes ``minibatches``: every target
    pass the worker started has ended by then, and none starts after, so the next target
    update cannot change the network under a pass."""
    import time

    from rlx.plugins.dqn import objective

    if not TWO_CORES:
        pytest.skip("the worker needs a second core")
    monkeypatch.setattr(objective, "TARGET_PASS_ROWS", 16)  # one minibatch per pass
    dqn = dqn_with(MLPQ(0), MLPQ(0), gradient_steps=12, target_update_interval=12, minibatch_size=16,
                   learning_starts=1, double_q=False)
    dqn.buffer.add(**replay_data())
    spans = []
    real = dqn._with_targets

    def slow(rows):
        start = time.perf_counter()
        time.sleep(0.02)
        real(rows)
        spans.append((start, time.perf_counter()))

    dqn._with_targets = slow
    steps = dqn.minibatches(Batch())
    assert "td_target" in next(steps) and dqn._worker is not None
    steps.close()
    closed = time.perf_counter()
    time.sleep(0.1)
    assert 1 <= len(spans) < 12 and all(end <= closed for _, end in spans)


@pytest.mark.parametrize("flush", [True, False])
def test_target_worker_flushes_denormals_as_the_thread_that_starts_it(flush, one_torch_thread):
    """x86 flushes denormals per thread: the target passes' worker copies the run's setting."""
    from rlx.precision import flushing_denormals

    if not TWO_CORES:
        pytest.skip("the worker needs a second core")
    dqn = dqn_with(MLPQ(0), MLPQ(0), learning_starts=1)
    dqn.buffer.add(**replay_data())
    if not torch.set_flush_denormal(flush):
        pytest.skip("this CPU cannot flush denormals")
    try:
        worker = dqn._target_worker()
        assert worker is not None and worker.submit(flushing_denormals).result() == flush
    finally:
        torch.set_flush_denormal(False)
